/*
 * tok_post.c: the post-processors (tok_post.h).
 */
#include "tok_post.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jsonio.h"
#include "tok_json.h"

/* The ids of special token NAME of a TemplateProcessing, appended to OUT. */
static int special_ids(const json_t *specials, const char *name, const char *file, struct tok_ids *out) {
    const json_t *ids = json_object_get(json_object_get(specials, name), "ids"), *id;
    size_t i;
    if (!json_is_array(ids)) return err_set(file, "post_processor: special token '%s' has no \"ids\"", name);
    json_array_foreach(ids, i, id) {
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24))
            return err_set(file, "post_processor: special token '%s' has an id out of range", name);
        tok_ids_push(out, (int32_t)json_integer_value(id));
    }
    return 0;
}

/* A TemplateProcessing: its "single" template's special tokens, before and after "A". */
static int template_parse(struct tok_post *p, const json_t *j, const char *file) {
    const json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens"), *item;
    if (!json_is_array(single)) return err_set(file, "post_processor: TemplateProcessing without a \"single\" list");
    struct tok_ids before = {0}, after = {0};
    int seen = 0, rc = 0;
    size_t i;
    json_array_foreach(single, i, item) {
        const json_t *sp = json_object_get(item, "SpecialToken");
        const char *name = json_string_value(json_object_get(sp, "id"));
        if (json_object_get(item, "Sequence")) seen++;
        else if (name) rc = special_ids(specials, name, file, seen ? &after : &before);
        else rc = err_set(file, "post_processor: single[%zu] is neither a Sequence nor a SpecialToken", i);
        if (rc) break;
    }
    if (rc == 0 && seen != 1) rc = err_set(file, "post_processor: the single template must hold one Sequence");
    /* a template inside a Sequence wraps what the earlier ones added */
    for (size_t k = 0; rc == 0 && k < p->before.n; k++) tok_ids_push(&before, p->before.v[k]);
    for (size_t k = 0; rc == 0 && k < after.n; k++) tok_ids_push(&p->after, after.v[k]);
    if (rc == 0) {
        tok_ids_free(&p->before);
        p->before = before;
    } else {
        tok_ids_free(&before);
    }
    tok_ids_free(&after);
    return rc;
}

static int part_parse(void *ctx, const char *type, const json_t *j, const char *file) {
    if (!strcmp(type, "ByteLevel")) return 0;
    if (!strcmp(type, "TemplateProcessing")) return template_parse(ctx, j, file);
    return 1;
}

int tok_post_parse(struct tok_post *p, const json_t *j, const char *file) {
    memset(p, 0, sizeof *p);
    return tok_component_parse(j, file, "post_processor", "processors", "TemplateProcessing, ByteLevel", part_parse, p);
}

void tok_post_free(struct tok_post *p) {
    tok_ids_free(&p->before);
    tok_ids_free(&p->after);
}

void tok_post_apply(const struct tok_post *p, struct tok_ids *ids, size_t from) {
    size_t text = ids->n - from;
    if (p->before.n) {
        for (size_t k = 0; k < p->before.n; k++) tok_ids_push(ids, 0); /* room in front */
        memmove(ids->v + from + p->before.n, ids->v + from, text * sizeof *ids->v);
        memcpy(ids->v + from, p->before.v, p->before.n * sizeof *ids->v);
    }
    for (size_t k = 0; k < p->after.n; k++) tok_ids_push(ids, p->after.v[k]);
}
