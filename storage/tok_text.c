/*
 * tok_text.c: the tokenizer's buffers and UTF-8 steps (tok_text.h).
 */
#include "tok_text.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"

void tok_buf_put(struct tok_buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void tok_buf_free(struct tok_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void tok_pieces_add(struct tok_pieces *ps, const char *s, size_t n, int first) {
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 64;
        ps->v = xrealloc(ps->v, ps->cap * sizeof *ps->v);
    }
    ps->v[ps->n++] = (struct tok_piece){.off = ps->text.n, .len = n, .first = first};
    tok_buf_put(&ps->text, s, n);
}

void tok_pieces_clear(struct tok_pieces *ps) {
    ps->n = 0;
    ps->text.n = 0;
}

void tok_pieces_free(struct tok_pieces *ps) {
    tok_buf_free(&ps->text);
    free(ps->v);
    memset(ps, 0, sizeof *ps);
}

void tok_ids_push(struct tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 256;
        ids->v = xrealloc(ids->v, ids->cap * sizeof *ids->v);
    }
    ids->v[ids->n++] = id;
}

void tok_ids_free(struct tok_ids *ids) {
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}

int32_t utf8_decode(const char *s, size_t n, size_t *len) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &c);
    *len = k > 0 ? (size_t)k : 1;
    return k > 0 ? c : 0xFFFD;
}

size_t utf8_encode(int32_t c, char *out) { return (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)out); }

/* Whether byte C may follow lead byte LEAD (C2..F4): the second byte's range depends on
 * the first, so that no sequence is overlong, a surrogate or beyond U+10FFFF. */
static int second_ok(unsigned char lead, unsigned char c) {
    unsigned char lo = lead == 0xE0 ? 0xA0 : lead == 0xF0 ? 0x90 : 0x80;
    unsigned char hi = lead == 0xED ? 0x9F : lead == 0xF4 ? 0x8F : 0xBF;
    return c >= lo && c <= hi;
}

size_t utf8_valid_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t len = utf8_char_len(u[0]);
    if (u[0] < 0x80) return 1;
    if (u[0] < 0xC2 || u[0] > 0xF4 || len > n || !second_ok(u[0], u[1])) return 0;
    for (size_t i = 2; i < len; i++)
        if ((u[i] & 0xC0) != 0x80) return 0;
    return len;
}

void utf8_lossy(const char *s, size_t n, struct tok_buf *out) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_valid_len(s + i, n - i);
        if (k) {
            tok_buf_put(out, s + i, k);
            i += k;
            continue;
        }
        /* the maximal subpart: a lead byte and the continuation bytes that could follow it */
        size_t len = utf8_char_len(u[i]), j = i + 1;
        if (u[i] >= 0xC2 && u[i] <= 0xF4 && j < n && second_ok(u[i], u[j]))
            for (j++; j < n && j < i + len && (u[j] & 0xC0) == 0x80; j++) {}
        tok_buf_put(out, "\xef\xbf\xbd", 3);
        i = j;
    }
}

size_t utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0, k;
    while (i < n && (k = utf8_valid_len(s + i, n - i))) i += k;
    return i;
}

int uni_is_space(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

void byte_level_map_init(struct byte_level_map *m) {
    for (int c = 0; c < 324; c++) m->byte[c] = -1;
    for (int b = 0, k = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        m->chr[b] = printable ? b : 256 + k++;
        m->byte[m->chr[b]] = (int16_t)b;
    }
}
