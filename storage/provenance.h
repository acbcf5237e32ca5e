/*
 * provenance.h: which tokenizer a token file was made with, and the check that a model
 * matches it before training or evaluation.
 *
 * A tokenizer's fingerprint is FNV-1a 64 (hash.h) over the files tokenizer_open reads
 * (tokenizer.h), in order: tokenizer.json, or else vocab.json then merges.txt; for each
 * file, its name, a NUL byte, its size as 8 little-endian bytes, then its bytes. It is
 * written as 16 lower-case hex digits. The same bytes give the same fingerprint
 * wherever they are; a tokenizer saved in another form (legacy files, or reformatted
 * JSON) gives another.
 */
#ifndef LORAD_PROVENANCE_H
#define LORAD_PROVENANCE_H

#include <stdint.h>

#include "tokens.h"

#define PROVENANCE_HEX 16

struct provenance {
    char fingerprint[PROVENANCE_HEX + 1];
    char files[64]; /* the files hashed: "tokenizer.json" or "vocab.json,merges.txt" */
};

/* The fingerprint of DIR's tokenizer files into P: 1, or 0 when DIR has none, or -1
 * with an error naming the file that cannot be read. */
int provenance_read(struct provenance *p, const char *dir);
/* Whether S is a fingerprint as written: PROVENANCE_HEX lower-case hex digits. */
int provenance_is_fingerprint(const char *s);
/* Refuses the token file DS for the model in DIR, whose vocabulary is VOCAB, when DS
 * records a tokenizer vocabulary larger than VOCAB, or a fingerprint and DIR has a
 * tokenizer with another. A smaller vocabulary is allowed: models pad their embedding
 * (Qwen2's 151936 rows for 151665 tokens). 0, or -1 with one line naming DS. */
int provenance_check(const struct tokens *ds, const char *dir, int32_t vocab);
/* Opens the token file PATH for the model in DIR (vocabulary VOCAB) and sequence length
 * T: tokens_open, provenance_check, tokens_plan (PACK, TRUNCATE), tokens_validate. 0, or
 * -1 with an error; DS needs tokens_close either way. */
int provenance_open(struct tokens *ds, const char *path, const char *dir, int32_t vocab, int32_t T, int pack,
                    int truncate);

#endif
