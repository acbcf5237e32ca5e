/*
 * packing.h: the samples of a token file whose examples are known (/doc_offsets).
 *
 * A sample holds T+1 tokens, as a window of an unpacked file does: inputs are its first
 * T, targets its last T. Packed, it holds whole examples one after another, each with
 * its own positions and attention (kernels.h), then padding that counts no loss:
 *   - An example of N tokens has N-1 targets. One of more than T+1 tokens is split into
 *     pieces of at most T+1 tokens that overlap by one (piece k is its tokens kT ..
 *     kT+T), so that every target is in exactly one piece; with TRUNCATE only the first
 *     piece is kept. An example of one token has no target and no piece.
 *   - First-fit decreasing: the pieces, longest first (ties in file order), each go into
 *     the first sample with room for it, a new one when none has. Samples are numbered
 *     in the order they were opened, and a sample's pieces are in the order they came.
 *     Without PACK every piece is a sample of its own.
 * The plan depends on the file and T only: the data order (order.h) shuffles samples by
 * the seed and the epoch, as it does unpacked windows.
 */
#ifndef LORAD_PACKING_H
#define LORAD_PACKING_H

#include <stdint.h>

/* Tokens [begin, begin + n) of the file. */
struct pack_piece {
    int64_t begin;
    int32_t n;
};

struct packing {
    int32_t T;
    int64_t n_samples;
    int64_t *first;            /* (n_samples + 1): sample i holds pieces first[i] .. first[i+1]-1 */
    struct pack_piece *pieces; /* (first[n_samples]) in sample order */
    int64_t n_split;           /* examples of more than T+1 tokens */
    int64_t n_cut_targets;     /* targets TRUNCATE dropped */
    int64_t n_tokens;          /* tokens the samples hold, padding not counted */
};

/* Plans the samples of a file of N_TOKENS tokens whose N_DOCS examples start at DOC
 * (ascending, DOC[0] = 0; example i ends where example i+1 starts, the last at
 * N_TOKENS). Never fails; the plan may hold no sample. packing_free releases it. */
void packing_plan(struct packing *p, const int64_t *doc, int64_t n_docs, int64_t n_tokens, int32_t T, int pack,
                  int truncate);
void packing_free(struct packing *p);

#endif
