/*
 * dataset.c: cutting inputs into units and reading each as an example (dataset.h).
 */
#include "dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define JSON_FLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

/* ---- units ---- */

static void unit_add(struct dataset_units *u, const char *p, size_t n, int64_t line) {
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 1024;
        u->v = xrealloc(u->v, u->cap * sizeof *u->v);
    }
    u->v[u->n++] = (struct dataset_unit){p, n, line};
}

static int line_blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
    return 1;
}

int dataset_is_text(const char *path) {
    size_t n = strlen(path);
    return (n > 4 && !strcmp(path + n - 4, ".txt")) || (n > 6 && !strcmp(path + n - 6, ".jsonl"));
}

void dataset_cut(const char *s, size_t n, enum dataset_cut cut, struct dataset_units *out) {
    if (cut == DATASET_CUT_FILE) {
        unit_add(out, s, n, 1);
        return;
    }
    const char *doc = NULL; /* BLANK_LINES: where the open document starts */
    int64_t line = 1, doc_line = 0;
    for (const char *p = s, *end; p < s + n; p = end + 1, line++) {
        end = memchr(p, '\n', (size_t)(s + n - p));
        if (!end) end = s + n;
        int blank = line_blank(p, (size_t)(end - p));
        if (cut == DATASET_CUT_LINES && !blank) unit_add(out, p, (size_t)(end - p), line);
        if (cut != DATASET_CUT_BLANK_LINES) continue;
        if (!blank && !doc) doc = p, doc_line = line;
        if (doc && (blank || end == s + n || end + 1 == s + n)) {
            const char *last = blank ? p - 1 : end; /* a blank line ends the document before its own start */
            unit_add(out, doc, (size_t)(last - doc), doc_line);
            doc = NULL;
        }
    }
}

void dataset_units_free(struct dataset_units *u) {
    free(u->v);
    memset(u, 0, sizeof *u);
}

/* ---- examples ---- */

void example_add(struct example *ex, const char *s, size_t n, int counted) {
    tok_buf_put(&ex->text, s, n);
    if (ex->n_seg && ex->seg[ex->n_seg - 1].counted == counted) {
        ex->seg[ex->n_seg - 1].end = ex->text.n;
        return;
    }
    if (ex->n_seg == ex->cap) {
        ex->cap = ex->cap ? ex->cap * 2 : 8;
        ex->seg = xrealloc(ex->seg, ex->cap * sizeof *ex->seg);
    }
    ex->seg[ex->n_seg++] = (struct example_seg){ex->text.n, counted};
}

void example_clear(struct example *ex) {
    ex->text.n = 0;
    ex->n_seg = 0;
}

void example_free(struct example *ex) {
    tok_buf_free(&ex->text);
    free(ex->seg);
    memset(ex, 0, sizeof *ex);
}

void example_spans_add(struct example_spans *s, size_t begin, size_t end) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = (struct example_span){begin, end};
}

