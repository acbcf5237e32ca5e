/*
 * tok_text.h: what every stage of the tokenizer passes along: a growing byte buffer, a
 * list of pieces of text held in one buffer, a growing list of ids, and UTF-8 steps.
 * Text is UTF-8 throughout; the tokenizer checks its input once (tokenizer_encode).
 */
#ifndef LORAD_TOK_TEXT_H
#define LORAD_TOK_TEXT_H

#include <stddef.h>
#include <stdint.h>

struct tok_buf {
    char *p;
    size_t n, cap;
};

/* Appends N bytes of S to B. */
void tok_buf_put(struct tok_buf *b, const void *s, size_t n);
void tok_buf_free(struct tok_buf *b);

/* Pieces of text, each a span of one buffer. FIRST: the piece starts where the input
 * (the text given to encode) starts, as Metaspace's prepend_scheme "first" asks. */
struct tok_pieces {
    struct tok_buf text;
    struct tok_piece {
        size_t off, len;
        int first;
    } *v;
    size_t n, cap;
};

/* Appends S (N bytes) as a new piece. */
void tok_pieces_add(struct tok_pieces *ps, const char *s, size_t n, int first);
/* Empties PS, keeping its memory. */
void tok_pieces_clear(struct tok_pieces *ps);
void tok_pieces_free(struct tok_pieces *ps);

struct tok_ids {
    int32_t *v;
    size_t n, cap;
};

void tok_ids_push(struct tok_ids *ids, int32_t id);
void tok_ids_free(struct tok_ids *ids);

/* The length of the UTF-8 character that starts with byte C (1 for a stray byte). */
static inline size_t utf8_char_len(unsigned char c) { return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }
/* The code point at S (N bytes left, valid UTF-8) and its length in *LEN. */
int32_t utf8_decode(const char *s, size_t n, size_t *len);
/* Writes code point C as UTF-8 to OUT (at least 4 bytes); returns its length. */
size_t utf8_encode(int32_t c, char *out);
/* GPT-2's bytes_to_unicode: each byte's printable stand-in ('!'..'~', '¡'..'¬', '®'..'ÿ'
 * stand for themselves, the other 68 bytes for U+0100 onwards), and back. */
struct byte_level_map {
    int32_t chr[256];  /* byte -> code point */
    int16_t byte[324]; /* code point -> byte, -1: none (code points past 323 stand for none) */
};
void byte_level_map_init(struct byte_level_map *m);
/* The byte code point C stands for, or -1. */
static inline int byte_level_byte(const struct byte_level_map *m, int32_t c) {
    return c >= 0 && c < 324 ? m->byte[c] : -1;
}
/* Whether code point C is white space (Unicode White_Space, as Rust's char::is_whitespace). */
int uni_is_space(int32_t c);
/* The length of the valid UTF-8 sequence at S (N bytes left), or 0 when it is not one. */
size_t utf8_valid_len(const char *s, size_t n);
/* OUT += S (N bytes) with each invalid UTF-8 sequence (its maximal subpart) replaced by
 * U+FFFD, as Rust's String::from_utf8_lossy. */
void utf8_lossy(const char *s, size_t n, struct tok_buf *out);
/* The length of the longest valid UTF-8 prefix of S (N bytes): N when all of S is valid. */
size_t utf8_valid_prefix(const char *s, size_t n);
/* Whether N bytes at S are valid UTF-8. */
static inline int utf8_valid(const char *s, size_t n) { return utf8_valid_prefix(s, n) == n; }

#endif
