/*
 * tok_decode.c: the decoders (tok_decode.h).
 */
#include "tok_decode.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jsonio.h"
#include "tok_json.h"

/* A one-character string field KEY of J into OUT (DEFAULT when absent). */
static int char_field(const json_t *j, const char *key, const char *def, const char *file, char out[8]) {
    const char *v = def;
    if (jsonio_get_string(j, key, file, &v) < 0) return -1;
    size_t n = strlen(v);
    if (n == 0 || n != utf8_char_len((unsigned char)v[0]) || n >= 8)
        return err_set(file, "decoder: \"%s\" '%s' is not one character", key, v);
    memcpy(out, v, n + 1);
    return 0;
}

static int metaspace_parse(struct tok_decoder *d, const json_t *j, const char *file) {
    struct tok_dec_step *s = TOK_STEP_ADD(d);
    s->kind = TOK_DEC_METASPACE;
    const char *scheme = NULL;
    int prefix = 1;
    if (char_field(j, "replacement", "\xe2\x96\x81", file, s->text) ||
        jsonio_get_bool(j, "add_prefix_space", file, &prefix) < 0 ||
        jsonio_get_string(j, "prepend_scheme", file, &scheme) < 0)
        return -1;
    s->prepend = scheme ? strcmp(scheme, "never") != 0 : prefix;
    return 0;
}

static int part_parse(void *ctx, const char *type, const json_t *j, const char *file) {
    struct tok_decoder *d = ctx;
    if (!strcmp(type, "ByteLevel")) return TOK_STEP_ADD(d)->kind = TOK_DEC_BYTE_LEVEL, 0;
    if (!strcmp(type, "ByteFallback")) return TOK_STEP_ADD(d)->kind = TOK_DEC_BYTE_FALLBACK, 0;
    if (!strcmp(type, "Fuse")) return TOK_STEP_ADD(d)->kind = TOK_DEC_FUSE, 0;
    if (!strcmp(type, "Metaspace")) return metaspace_parse(d, j, file);
    if (!strcmp(type, "Strip")) {
        struct tok_dec_step *s = TOK_STEP_ADD(d);
        s->kind = TOK_DEC_STRIP;
        return char_field(j, "content", " ", file, s->text) || jsonio_get_i32(j, "start", file, &s->start) < 0 ||
                       jsonio_get_i32(j, "stop", file, &s->stop) < 0
                   ? -1
                   : 0;
    }
    if (!strcmp(type, "Replace")) {
        struct tok_dec_step *s = TOK_STEP_ADD(d);
        s->kind = TOK_DEC_REPLACE;
        return tok_replace_parse(&s->replace, j, file, "decoder");
    }
    return 1;
}

int tok_decoder_parse(struct tok_decoder *d, const json_t *j, const char *file) {
    memset(d, 0, sizeof *d);
    return tok_component_parse(j, file, "decoder", "decoders", "ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace",
                               part_parse, d);
}

void tok_decoder_free(struct tok_decoder *d) {
    for (int i = 0; i < d->n; i++) tok_replace_free(&d->steps[i].replace);
    free(d->steps);
    memset(d, 0, sizeof *d);
}

/* ByteLevel: every token's characters back to bytes (a token with a character that
 * stands for no byte stays as it is), all joined, made valid UTF-8. */
static void byte_level(const struct tok_pieces *in, struct tok_pieces *out, struct tok_buf *tmp) {
    struct byte_level_map m;
    byte_level_map_init(&m);
    struct tok_buf bytes = {0};
    for (size_t i = 0; i < in->n; i++) {
        const char *t = in->text.p + in->v[i].off;
        size_t n = in->v[i].len, start = bytes.n, k;
        for (size_t j = 0; j < n; j += k) {
            int b = byte_level_byte(&m, utf8_decode(t + j, n - j, &k));
            if (b < 0) {
                bytes.n = start;
                tok_buf_put(&bytes, t, n);
                break;
            }
            unsigned char c = (unsigned char)b;
            tok_buf_put(&bytes, &c, 1);
        }
    }
    tmp->n = 0;
    utf8_lossy(bytes.p, bytes.n, tmp);
    tok_pieces_add(out, tmp->p ? tmp->p : "", tmp->n, 0);
    tok_buf_free(&bytes);
}

/* The byte of a "<0xAB>" token, or -1. */
static int fallback_byte(const char *t, size_t n) {
    if (n != 6 || memcmp(t, "<0x", 3) != 0 || t[5] != '>') return -1;
    char hex[3] = {t[3], t[4], 0}, *end;
    long v = strtol(hex, &end, 16);
    return *end || hex[0] == '-' || hex[0] == '+' ? -1 : (int)v;
}

