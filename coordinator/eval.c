/*
 * eval.c: distributed evaluation (eval.h).
 */
#include "eval.h"

#include <math.h>
#include <stdlib.h>

#include "error.h"

int eval_run(struct comm *c, struct model *m, struct batch *b, const struct tokens *ds, int32_t M,
             int64_t max_batches, struct eval_result *r) {
    int64_t n = tokens_n_samples(ds, b->T);
    if (max_batches && max_batches < (n + M - 1) / M) n = max_batches * M;
    int64_t lo, hi;
    comm_part(c, n, &lo, &hi);
    int64_t *ids = xcalloc((size_t)b->cap, sizeof *ids);
    double sums[2] = {0.0, 0.0};
    int failed = 0;
    for (int64_t i = lo; i < hi && !failed; i += b->cap) {
        int32_t k = (int32_t)(hi - i < b->cap ? hi - i : b->cap);
        for (int32_t j = 0; j < k; j++) ids[j] = i + j;
        failed = batch_load(b, ds, ids, k) != 0;
        if (!failed) {
            sums[0] += batch_loss(m, b, M);
            sums[1] += (double)batch_targets(b);
        }
    }
    free(ids);
    if (comm_agree(c, failed)) return -1;
    comm_allreduce_doubles(c, sums, 2);
    *r = (struct eval_result){.loss = sums[1] > 0 ? sums[0] / sums[1] : NAN, .targets = (int64_t)sums[1], .samples = n};
    return 0;
}
