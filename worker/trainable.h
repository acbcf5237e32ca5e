/*
 * trainable.h: the one contiguous block of trainable parameters. Every adapter's A and
 * B (LoRA mode) or every weight (full mode) lives in W; the gradient G and AdamW's
 * moments M and V mirror it one-to-one, in the same allocation. A table of
 * {name, offset, shape} entries maps tensor names into the block, so one all-reduce,
 * one memset, one AdamW loop and one norm loop cover everything. TRAINABLE_HDR floats
 * follow the gradient directly, so the coordinator can send per-step scalars (loss,
 * counts, flags) in the same all-reduce as the gradient.
 */
#ifndef LORAD_TRAINABLE_H
#define LORAD_TRAINABLE_H

#include <stdint.h>

struct trainable_entry {
    char name[128];
    uint64_t offset; /* in floats from the start of the block */
    int32_t ndim;
    int64_t shape[2];
};

#define TRAINABLE_HDR 16

struct trainable {
    float *w, *g, *m, *v; /* each n floats, one allocation, tensors packed without gaps */
    float *hdr;           /* TRAINABLE_HDR floats right after g */
    uint64_t n;
    struct trainable_entry *entries;
    int32_t n_entries;
};

/* Registers a tensor before trainable_alloc; returns its entry index. */
int32_t trainable_add(struct trainable *t, const char *name, int32_t ndim, const int64_t *shape);
/* Allocates W, G (+ HDR), M, V, zeroed, for every registered tensor. */
void trainable_alloc(struct trainable *t);
/* The floats [OFF, OFF + N) of T's block as a trainable of their own, without entries or
 * header: AdamW, the norm, the scaling and the checksum over just those (one job's
 * adapter set when several share the block). */
struct trainable trainable_view(const struct trainable *t, uint64_t off, uint64_t n);
/* Entry ENTRY's parameters and gradient inside the block. */
float *trainable_w(const struct trainable *t, int32_t entry);
float *trainable_g(const struct trainable *t, int32_t entry);
void trainable_free(struct trainable *t);

/* AdamW exactly as torch.optim.AdamW (decoupled decay p -= lr·wd·p, bias correction)
 * for step T (1-based) over all n parameters. */
void trainable_adamw(struct trainable *t, double lr, double beta1, double beta2, float eps, double weight_decay,
                     int64_t step);
/* Global L2 norm of the gradient, accumulated in double. */
double trainable_grad_norm(const struct trainable *t);
/* G *= s. */
void trainable_grad_scale(struct trainable *t, float s);
/* FNV-1a hash of W's bytes: equal on every rank while the replicas agree. */
uint64_t trainable_checksum(const struct trainable *t);

#endif
