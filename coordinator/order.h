/*
 * order.h: which sample each position of the training stream is. Position p of the
 * stream is in epoch p / N; without shuffling it is sample p mod N, with shuffling the
 * (p mod N)-th entry of a permutation seeded by (seed, epoch). Step s of a global batch
 * of G sequences takes positions s·G … s·G+G−1, whatever the number of ranks.
 */
#ifndef LORAD_ORDER_H
#define LORAD_ORDER_H

#include <stdint.h>

struct order {
    int64_t n;     /* samples in the dataset */
    uint64_t seed;
    int shuffle;
    int64_t epoch; /* the epoch PERM holds, -1 before the first */
    int64_t *perm; /* (n) when shuffling */
};

void order_init(struct order *o, int64_t n, uint64_t seed, int shuffle);
/* The sample at stream position P. */
int64_t order_sample(struct order *o, int64_t p);
void order_free(struct order *o);

#endif
