/*
 * text_stream.h: generated token ids as text, given out a piece at a time while they
 * are generated, the way a streamer prints a model's output.
 *
 * After each id the whole generation is decoded again, as Hugging Face's TextStreamer
 * decodes its token cache (tokenizer_decode with the special tokens skipped, and the
 * ids the vocabulary lacks passed over, as Hugging Face's decode does), and the bytes
 * that are new since the last piece are given out, except a tail that may still change:
 *   - trailing U+FFFD characters: an incomplete UTF-8 sequence of byte-level tokens
 *     decodes as U+FFFD until the rest arrives (a U+FFFD that stays one is given out
 *     by the next piece or by text_stream_finish);
 *   - the text of a trailing run of byte-fallback tokens (<0xNN>): the run decodes as
 *     its bytes only when they are valid UTF-8 as a whole, else as one U+FFFD per byte
 *     (Hugging Face's ByteFallback), so a character it already makes turns into U+FFFD
 *     when an invalid byte joins the run; its text is stable once a token ends the run;
 *   - a tail that is the beginning of a stop string.
 * Unlike TextStreamer, which waits for a space, a piece goes out as soon as it is
 * stable, so the pieces joined are exactly the decode of every id (up to a stop string).
 *
 * A stop string ends the text where it first begins: neither it nor anything after it
 * is given out, as vLLM's and OpenAI's `stop` (Hugging Face's generate(stop_strings=)
 * keeps the tokens that hold it).
 *
 * Without a tokenizer (a byte-level model) an id below 256 is its byte and a larger one
 * "<|N|>", with no UTF-8 held back, as `lorad generate` always printed them.
 */
#ifndef LORAD_TEXT_STREAM_H
#define LORAD_TEXT_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "tok_text.h"
#include "tokenizer.h"

struct text_stream {
    const struct tokenizer *t; /* NULL: byte-level */
    const char *const *stop;   /* the stop strings, none empty */
    size_t n_stop;
    struct tok_ids ids;        /* the ids decoded (those the vocabulary has) */
    struct tok_buf text;       /* their text */
    struct tok_buf scratch;    /* the text before a trailing byte-fallback run */
    int fallback;              /* the decoder has a ByteFallback step */
    size_t settled;            /* TEXT's bytes before the trailing byte-fallback run */
    size_t given;              /* bytes of TEXT given out */
    int stopped;               /* 1 + the index of the stop string found, 0 while none */
};

/* A stream decoding with T (NULL: byte-level) that ends at any of the N_STOP strings
 * STOP (which must outlive it). */
void text_stream_init(struct text_stream *s, const struct tokenizer *t, const char *const *stop, size_t n_stop);
void text_stream_free(struct text_stream *s);
/* Adds ID and appends to OUT the text that became stable. Returns 1 + the index of the
 * stop string the text now holds (OUT then ends where it begins; push no more), 0 when
 * none, or -1 with an error when the decoder fails. */
int text_stream_push(struct text_stream *s, int32_t id, struct tok_buf *out);
/* Appends what was held back to OUT: the end of the text, when no stop string ended it. */
void text_stream_finish(struct text_stream *s, struct tok_buf *out);

#endif
