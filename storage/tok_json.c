/*
 * tok_json.c: walking a component of tokenizer.json (tok_json.h).
 */
#include "tok_json.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jsonio.h"

#define SEQUENCE_DEPTH 8 /* Sequences nested deeper are refused */

static int part_walk(const json_t *j, const char *file, const char *what, const char *list, const char *supported,
                     tok_part_fn *part, void *ctx, int depth) {
    const char *type = NULL;
    if (!json_is_object(j) || jsonio_get_string(j, "type", file, &type) <= 0)
        return err_set(file, "%s: not an object with a \"type\"", what);
    if (!strcmp(type, "Sequence")) {
        const json_t *parts = json_object_get(j, list), *item;
        size_t i;
        if (!json_is_array(parts)) return err_set(file, "%s: a Sequence without \"%s\"", what, list);
        if (depth >= SEQUENCE_DEPTH) return err_set(file, "%s: Sequences nested deeper than %d", what, SEQUENCE_DEPTH);
        json_array_foreach(parts, i, item) if (part_walk(item, file, what, list, supported, part, ctx, depth + 1)) return -1;
        return 0;
    }
    int rc = part(ctx, type, j, file);
    if (rc <= 0) return rc;
    err_set(file, "%s: type '%s' is not supported", what, type);
    return err_hint("lorad reads %s and Sequence", supported);
}

int tok_component_parse(const json_t *j, const char *file, const char *what, const char *list, const char *supported,
                        tok_part_fn *part, void *ctx) {
    if (!j || json_is_null(j)) return 0;
    return part_walk(j, file, what, list, supported, part, ctx, 0);
}

void *tok_steps_grow(void *p, int *n, size_t size) {
    p = xrealloc(p, (size_t)(*n + 1) * size);
    memset((char *)p + (size_t)*n * size, 0, size);
    (*n)++;
    return p;
}
