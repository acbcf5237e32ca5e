/*
 * tokens.h: token datasets. Two formats, told apart by their first bytes:
 *   - llm.c / nanoGPT .bin shards: a header of 256 little-endian int32 (magic 20240520
 *     with uint16 tokens, or 20240801 with uint32 tokens; header[1] the version,
 *     header[2] the token count), then the tokens. The count must match the file size.
 *   - HDF5 files with a 1-D integer dataset /tokens and an optional /loss_mask
 *     (uint8, same length; nonzero = the token counts as a target). Files of `lorad
 *     prep` also hold /doc_offsets (int64: each example's first token) and root
 *     attributes saying how they were made (struct tokens_meta): vocab_size (int64),
 *     eos_ids (int64 array), tokenizer_fingerprint (16 hex digits, provenance.h),
 *     tokenizer_files, sources (a JSON list of the input files), format and train_on.
 *
 * Sample i of a dataset with sequence length T is the window of T+1 tokens starting at
 * token i*T: inputs are its first T tokens, targets its last T. A target counts in the
 * loss when its own position's mask byte is nonzero (no mask: every target counts).
 * When the examples are known (/doc_offsets) and tokens_plan has planned them, sample i
 * is instead the i-th sample of packing.h: whole examples, each with its positions.
 */
#ifndef LORAD_TOKENS_H
#define LORAD_TOKENS_H

#include <stdint.h>

#include "packing.h"

#define TOKENS_MAGIC_U16 20240520
#define TOKENS_MAGIC_U32 20240801

enum tokens_format {
    TOKENS_FORMAT_BIN,
    TOKENS_FORMAT_HDF5,
};

struct tokens {
    char *path;
    enum tokens_format format;
    int64_t n_tokens;
    int32_t has_mask;
    /* .bin: the mapping */
    void *map;
    uint64_t map_size;
    int32_t token_bytes; /* 2 or 4 */
    /* HDF5: open handles (hid_t, kept as int64_t so this header needs no hdf5.h) */
    int64_t h5_file, h5_tokens, h5_mask;
    /* HDF5 from lorad prep: the tokenizer's vocabulary size (0: not recorded) and
     * fingerprint (NULL: not recorded) */
    int64_t vocab_size;
    char *fingerprint;
    /* HDF5 from lorad prep: each example's first token (NULL: not recorded) */
    int64_t *doc_offsets; /* (n_docs) */
    int64_t n_docs;
    struct packing plan; /* the samples after tokens_plan (plan.first NULL: windows) */
};

/* What lorad prep records beside the tokens; every part may be absent. */
struct tokens_meta {
    const int64_t *doc_offsets; /* (n_docs) each example's first token; NULL: none */
    int64_t n_docs;
    int64_t vocab_size;     /* 0: not recorded */
    const int64_t *eos_ids; /* (n_eos) */
    int32_t n_eos;
    const char *fingerprint, *tokenizer_files, *sources, *format, *train_on; /* NULL: not recorded */
};

/* Opens and validates PATH: format, header, size, the example offsets. Returns 0, or -1
 * with an error. */
int tokens_open(struct tokens *ds, const char *path);
void tokens_close(struct tokens *ds);
/* When the examples are known, plans the samples of sequence length T (packing.h): PACK
 * several to a sample, or one; TRUNCATE keeps only an example's first T+1 tokens.
 * Without /doc_offsets the samples stay windows. */
void tokens_plan(struct tokens *ds, int32_t T, int pack, int truncate);
/* Whether the samples are planned examples rather than windows. */
int tokens_planned(const struct tokens *ds);
/* Scans every token: -1 with an error naming the file and the first token >= VOCAB,
 * or when the data holds no sample of sequence length T. */
int tokens_validate(const struct tokens *ds, int32_t vocab, int32_t T);
/* Number of samples for sequence length T: (n_tokens - 1) / T windows, or the plan's. */
int64_t tokens_n_samples(const struct tokens *ds, int32_t T);
/* Reads sample I: TOK gets T+1 tokens; MASK (may be NULL) T+1 bytes, 1 for a token that
 * counts as a target (all 1 in a window of a dataset without mask; 0 for the first
 * token of a planned example and for padding); START (may be NULL) T+1 positions, where
 * each token's example starts in the sample (kernels.h; 0 in a window). Returns 0, or
 * -1 with an error (I/O). */
int tokens_read_sample(const struct tokens *ds, int64_t i, int32_t T, int32_t *tok, uint8_t *mask,
                       int32_t *start);
/* Writes an HDF5 dataset: /tokens (uint32, N), when MASK is not NULL /loss_mask, and
 * what META (may be NULL) holds. Atomic (temporary name, fsync, rename). */
int tokens_write_h5(const char *path, const uint32_t *tok, int64_t n, const uint8_t *mask,
                    const struct tokens_meta *meta);

#endif
