/*
 * tokenizer.h: a Hugging Face tokenizer, read from a model directory: tokenizer.json,
 * or GPT-2's legacy vocab.json + merges.txt. Encoding runs Hugging Face's pipeline:
 * the added tokens are split out of the text (special-token strings in text become
 * their tokens, as HF does by default, with lstrip, rstrip, single_word and
 * normalized), each piece between them is normalized (tok_normalize.h),
 * pre-tokenized (tok_pretok.h) and encoded by the model (bpe.h), and the
 * post-processor adds the special tokens (tok_post.h). Decoding runs the decoder
 * (tok_decode.h). A component lorad lacks is refused with one line naming it.
 */
#ifndef LORAD_TOKENIZER_H
#define LORAD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "bpe.h"
#include "strmap.h"
#include "tok_decode.h"
#include "tok_normalize.h"
#include "tok_post.h"
#include "tok_pretok.h"
#include "tok_text.h"

struct tokenizer {
    char **token;           /* id -> its string (vocabulary form; an added token's content) */
    unsigned char *special; /* id -> 1 for a special added token */
    int32_t n_tokens;       /* ids are 0..n_tokens-1 (some may have no token: NULL) */
    struct tok_added {
        char *content;
        size_t len;
        int32_t id;
        int special, lstrip, rstrip, single_word, normalized;
    } *added;
    int n_added;
    unsigned char added_first[2][256]; /* [normalized][byte]: an added token starts with it */
    struct tok_normalizer normalizer;
    struct tok_pretok pretok;
    struct bpe bpe;
    struct tok_post post;
    struct tok_decoder decoder;
};

/* Reads DIR's tokenizer.json, or its vocab.json + merges.txt. -1 with an error naming
 * the file and the problem (a type lorad lacks is named). */
int tokenizer_open(struct tokenizer *t, const char *dir);
void tokenizer_free(struct tokenizer *t);
/* ID's string, or NULL when the vocabulary has none. */
const char *tokenizer_token(const struct tokenizer *t, int32_t id);
/* OUT = the text of the N ids IDS (without the special ones when SKIP_SPECIAL). -1 with
 * an error when an id is outside the vocabulary. */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, int skip_special, struct tok_buf *out);

/* One thread's encoder: its scratch memory and a cache of the words it has seen. Encoders
 * on several threads may share one tokenizer (its regexes keep a match block per thread). */
struct tok_encoder {
    const struct tokenizer *t;
    struct strmap cache;     /* a word -> the offset of its ids in cache_ids */
    struct tok_ids cache_ids; /* per word: its id count, then its ids */
    struct bpe_work work;
    struct tok_pieces pieces, scratch[2];
    struct tok_buf normalized;
};

void tok_encoder_init(struct tok_encoder *e, const struct tokenizer *t);
void tok_encoder_free(struct tok_encoder *e);
/* Appends the ids of TEXT (N bytes) to OUT, with the post-processor's special tokens
 * when ADD_SPECIAL. -1 with an error when TEXT is not valid UTF-8 (the first bad byte's
 * offset) or a regex gives up; the error's thing is "text", for the caller to name. */
int tok_encode(struct tok_encoder *e, const char *text, size_t n, int add_special, struct tok_ids *out);

#endif
