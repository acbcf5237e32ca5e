/*
 * fuzz_prep.c: libFuzzer target for the inputs of `lorad prep` (storage/dataset.c): a
 * .jsonl file's lines, and a .txt file's documents between blank lines.
 *
 * The input is the whole file. It is cut as .jsonl lines and as .txt documents, and the
 * units must be what the header promises: inside the input, on the line they say, a
 * line without its newline and not blank, a document starting and ending with a
 * non-blank line. Each line goes through example_line_format and example_from_line in
 * every format (chat with a stand-in renderer: "<role>" and the content of each
 * message, the assistant's content counted). A refusal is one line naming
 * "fuzz.jsonl:LINE:"; an accepted example is UTF-8 in segments that cover it, and its
 * text is what the line's keys hold, read here again with jansson: the text, the prompt
 * then the completion, the Alpaca prompt ending with the output, or the rendered chat
 * whose counted segments are the assistant's contents.
 */
#include "fuzz_util.h"

#include <jansson.h>

#include "dataset.h"
#include "error.h"

static const Lorad__Format formats[] = {LORAD__FORMAT__FORMAT_TEXT, LORAD__FORMAT__FORMAT_COMPLETION,
                                        LORAD__FORMAT__FORMAT_ALPACA, LORAD__FORMAT__FORMAT_CHAT};

/* The stand-in chat template: "<role>" then the content for every message, the
 * assistant's content counted. */
static int chat_stub(void *ctx, const json_t *messages, const char *where, struct tok_buf *text,
                     struct example_spans *counted) {
    (void)ctx;
    size_t i;
    const json_t *m;
    json_array_foreach(messages, i, m) {
        const json_t *c = json_object_get(m, "content");
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_string(c) || !role) return err_set(where, "message %zu has no role or content", i);
        tok_buf_put(text, "<", 1);
        tok_buf_put(text, role, strlen(role));
        tok_buf_put(text, ">", 1);
        size_t at = text->n;
        tok_buf_put(text, json_string_value(c), json_string_length(c));
        if (!strcmp(role, "assistant")) example_spans_add(counted, at, text->n);
    }
    return 0;
}

static int blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
    return 1;
}

/* The units of a cut are in DATA, in order, on the lines they say. */
static void check_units(const uint8_t *data, size_t size, const struct dataset_units *u, enum dataset_cut cut) {
    const char *s = (const char *)data, *prev = s;
    int64_t line = 1;
    for (size_t k = 0; k < u->n; k++) {
        const struct dataset_unit *x = &u->v[k];
        FUZZ_REQUIRE(x->p >= prev && x->p + x->n <= s + size);
        FUZZ_REQUIRE(x->p == s || x->p[-1] == '\n');
        for (const char *c = prev; c < x->p; c++) line += *c == '\n';
        FUZZ_REQUIRE(x->line == line);
        prev = x->p;
        FUZZ_REQUIRE(x->n > 0 && !blank(x->p, x->n) && x->p[x->n - 1] != '\n');
        if (cut == DATASET_CUT_LINES) FUZZ_REQUIRE(memchr(x->p, '\n', x->n) == NULL);
        if (cut == DATASET_CUT_BLANK_LINES) {
            const char *last = x->p + x->n;
            while (last > x->p && last[-1] != '\n') last--;
            const char *nl = memchr(x->p, '\n', x->n);
            FUZZ_REQUIRE(!blank(x->p, nl ? (size_t)(nl - x->p) : x->n) && !blank(last, (size_t)(x->p + x->n - last)));
            FUZZ_REQUIRE(x->p + x->n == s + size || x->p[x->n] == '\n');
        }
    }
}

/* KEY of O as a string appended to OUT; 0 when it is not one. */
static int put_key(const json_t *o, const char *key, struct tok_buf *out) {
    const json_t *v = json_object_get(o, key);
    if (json_is_string(v)) tok_buf_put(out, json_string_value(v), json_string_length(v));
    return json_is_string(v);
}

/* The stand-in rendering of O's messages (or prompt + completion lists) into WANT, and
 * the assistant's contents into COUNTED. */
static void chat_expect(const json_t *o, struct tok_buf *want, struct tok_buf *counted) {
    const json_t *lists[2] = {json_object_get(o, "messages"), NULL};
    if (!lists[0]) lists[0] = json_object_get(o, "prompt"), lists[1] = json_object_get(o, "completion");
    for (int k = 0; k < 2; k++) {
        size_t i;
        const json_t *m;
        json_array_foreach(lists[k], i, m) {
            const char *role = json_string_value(json_object_get(m, "role"));
            const json_t *c = json_object_get(m, "content");
            tok_buf_put(want, "<", 1);
            tok_buf_put(want, role, strlen(role));
            tok_buf_put(want, ">", 1);
            tok_buf_put(want, json_string_value(c), json_string_length(c));
            if (!strcmp(role, "assistant")) tok_buf_put(counted, json_string_value(c), json_string_length(c));
        }
    }
}

