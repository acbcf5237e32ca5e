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

/* How one input's ids are printed: on a line, as a JSON array (--jsonl), or as a JSON
 * object with their tokens and decoded text (--json). */
enum ids_format { IDS_LINE, IDS_ARRAY, IDS_OBJECT };

/* One run of the command: the encoder, what to add and print, and the buffers. */
struct tokenize_run {
    struct tok_encoder e;
    int add_special;
    enum ids_format format;
    struct tok_ids ids;
    struct tok_buf text; /* the decoded text, for --json */
};

static void json_print(json_t *v) {
    char *line = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    CHECK(line);
    puts(line);
    free(line);
    json_decref(v);
}

static json_t *ids_array(const struct tok_ids *ids) {
    json_t *a = json_array();
    for (size_t i = 0; i < ids->n; i++) json_array_append_new(a, json_integer(ids->v[i]));
    return a;
}

/* R's ids on one line, in its format. */
static int ids_print(struct tokenize_run *r) {
    const struct tok_ids *ids = &r->ids;
    if (r->format == IDS_LINE) {
        for (size_t i = 0; i < ids->n; i++) printf("%s%d", i ? " " : "", ids->v[i]);
        putchar('\n');
        return 0;
    }
    if (r->format == IDS_ARRAY) return json_print(ids_array(ids)), 0;
    if (tokenizer_decode(r->e.t, ids->v, ids->n, 0, &r->text)) return -1;
    json_t *o = json_object(), *s = json_array();
    for (size_t i = 0; i < ids->n; i++) json_array_append_new(s, json_string(tokenizer_token(r->e.t, ids->v[i])));
    json_object_set_new(o, "ids", ids_array(ids));
    json_object_set_new(o, "tokens", s);
    json_object_set_new(o, "decoded", json_stringn(r->text.p, r->text.n));
    json_print(o);
    return 0;
}

/* The encoder's error about "text" as one about INPUT (a flag or a file; LINE > 0: of
 * that line). */
static int input_error(const char *input, int line) {
    char why[512];
    const char *m = err_msg();
    snprintf(why, sizeof why, "%s", strncmp(m, "text: ", 6) ? m : m + 6);
    return line ? err_set(input, "line %d: %s", line, why) : err_set(input, "%s", why);
}

/* INPUT's text S (N bytes; LINE > 0: one line of INPUT), encoded and printed. */
static int input_encode(struct tokenize_run *r, const char *input, int line, const char *s, size_t n) {
    r->ids.n = 0;
    if (tok_encode(&r->e, s, n, r->add_special, &r->ids)) return input_error(input, line);
    return ids_print(r);
}

/* --jsonl PATH (DATA, N bytes): one JSON string a line, one line out for each. */
static int jsonl_encode(struct tokenize_run *r, const char *path, const char *data, size_t n) {
    int line = 0;
    for (const char *p = data, *end; p < data + n; p = end + 1) {
        line++;
        end = memchr(p, '\n', (size_t)(data + n - p));
        if (!end) end = data + n;
        json_error_t jerr;
        json_t *v = json_loadb(p, (size_t)(end - p), JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        int rc = json_is_string(v) ? input_encode(r, path, line, json_string_value(v), json_string_length(v))
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
    struct tokenize_run r = {.add_special = spec->add_special,
                             .format = spec->json ? IDS_OBJECT : in == 2 ? IDS_ARRAY : IDS_LINE};
    tok_encoder_init(&r.e, &t);
    size_t n = 0;
    char *data = in == 0 ? NULL : file_read_all(inputs[in], &n);
    int rc = in == 0 ? input_encode(&r, "--text", 0, spec->text, strlen(spec->text))
             : !data ? -1
             : in == 1 ? input_encode(&r, inputs[in], 0, data, n)
                       : jsonl_encode(&r, inputs[in], data, n);
    free(data);
    tok_ids_free(&r.ids);
    tok_buf_free(&r.text);
    tok_encoder_free(&r.e);
    tokenizer_free(&t);
    return rc;
}
