/*
 * eval.c: distributed evaluation (eval.h).
 */
#include "eval.h"

#include <math.h>
#include <stdlib.h>

#include "error.h"

int eval_run(struct comm *c, struct model *m, struct batch *b, const struct tokens *ds, int32_t M,
             int64_t max_batches, struct eval_result *r) {
    const int32_t K = m->n_sets > 1 ? m->n_sets : 1; /* a model of several sets: each its loss */
    int64_t n = tokens_n_samples(ds, b->T);
    if (max_batches && max_batches < (n + M - 1) / M) n = max_batches * M;
    int64_t lo, hi;
    comm_part(c, n, &lo, &hi);
    int64_t *ids = xcalloc((size_t)b->cap, sizeof *ids);
    struct batch joint = {0}; /* B's samples once for every set, in one forward */
    struct batch_job jobs[LORA_MAX_SETS];
    for (int32_t g = 0; g < K; g++) jobs[g] = (struct batch_job){.b = b, .micro = b->cap};
    if (K > 1) batch_init(&joint, K * b->cap, b->T);
    double sums[LORA_MAX_SETS + 1] = {0.0}; /* each set's loss, then the targets */
    int failed = 0;
    for (int64_t i = lo; i < hi && !failed; i += b->cap) {
        int32_t k = (int32_t)(hi - i < b->cap ? hi - i : b->cap);
        for (int32_t j = 0; j < k; j++) ids[j] = i + j;
        failed = batch_load(b, ds, ids, k) != 0;
        if (failed) break;
        sums[K] += (double)batch_targets(b);
        if (K > 1) batch_run_jobs(m, jobs, K, &joint, 0, sums);
        else sums[0] += batch_loss(m, b, M);
    }
    free(ids);
    batch_free(&joint);
    if (comm_agree(c, failed)) return -1;
    comm_allreduce_doubles(c, sums, K + 1);
    for (int32_t g = 0; g < K; g++)
        r[g] = (struct eval_result){.loss = sums[K] > 0 ? sums[g] / sums[K] : NAN, .targets = (int64_t)sums[K],
                                    .samples = n};
    return 0;
}
