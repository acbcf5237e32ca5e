/*
 * jsonio.c: JSON object files read whole and written atomically, and typed field
 * lookups, for hf_config.c and peft.c.
 */
#include "jsonio.h"

#include "error.h"
#include "fileio.h"

#include <stdlib.h>
#include <string.h>

json_t *jsonio_read(const char *path) { return jsonio_read_flags(path, 0); }

json_t *jsonio_read_flags(const char *path, size_t flags) {
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) return NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | flags, &jerr);
    free(text);
    if (!root) {
        err_set(path, "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    } else if (!json_is_object(root)) {
        err_set(path, "expected a JSON object");
        json_decref(root);
        root = NULL;
    }
    return root;
}

/* ROOT as indented text with real precision DIGITS. */
static char *jsonio_dump(const json_t *root, int digits) {
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(digits));
    CHECK(text);
    return text;
}

char *jsonio_text(const json_t *root) {
    char *text = jsonio_dump(root, 15);
    json_t *back = json_loads(text, 0, NULL);
    int exact = json_equal(root, back);
    json_decref(back);
    if (!exact) {
        free(text);
        text = jsonio_dump(root, 17);
    }
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n] = '\n';
    text[n + 1] = '\0';
    return text;
}

int jsonio_write(const char *path, const json_t *root) {
    char *text = jsonio_text(root);
    int rc = file_write_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

/* KEY's value in OBJ, or NULL when it is absent or null. */
static const json_t *jsonio_field(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static int jsonio_type_error(const char *file, const char *key, const char *what) {
    return err_set(file, "\"%s\" must be %s", key, what);
}

int jsonio_get_i32(const json_t *obj, const char *key, const char *file, int32_t *out) {
    const json_t *v = jsonio_field(obj, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
        return jsonio_type_error(file, key, "a 32-bit integer");
    *out = (int32_t)json_integer_value(v);
    return 1;
}

int jsonio_get_number(const json_t *obj, const char *key, const char *file, double *out) {
    const json_t *v = jsonio_field(obj, key);
    if (!v) return 0;
    if (!json_is_number(v)) return jsonio_type_error(file, key, "a number");
    *out = json_number_value(v);
    return 1;
}

int jsonio_get_bool(const json_t *obj, const char *key, const char *file, int32_t *out) {
    const json_t *v = jsonio_field(obj, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return jsonio_type_error(file, key, "true or false");
    *out = json_is_true(v);
    return 1;
}

int jsonio_get_string(const json_t *obj, const char *key, const char *file, const char **out) {
    const json_t *v = jsonio_field(obj, key);
    if (!v) return 0;
    if (!json_is_string(v)) return jsonio_type_error(file, key, "a string");
    *out = json_string_value(v);
    return 1;
}
