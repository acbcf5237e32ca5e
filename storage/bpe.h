/*
 * bpe.h: the "model" of tokenizer.json when its type is BPE: a vocabulary, ranked
 * merges (as "a b" strings or ["a", "b"] pairs), unk_token with fuse_unk,
 * byte_fallback (<0xAB> tokens for characters the vocabulary lacks), ignore_merges
 * (a word in the vocabulary is one token, as Llama 3), continuing_subword_prefix and
 * end_of_word_suffix. Under a ByteLevel pre-tokenizer the model takes raw bytes: its
 * vocabulary is keyed by the bytes each token stands for, not GPT-2's printable form.
 * Merging applies the lowest-ranked adjacent pair first, the leftmost among equals,
 * as Hugging Face's BPE does.
 */
#ifndef LORAD_BPE_H
#define LORAD_BPE_H

#include <jansson.h>
#include <stdint.h>

#include "strmap.h"
#include "tok_text.h"

struct bpe {
    struct strmap vocab;  /* a token (its bytes under byte_level) -> its id */
    struct strmap merges; /* two ids, as 8 bytes -> the merge's rank */
    int32_t *merge_to;    /* rank -> the merged token's id */
    int32_t unk;          /* -1: none */
    int byte_fallback, fuse_unk, ignore_merges, byte_level;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix ("" when none) */
    int32_t byte_id[256];  /* byte_level: the token of each byte; else byte_fallback's <0xAB> (-1: none) */
};

/* Scratch memory of one encoder, reused across words. */
struct bpe_work {
    struct bpe_sym {
        int32_t id, prev, next;
    } *sym;
    struct bpe_pair {
        int32_t rank, pos, left, right;
    } *heap;
    size_t sym_cap, heap_cap;
    struct tok_buf buf;
};

/* Reads MODEL (the "model" object of FILE). BYTE_LEVEL: the pre-tokenizer ends in
 * ByteLevel. TOKENS (id -> the vocabulary's string, *N_TOKENS entries) is filled from
 * the vocabulary; the caller frees it. -1 with an error naming FILE and the problem. */
int bpe_parse(struct bpe *b, const json_t *model, const char *file, int byte_level, char ***tokens, int32_t *n_tokens);
void bpe_free(struct bpe *b);
/* Appends the ids of WORD (N bytes of one pre-token) to OUT. */
void bpe_encode(const struct bpe *b, const char *word, size_t n, struct tok_ids *out, struct bpe_work *w);
void bpe_work_free(struct bpe_work *w);

#endif