/* The bytes of EX's counted segments into OUT. */
static void counted_text(const struct example *ex, struct tok_buf *out) {
    for (size_t i = 0, at = 0; i < ex->n_seg; at = ex->seg[i++].end)
        if (ex->seg[i].counted) tok_buf_put(out, ex->text.p + at, ex->seg[i].end - at);
}

static int same(const struct tok_buf *a, const struct tok_buf *b) {
    return a->n == b->n && (!a->n || !memcmp(a->p, b->p, a->n));
}

/* What EX's text must be for line LINE in FORMAT, from jansson alone. */
static void check_text(const char *line, size_t n, Lorad__Format format, const struct example *ex) {
    json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    FUZZ_REQUIRE(json_is_object(o));
    struct tok_buf want = {0}, tail = {0};
    if (format == LORAD__FORMAT__FORMAT_TEXT) FUZZ_REQUIRE(put_key(o, "text", &want));
    if (format == LORAD__FORMAT__FORMAT_COMPLETION) {
        FUZZ_REQUIRE(put_key(o, "prompt", &want) && put_key(o, "completion", &want));
        size_t prompt = json_string_length(json_object_get(o, "prompt"));
        FUZZ_REQUIRE(ex->n_seg == 2 && !ex->seg[0].counted && ex->seg[0].end == prompt);
    }
    if (format == LORAD__FORMAT__FORMAT_ALPACA) {
        FUZZ_REQUIRE(put_key(o, "output", &tail) && ex->seg[ex->n_seg - 1].counted);
        FUZZ_REQUIRE(ex->text.n >= tail.n && !memcmp(ex->text.p + ex->text.n - tail.n, tail.p ? tail.p : "", tail.n));
    }
    if (format == LORAD__FORMAT__FORMAT_CHAT) {
        struct tok_buf got = {0};
        chat_expect(o, &want, &tail);
        counted_text(ex, &got);
        FUZZ_REQUIRE(same(&got, &tail));
        tok_buf_free(&got);
    }
    if (format != LORAD__FORMAT__FORMAT_ALPACA) FUZZ_REQUIRE(same(&want, &ex->text));
    tok_buf_free(&want);
    tok_buf_free(&tail);
    json_decref(o);
}

/* An example holds UTF-8 text in segments that cover it, alternately counted. */
static void check_example(const struct example *ex) {
    FUZZ_REQUIRE(utf8_valid(ex->text.p ? ex->text.p : "", ex->text.n));
    size_t prev = 0;
    for (size_t i = 0; i < ex->n_seg; i++) {
        FUZZ_REQUIRE(ex->seg[i].end >= prev && (i == 0 || ex->seg[i].counted != ex->seg[i - 1].counted));
        prev = ex->seg[i].end;
    }
    FUZZ_REQUIRE(prev == ex->text.n);
}

static void check_refusal(int64_t line) {
    char want[64];
    snprintf(want, sizeof want, "fuzz.jsonl:%lld: ", (long long)line);
    FUZZ_REQUIRE(!strncmp(err_msg(), want, strlen(want)) && !strchr(err_msg(), '\n'));
}

/* Line U in every format, and through the format its keys give. */
static void check_line(const struct dataset_unit *u, struct example *ex) {
    struct dataset_where w = {"fuzz.jsonl", u->line};
    Lorad__Format detected;
    int known = example_line_format(u->p, u->n, &w, &detected) == 0;
    if (!known) check_refusal(u->line);
    for (size_t f = 0; f < sizeof formats / sizeof formats[0]; f++) {
        struct example_reader r = {formats[f], "fuzz", f == 3 ? chat_stub : NULL, NULL};
        if (example_from_line(&r, u->p, u->n, &w, ex)) {
            check_refusal(u->line);
            FUZZ_REQUIRE(!known || detected != formats[f] || formats[f] == LORAD__FORMAT__FORMAT_CHAT ||
                         strstr(err_msg(), "not a string") || strstr(err_msg(), "no \""));
            continue;
        }
        check_example(ex);
        check_text(u->p, u->n, formats[f], ex);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct dataset_units lines = {0}, docs = {0};
    dataset_cut((const char *)data, size, DATASET_CUT_LINES, &lines);
    dataset_cut((const char *)data, size, DATASET_CUT_BLANK_LINES, &docs);
    check_units(data, size, &lines, DATASET_CUT_LINES);
    check_units(data, size, &docs, DATASET_CUT_BLANK_LINES);
    struct example ex = {0};
    for (size_t k = 0; k < lines.n; k++) check_line(&lines.v[k], &ex);
    for (size_t k = 0; k < docs.n; k++) {
        struct dataset_where w = {"fuzz.txt", docs.v[k].line};
        int ok = example_from_text(docs.v[k].p, docs.v[k].n, &w, &ex) == 0;
        FUZZ_REQUIRE(ok == utf8_valid(docs.v[k].p, docs.v[k].n));
        if (ok) FUZZ_REQUIRE(ex.text.n == docs.v[k].n && !memcmp(ex.text.p, docs.v[k].p, ex.text.n));
    }
    example_free(&ex);
    dataset_units_free(&lines);
    dataset_units_free(&docs);
    return 0;
}
