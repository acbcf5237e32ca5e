/*
 * example_tokens.h: an example (dataset.h) as token ids and loss-mask bytes, the way
 * TRL's SFTTrainer makes them, and the EOS ids that end examples.
 *
 * Ids: the tokenizer's encoding of the example's whole text (its segments joined), so
 * a prompt and its completion are tokenized as the one string Hugging Face would see,
 * then the EOS, then the special tokens of the tokenizer's post-processor around them
 * (a BOS for Llama-style tokenizers), as `tokenizer(prompt + completion + eos_token)`
 * gives them in TRL.
 *
 * Mask, 1 where a token counts as a target in the loss:
 *   - a segment boundary at byte b of the text falls after the first k ids of the text,
 *     k the number of ids of the text before b alone: for prompt/completion TRL's
 *     len(tokenize(prompt)). When those k ids are not where the text's ids start (a
 *     token straddles the boundary, "Mismatch between tokenized prompt and the start of
 *     tokenized prompt+completion" in TRL) the example counts in BOUNDARY and is masked
 *     by k all the same, as TRL does (with ALL no boundary matters, and none is counted);
 *   - a text token counts when its segment does, or when ALL;
 *   - the post-processor's tokens before the text never count; the EOS and its tokens
 *     after the text always do;
 *   - the example's first token never counts: nothing of the example precedes it (TRL's
 *     labels[position_ids == 0] = -100 when it packs).
 * The EOS (the first of the EOS ids) is appended unless the text's ids already end with
 * it, as TRL appends eos_token unless the text ends with it, or the post-processor ends
 * the example with it itself. MAX_LEN > 0 keeps the first MAX_LEN tokens (TRL's
 * truncation_mode "keep_start").
 */
#ifndef LORAD_EXAMPLE_TOKENS_H
#define LORAD_EXAMPLE_TOKENS_H

#include <stdint.h>

#include "dataset.h"
#include "tokenizer.h"

#define EXAMPLE_EOS_MAX 16

/* The ids that end an example (the first is appended), and where they came from. */
struct example_eos {
    int32_t ids[EXAMPLE_EOS_MAX];
    int n;
    char source[160]; /* "config.json eos_token_id", "the special token </s>" */
};

/* The EOS ids of the tokenizer T read from DIR: DIR/config.json's eos_token_id (an
 * integer or a list of them) when it has one, else the one special added token of T
 * named <|endoftext|>, </s>, <|end_of_text|> or <eos>. EOS->n is 0 when there is none;
 * -1 with an error when config.json is malformed, names ids T lacks, or T has several
 * such tokens. */
int example_eos_find(struct example_eos *eos, const char *dir, const struct tokenizer *t);

struct example_encoding {
    int all;                       /* every text token counts (--train-on all) */
    const struct example_eos *eos; /* NULL or no ids: none appended */
    int64_t max_len;               /* 0: no limit */
};

/* One example's tokens. */
struct example_tokens {
    struct tok_ids ids;
    struct tok_buf mask; /* one byte a token, 0 or 1 */
    int truncated;       /* MAX_LEN cut it */
    int boundary;        /* a segment boundary fell inside a token */
    struct tok_ids prefix; /* scratch */
};

/* EX as OUT's ids and mask (replacing what OUT held), encoded with E. -1 with an error
 * when the tokenizer refuses the text. */
int example_encode(struct tok_encoder *e, const struct example *ex, const struct example_encoding *o,
                   struct example_tokens *out);
void example_tokens_free(struct example_tokens *t);

#endif
