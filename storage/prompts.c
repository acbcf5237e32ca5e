/*
 * prompts.c: the lines of a --prompts file (prompts.h).
 */
#include "prompts.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "error.h"
#include "fileio.h"

/* KEY of O as a NUL-free string into *OUT (malloc'd); a missing or null key leaves
 * *OUT NULL when OPTIONAL. */
static int line_string(const json_t *o, const char *key, int optional, const struct dataset_where *w, char **out) {
    char where[DATASET_WHERE_MAX];
    const json_t *v = json_object_get(o, key);
    *out = NULL;
    if ((!v || json_is_null(v)) && optional) return 0;
    if (!v) return err_set(dataset_where_text(w, where), "has no \"%s\"", key);
    if (!json_is_string(v))
        return err_set(dataset_where_text(w, where), "\"%s\" must be a string%s", key, optional ? " or null" : "");
    size_t n = json_string_length(v);
    if (memchr(json_string_value(v), '\0', n)) return err_set(dataset_where_text(w, where), "\"%s\" holds a NUL", key);
    *out = xstrdup(json_string_value(v));
    return 0;
}

int prompts_parse(struct prompts *p, const char *text, size_t n, const char *path) {
    memset(p, 0, sizeof *p);
    struct dataset_units lines = {0};
    dataset_cut(text, n, DATASET_CUT_LINES, &lines);
    p->v = xcalloc(lines.n + 1, sizeof *p->v);
    int rc = 0;
    for (size_t i = 0; i < lines.n && rc == 0; i++) {
        const struct dataset_where w = {path, lines.v[i].line};
        json_t *o = dataset_line_object(lines.v[i].p, lines.v[i].n, &w);
        struct prompt_line *l = &p->v[p->n];
        l->line = w.line;
        rc = o ? line_string(o, "prompt", 0, &w, &l->prompt) : -1;
        if (rc == 0) rc = line_string(o, "adapter", 1, &w, &l->adapter);
        if (rc == 0) p->n++;
        else free(l->prompt), free(l->adapter);
        json_decref(o);
    }
    dataset_units_free(&lines);
    if (rc == 0 && p->n == 0) rc = err_set(path, "holds no prompt"), err_hint("one JSON object a line: {\"prompt\": ...}");
    if (rc) prompts_free(p);
    return rc;
}

int prompts_read(struct prompts *p, const char *path) {
    size_t n;
    char *text = file_read_all(path, &n);
    memset(p, 0, sizeof *p);
    if (!text) return -1;
    int rc = prompts_parse(p, text, n, path);
    free(text);
    return rc;
}

void prompts_free(struct prompts *p) {
    for (int32_t i = 0; i < p->n; i++) free(p->v[i].prompt), free(p->v[i].adapter);
    free(p->v);
    memset(p, 0, sizeof *p);
}