void example_spans_free(struct example_spans *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

const char *dataset_format_name(Lorad__Format f) {
    switch (f) {
    case LORAD__FORMAT__FORMAT_TEXT: return "text";
    case LORAD__FORMAT__FORMAT_COMPLETION: return "completion";
    case LORAD__FORMAT__FORMAT_CHAT: return "chat";
    case LORAD__FORMAT__FORMAT_ALPACA: return "alpaca";
    default: return "auto";
    }
}

const char *dataset_where_text(const struct dataset_where *w, char *buf) {
    snprintf(buf, DATASET_WHERE_MAX, "%s:%lld", w->file, (long long)w->line);
    return buf;
}

/* Records "FILE:LINE: " + the problem. */
static int where_error(const struct dataset_where *w, const char *problem) {
    char thing[DATASET_WHERE_MAX];
    return err_set(dataset_where_text(w, thing), "%s", problem);
}

/* Refuses S (N bytes) at W unless it is UTF-8; the error names the line of the first
 * bad byte, counting from W's. */
static int utf8_check(const char *s, size_t n, const struct dataset_where *w) {
    size_t i = 0;
    for (size_t k; i < n && (k = utf8_valid_len(s + i, n - i)); i += k) {}
    if (i == n) return 0;
    struct dataset_where at = *w;
    for (size_t j = 0; j < i; j++) at.line += s[j] == '\n';
    char problem[96];
    snprintf(problem, sizeof problem, "invalid UTF-8 (byte 0x%02x)", (unsigned char)s[i]);
    return where_error(&at, problem);
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* LINE (N bytes) at W as a JSON object, or NULL with an error. */
json_t *dataset_line_object(const char *line, size_t n, const struct dataset_where *w) {
    if (utf8_check(line, n, w)) return NULL;
    json_error_t jerr;
    json_t *o = json_loadb(line, n, JSON_FLAGS, &jerr);
    char problem[256];
    if (!o) snprintf(problem, sizeof problem, "not JSON: %s (column %d)", jerr.text, jerr.column);
    else if (!json_is_object(o)) snprintf(problem, sizeof problem, "not a JSON object but %s", json_kind(o));
    else return o;
    json_decref(o);
    where_error(w, problem);
    return NULL;
}

static int keys_format(const json_t *o, Lorad__Format *f) {
    const json_t *prompt = json_object_get(o, "prompt"), *completion = json_object_get(o, "completion");
    int messages = prompt && completion && (json_is_array(prompt) || json_is_array(completion));
    if (json_object_get(o, "messages") || messages) *f = LORAD__FORMAT__FORMAT_CHAT;
    else if (prompt && completion) *f = LORAD__FORMAT__FORMAT_COMPLETION;
    else if (json_object_get(o, "instruction") && json_object_get(o, "output")) *f = LORAD__FORMAT__FORMAT_ALPACA;
    else if (json_object_get(o, "text")) *f = LORAD__FORMAT__FORMAT_TEXT;
    else return -1;
    return 0;
}

int example_line_format(const char *line, size_t n, const struct dataset_where *w, Lorad__Format *out) {
    json_t *o = dataset_line_object(line, n, w);
    if (!o) return -1;
    int rc = keys_format(o, out);
    json_decref(o);
    if (rc == 0) return 0;
    where_error(w, "its keys fit no format");
    return err_hint("a line holds \"text\", \"prompt\" and \"completion\", \"instruction\" and \"output\", or "
                    "\"messages\"");
}

/* String KEY of O: 1 with *S and *N; 0 when absent or null and OPTIONAL; else -1 with
 * an error at W that says what R's format needs. */
static int text_field(const struct example_reader *r, const json_t *o, const char *key, int optional,
                      const struct dataset_where *w, const char **s, size_t *n) {
    const json_t *v = json_object_get(o, key);
    char problem[512];
    if ((!v || json_is_null(v)) && optional) return 0;
    if (json_is_string(v)) {
        *s = json_string_value(v);
        *n = json_string_length(v);
        return 1;
    }
    if (v) snprintf(problem, sizeof problem, "\"%s\" is %s, not a string", key, json_kind(v));
    else snprintf(problem, sizeof problem, "no \"%s\" (the data is %s, as %s says)", key,
                  dataset_format_name(r->format), r->origin);
    return where_error(w, problem);
}

/* Appends FMT to EX as one segment, each "%s" replaced by the next of ARGS (LENS bytes). */
static void template_add(struct example *ex, const char *fmt, const char *const *args, const size_t *lens,
                         int counted) {
    for (const char *p = fmt, *q; *p; p = q + 2) {
        q = strstr(p, "%s");
        if (!q) q = p + strlen(p);
        example_add(ex, p, (size_t)(q - p), counted);
        if (!*q) break;
        example_add(ex, *args++, *lens++, counted);
    }
}

static int alpaca_example(const struct example_reader *r, const json_t *o, const struct dataset_where *w,
                          struct example *ex) {
    const char *s[3] = {"", "", ""};
    size_t n[3] = {0, 0, 0};
    int has_input;
    if (text_field(r, o, "instruction", 0, w, &s[0], &n[0]) < 0 ||
        (has_input = text_field(r, o, "input", 1, w, &s[1], &n[1])) < 0 ||
        text_field(r, o, "output", 0, w, &s[2], &n[2]) < 0)
        return -1;
    template_add(ex, has_input && n[1] ? DATASET_ALPACA_INPUT : DATASET_ALPACA_NO_INPUT, s, n, 0);
    example_add(ex, s[2], n[2], 1);
    return 0;
}

/* MESSAGES rendered by R's chat template into EX: its text, the counted spans as
 * counted segments. */
static int chat_render(const struct example_reader *r, const json_t *messages, size_t n_prompt, const char *where,
                       struct example *ex) {
    struct tok_buf text = {0};
    struct example_spans spans = {0};
    int rc = r->chat(r->chat_ctx, messages, n_prompt, where, &text, &spans);
    size_t at = 0;
    for (size_t i = 0; i < spans.n && rc == 0; at = spans.v[i++].end) {
        CHECK(spans.v[i].begin >= at && spans.v[i].end >= spans.v[i].begin && spans.v[i].end <= text.n);
        example_add(ex, text.p + at, spans.v[i].begin - at, 0);
        example_add(ex, text.p + spans.v[i].begin, spans.v[i].end - spans.v[i].begin, 1);
    }
    if (rc == 0) example_add(ex, text.p ? text.p + at : "", text.n - at, 0);
    tok_buf_free(&text);
    example_spans_free(&spans);
    return rc;
}

/* Refuses KEY of O unless it is a non-empty list of messages (dataset.h). */
static int messages_check(const json_t *o, const char *key, const char *where) {
    const json_t *m = json_object_get(o, key), *msg;
    if (!m) return err_set(where, "no \"%s\"", key);
    if (!json_is_array(m)) return err_set(where, "\"%s\" is %s, not a list of messages", key, json_kind(m));
    if (json_array_size(m) == 0) return err_set(where, "\"%s\" is an empty list", key);
    size_t i;
    json_array_foreach(m, i, msg) {
        const json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        if (!json_is_object(msg))
            return err_set(where, "\"%s\"[%zu] is %s, not a message object", key, i, json_kind(msg));
        if (!role) return err_set(where, "\"%s\"[%zu] has no \"role\"", key, i);
        if (!json_is_string(role))
            return err_set(where, "\"%s\"[%zu]: \"role\" is %s, not a string", key, i, json_kind(role));
        if (content && !json_is_string(content) && !json_is_null(content) && !json_is_array(content))
            return err_set(where, "\"%s\"[%zu]: \"content\" is %s, not a string, null or a list", key, i,
                           json_kind(content));
    }
    return 0;
}

/* The messages of O, a chat line: "messages", or prompt + completion lists. */
static int chat_example(const struct example_reader *r, const json_t *o, const struct dataset_where *w,
                        struct example *ex) {
    char where[DATASET_WHERE_MAX];
    dataset_where_text(w, where);
    if (!r->chat) {
        err_set(where, "chat data, and no chat template to render it with");
        return err_hint("prompt/completion or text lines");
    }
    if (!json_object_get(o, "messages") && !json_object_get(o, "prompt"))
        return err_set(where, "no \"messages\", nor \"prompt\" and \"completion\" (the data is chat, as %s says)",
                       r->origin);
    if (json_object_get(o, "messages"))
        return messages_check(o, "messages", where) ? -1 : chat_render(r, json_object_get(o, "messages"), 0, where, ex);
    if (messages_check(o, "prompt", where) || messages_check(o, "completion", where)) return -1;
    const json_t *p = json_object_get(o, "prompt");
    json_t *all = json_copy((json_t *)p);
    json_array_extend(all, json_object_get(o, "completion"));
    int rc = chat_render(r, all, json_array_size(p), where, ex);
    json_decref(all);
    return rc;
}

/* O, a line of R's format, as EX. */
static int object_example(const struct example_reader *r, const json_t *o, const struct dataset_where *w,
                          struct example *ex) {
    const char *s, *c;
    size_t n, nc;
    switch (r->format) {
    case LORAD__FORMAT__FORMAT_TEXT:
        if (text_field(r, o, "text", 0, w, &s, &n) < 0) return -1;
        example_add(ex, s, n, 1);
        return 0;
    case LORAD__FORMAT__FORMAT_COMPLETION:
        if (text_field(r, o, "prompt", 0, w, &s, &n) < 0 || text_field(r, o, "completion", 0, w, &c, &nc) < 0)
            return -1;
        example_add(ex, s, n, 0);
        example_add(ex, c, nc, 1);
        return 0;
    case LORAD__FORMAT__FORMAT_ALPACA: return alpaca_example(r, o, w, ex);
    case LORAD__FORMAT__FORMAT_CHAT: return chat_example(r, o, w, ex);
    default: CHECK(0 && "a reader without a format");
    }
    return -1;
}

int example_from_line(const struct example_reader *r, const char *line, size_t n, const struct dataset_where *w,
                      struct example *ex) {
    example_clear(ex);
    json_t *o = dataset_line_object(line, n, w);
    int rc = o ? object_example(r, o, w, ex) : -1;
    json_decref(o);
    return rc;
}

int example_from_text(const char *s, size_t n, const struct dataset_where *w, struct example *ex) {
    example_clear(ex);
    if (utf8_check(s, n, w)) return -1;
    example_add(ex, s, n, 1);
    return 0;
}
