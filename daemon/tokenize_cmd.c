/*
 * tokenize_cmd.c: `lorad tokenize` (tokenize_cmd.h).
 */
#include "tokenize_cmd.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "error.h"
#include "fileio.h"
#include "tokenizer.h"

/* One input's ids on a line: bare, or as JSON with their tokens and decoded text. */
static int ids_print(const struct tokenizer *t, const struct tok_ids *ids, int as_json, struct tok_buf *text) {
    if (!as_json) {
        for (size_t i = 0; i < ids->n; i++) printf("%s%d", i ? " " : "", ids->v[i]);
        putchar('\n');
        return 0;
    }
    if (tokenizer_decode(t, ids->v, ids->n, 0, text)) return -1;
    json_t *o = json_object(), *a = json_array(), *s = json_array();
    for (size_t i = 0; i < ids->n; i++) {
        json_array_append_new(a, json_integer(ids->v[i]));
        json_array_append_new(s, json_string(tokenizer_token(t, ids->v[i])));
    }
    json_object_set_new(o, "ids", a);
    json_object_set_new(o, "tokens", s);
    json_object_set_new(o, "decoded", json_stringn(text->p, text->n));
    char *line = json_dumps(o, JSON_COMPACT);
    puts(line);
    free(line);
    json_decref(o);
    return 0;
}

static int input_encode(struct tok_encoder *e, const char *s, size_t n, const Lorad__TokenizeSpec *spec,
                        struct tok_ids *ids, struct tok_buf *text) {
    ids->n = 0;
    if (tok_encode(e, s, n, spec->add_special, ids)) return -1;
    return ids_print(e->t, ids, spec->json, text);
}

/* --jsonl FILE: one JSON string a line. */
static int jsonl_encode(struct tok_encoder *e, const char *path, const char *data, size_t n,
                        const Lorad__TokenizeSpec *spec, struct tok_ids *ids, struct tok_buf *text) {
    int line = 0;
    for (const char *p = data, *end; p < data + n; p = end + 1) {
        line++;
        end = memchr(p, '\n', (size_t)(data + n - p));
        if (!end) end = data + n;
        json_error_t jerr;
        json_t *v = json_loadb(p, (size_t)(end - p), JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        int rc = json_is_string(v) ? input_encode(e, json_string_value(v), json_string_length(v), spec, ids, text)
                                   : err_set(path, "line %d: not a JSON string%s%s", line, v ? "" : ": ", v ? "" : jerr.text);
        json_decref(v);
        if (rc) return -1;
    }
    return 0;
}

int tokenize_cmd(const struct command_call *call) {
    const Lorad__TokenizeSpec *spec = (const Lorad__TokenizeSpec *)call->spec[0];
    const char *dirs[] = {spec->model, spec->tokenizer}, *dir_flags[] = {"--model", "--tokenizer"};
    const char *inputs[] = {spec->text, spec->file, spec->jsonl}, *input_flags[] = {"--text", "--file", "--jsonl"};
    int d = cli_one_of(dirs, dir_flags, 2), in = d < 0 ? -1 : cli_one_of(inputs, input_flags, 3);
    if (in < 0) return -1;
    struct tokenizer t;
    if (tokenizer_open(&t, dirs[d])) return -1;
    struct tok_encoder e;
    tok_encoder_init(&e, &t);
    struct tok_ids ids = {0};
    struct tok_buf text = {0};
    size_t n = 0;
    char *data = in == 0 ? NULL : file_read_all(inputs[in], &n);
    int rc = in == 0 ? input_encode(&e, spec->text, strlen(spec->text), spec, &ids, &text)
             : !data ? -1
             : in == 1 ? input_encode(&e, data, n, spec, &ids, &text)
                       : jsonl_encode(&e, inputs[in], data, n, spec, &ids, &text);
    free(data);
    tok_ids_free(&ids);
    tok_buf_free(&text);
    tok_encoder_free(&e);
    tokenizer_free(&t);
    return rc;
}