/* ByteFallback: runs of <0xAB> tokens become their bytes when those are valid UTF-8,
 * else one U+FFFD per byte. */
static void byte_fallback(const struct tok_pieces *in, struct tok_pieces *out, struct tok_buf *run) {
    run->n = 0;
    for (size_t i = 0; i <= in->n; i++) {
        int b = i < in->n ? fallback_byte(in->text.p + in->v[i].off, in->v[i].len) : -1;
        if (b >= 0) {
            unsigned char c = (unsigned char)b;
            tok_buf_put(run, &c, 1);
            continue;
        }
        if (run->n && utf8_valid(run->p, run->n)) tok_pieces_add(out, run->p, run->n, 0);
        else
            for (size_t k = 0; k < run->n; k++) tok_pieces_add(out, "\xef\xbf\xbd", 3, 0);
        run->n = 0;
        if (i < in->n) tok_pieces_add(out, in->text.p + in->v[i].off, in->v[i].len, 0);
    }
}

/* Strip: up to START copies of the character from each token's front, STOP from its back. */
static void strip(const struct tok_dec_step *st, const char *t, size_t n, struct tok_pieces *out) {
    size_t c = strlen(st->text), a = 0, b = n;
    for (int k = 0; k < st->start && a + c <= b && !memcmp(t + a, st->text, c); k++) a += c;
    for (int k = 0; k < st->stop && b >= a + c && !memcmp(t + b - c, st->text, c); k++) b -= c;
    tok_pieces_add(out, t + a, b - a, 0);
}

static int step_apply(const struct tok_dec_step *st, const struct tok_pieces *in, struct tok_pieces *out,
                      struct tok_buf *tmp) {
    if (st->kind == TOK_DEC_BYTE_LEVEL) return byte_level(in, out, tmp), 0;
    if (st->kind == TOK_DEC_BYTE_FALLBACK) return byte_fallback(in, out, tmp), 0;
    if (st->kind == TOK_DEC_FUSE) {
        tok_pieces_add(out, in->text.p ? in->text.p : "", in->text.n, 0); /* the pieces lie end to end */
        return 0;
    }
    struct tok_pattern replacement = {.literal = (char *)st->text, .literal_len = strlen(st->text)};
    for (size_t i = 0; i < in->n; i++) {
        const char *t = in->text.p + in->v[i].off;
        size_t n = in->v[i].len;
        tmp->n = 0;
        if (st->kind == TOK_DEC_STRIP) {
            strip(st, t, n, out);
            continue;
        }
        /* Metaspace: the replacement becomes a space, or in the first token (unless its
         * scheme is never) nothing, as Hugging Face's decode_chain */
        int rc = st->kind == TOK_DEC_REPLACE ? tok_pattern_replace(&st->replace.pattern, t, n, st->replace.content, tmp)
                                             : tok_pattern_replace(&replacement, t, n, i == 0 && st->prepend ? "" : " ", tmp);
        if (rc) return -1;
        tok_pieces_add(out, tmp->p, tmp->n, 0);
    }
    return 0;
}

int tok_decode(const struct tok_decoder *d, const struct tok_pieces *tokens, struct tok_buf *out) {
    out->n = 0;
    tok_buf_put(out, "", 0); /* an empty text is "", not NULL */
    if (d->n == 0) { /* no decoder: the tokens joined with spaces, as Hugging Face does */
        for (size_t i = 0; i < tokens->n; i++) {
            if (i) tok_buf_put(out, " ", 1);
            tok_buf_put(out, tokens->text.p + tokens->v[i].off, tokens->v[i].len);
        }
        return 0;
    }
    struct tok_pieces a = {0}, b = {0};
    struct tok_buf tmp = {0};
    const struct tok_pieces *from = tokens;
    int rc = 0;
    for (int i = 0; i < d->n && rc == 0; i++) {
        struct tok_pieces *to = i % 2 ? &b : &a;
        tok_pieces_clear(to);
        rc = step_apply(&d->steps[i], from, to, &tmp);
        from = to;
    }
    for (size_t i = 0; rc == 0 && i < from->n; i++) tok_buf_put(out, from->text.p + from->v[i].off, from->v[i].len);
    tok_pieces_free(&a);
    tok_pieces_free(&b);
    tok_buf_free(&tmp);
    return rc;
}
