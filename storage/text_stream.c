/*
 * text_stream.c: generated ids to text, piece by piece (text_stream.h).
 */
#define _GNU_SOURCE /* memmem */
#include "text_stream.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

void text_stream_init(struct text_stream *s, const struct tokenizer *t, const char *const *stop, size_t n_stop) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->stop = stop;
    s->n_stop = n_stop;
    tok_buf_put(&s->text, "", 0);
    for (int i = 0; t && i < t->decoder.n; i++) s->fallback |= t->decoder.steps[i].kind == TOK_DEC_BYTE_FALLBACK;
}

void text_stream_free(struct text_stream *s) {
    tok_ids_free(&s->ids);
    tok_buf_free(&s->text);
    tok_buf_free(&s->scratch);
    memset(s, 0, sizeof *s);
}

/* Whether ID is a byte-fallback token, <0xNN>, of a decoder with a ByteFallback step. */
static int is_fallback_byte(const struct text_stream *s, int32_t id) {
    const char *t = tokenizer_token(s->t, id);
    return s->fallback && strlen(t) == 6 && !memcmp(t, "<0x", 3) && isxdigit((unsigned char)t[3]) &&
           isxdigit((unsigned char)t[4]) && t[5] == '>';
}

/* S->text after ID: the decode of every id so far, or ID's byte-level form appended;
 * and S->settled. */
static int text_update(struct text_stream *s, int32_t id) {
    if (!s->t) {
        char tag[24];
        int n = id >= 0 && id < 256 ? 1 : snprintf(tag, sizeof tag, "<|%d|>", (int)id);
        if (n == 1) tag[0] = (char)id;
        tok_buf_put(&s->text, tag, (size_t)n);
        s->settled = s->text.n;
        return 0;
    }
    if (!tokenizer_token(s->t, id)) return 0; /* a padded embedding row: Hugging Face's decode passes it over */
    tok_ids_push(&s->ids, id);
    if (tokenizer_decode(s->t, s->ids.v, s->ids.n, 1, &s->text)) return -1;
    size_t run = s->ids.n;
    while (run > 0 && is_fallback_byte(s, s->ids.v[run - 1])) run--;
    if (run == s->ids.n) s->settled = s->text.n;
    else if (tokenizer_decode(s->t, s->ids.v, run, 1, &s->scratch)) return -1;
    else s->settled = s->scratch.n < s->text.n ? s->scratch.n : s->text.n;
    return 0;
}

/* Where the first stop string begins at or after FROM: its offset, and its index in *WHICH. */
static size_t stop_find(const struct text_stream *s, size_t from, size_t *which) {
    size_t at = s->text.n;
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t len = strlen(s->stop[i]);
        const char *p = memmem(s->text.p + from, s->text.n - from, s->stop[i], len);
        if (p && (size_t)(p - s->text.p) < at) at = (size_t)(p - s->text.p), *which = i;
    }
    return at;
}

/* The end of what is stable in S->text: before a trailing byte-fallback run, trailing
 * U+FFFD (with a tokenizer) and the longest tail that begins a stop string. */
static size_t stable_end(const struct text_stream *s) {
    size_t end = s->settled > s->given ? s->settled : s->given;
    while (s->t && end >= s->given + 3 && memcmp(s->text.p + end - 3, REPLACEMENT, 3) == 0) end -= 3;
    size_t hold = 0;
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t len = strlen(s->stop[i]);
        for (size_t k = len - 1 < end - s->given ? len - 1 : end - s->given; k > hold; k--)
            if (memcmp(s->text.p + end - k, s->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return end - hold;
}

int text_stream_push(struct text_stream *s, int32_t id, struct tok_buf *out) {
    if (s->stopped) return s->stopped;
    if (text_update(s, id)) return -1;
    if (s->text.n <= s->given) return 0; /* nothing new (a skipped special token) */
    size_t which = 0, at = stop_find(s, s->given, &which);
    size_t end = at < s->text.n ? at : stable_end(s);
    if (end > s->given) {
        tok_buf_put(out, s->text.p + s->given, end - s->given);
        s->given = end;
    }
    if (at < s->text.n) s->stopped = (int)which + 1;
    return s->stopped;
}

void text_stream_finish(struct text_stream *s, struct tok_buf *out) {
    if (s->stopped || s->text.n <= s->given) return;
    tok_buf_put(out, s->text.p + s->given, s->text.n - s->given);
    s->given = s->text.n;
}
