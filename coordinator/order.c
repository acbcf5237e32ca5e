/*
 * order.c: the sample order of the training stream (order.h): a Fisher-Yates
 * permutation per epoch from the counter RNG, rebuilt when the epoch changes.
 */
#include "order.h"

#include <stdlib.h>

#include "error.h"
#include "rng.h"

void order_init(struct order *o, int64_t n, uint64_t seed, int shuffle) {
    o->n = n;
    o->seed = seed;
    o->shuffle = shuffle;
    o->epoch = -1;
    o->perm = shuffle ? xmalloc((size_t)n * sizeof *o->perm) : NULL;
}

static void order_shuffle(struct order *o, int64_t epoch) {
    uint64_t key = rng_key(RNG_STREAM_SHUFFLE, o->seed, (uint64_t)epoch, 0);
    for (int64_t i = 0; i < o->n; i++) o->perm[i] = i;
    for (int64_t i = o->n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_bits(key, (uint64_t)i) % (uint64_t)(i + 1));
        int64_t t = o->perm[i];
        o->perm[i] = o->perm[j];
        o->perm[j] = t;
    }
    o->epoch = epoch;
}

int64_t order_sample(struct order *o, int64_t p) {
    if (!o->shuffle) return p % o->n;
    int64_t epoch = p / o->n;
    if (epoch != o->epoch) order_shuffle(o, epoch);
    return o->perm[p % o->n];
}

void order_free(struct order *o) {
    free(o->perm);
    o->perm = NULL;
}
