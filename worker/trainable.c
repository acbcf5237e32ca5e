/*
 * trainable.c: the contiguous trainable block and the loops over it: AdamW, the global
 * gradient norm and its scaling (trainable.h).
 */
#include "trainable.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "hash.h"

int32_t trainable_add(struct trainable *t, const char *name, int32_t ndim, const int64_t *shape) {
    CHECK(t->w == NULL && ndim >= 1 && ndim <= 2);
    t->entries = xrealloc(t->entries, (size_t)(t->n_entries + 1) * sizeof *t->entries);
    struct trainable_entry *e = &t->entries[t->n_entries];
    memset(e, 0, sizeof *e);
    CHECK(strlen(name) < sizeof e->name);
    strcpy(e->name, name);
    e->ndim = ndim;
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        numel *= (uint64_t)shape[i];
    }
    e->offset = t->n;
    t->n += numel;
    return t->n_entries++;
}

void trainable_alloc(struct trainable *t) {
    t->w = xalloc_aligned((4 * t->n + TRAINABLE_HDR) * sizeof(float));
    t->g = t->w + t->n;
    t->hdr = t->g + t->n;
    t->m = t->hdr + TRAINABLE_HDR;
    t->v = t->m + t->n;
}

struct trainable trainable_view(const struct trainable *t, uint64_t off, uint64_t n) {
    CHECK(off + n <= t->n);
    return (struct trainable){.w = t->w + off, .g = t->g + off, .m = t->m + off, .v = t->v + off, .n = n};
}

float *trainable_w(const struct trainable *t, int32_t entry) { return t->w + t->entries[entry].offset; }
float *trainable_g(const struct trainable *t, int32_t entry) { return t->g + t->entries[entry].offset; }

void trainable_free(struct trainable *t) {
    free(t->w);
    free(t->entries);
    memset(t, 0, sizeof *t);
}

void trainable_adamw(struct trainable *t, double lr, double beta1, double beta2, float eps, double weight_decay,
                     int64_t step) {
    /* the scalars in double, as torch computes them in Python */
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    const float step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    const float decay = (float)(1.0 - lr * weight_decay);
    const float b1 = (float)beta1, b2 = (float)beta2;
    float *w = t->w, *g = t->g, *m = t->m, *v = t->v;
    for (uint64_t i = 0; i < t->n; i++) {
        w[i] *= decay;
        m[i] = m[i] * b1 + g[i] * (1.0f - b1);
        v[i] = v[i] * b2 + g[i] * g[i] * (1.0f - b2);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        w[i] -= step_size * (m[i] / denom);
    }
}

double trainable_grad_norm(const struct trainable *t) {
    double sum = 0.0;
    for (uint64_t i = 0; i < t->n; i++) sum += (double)t->g[i] * t->g[i];
    return sqrt(sum);
}

void trainable_grad_scale(struct trainable *t, float s) {
    for (uint64_t i = 0; i < t->n; i++) t->g[i] *= s;
}

uint64_t trainable_checksum(const struct trainable *t) { return hash_bytes(HASH_INIT, t->w, t->n * sizeof(float)); }
