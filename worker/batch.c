/*
 * batch.c: loading samples into a batch and running the model over it (batch.h).
 */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

void batch_init(struct batch *b, int32_t cap, int32_t T) {
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->T = T;
    b->inp = xcalloc((size_t)cap * T, sizeof *b->inp);
    b->tgt = xcalloc((size_t)cap * T, sizeof *b->tgt);
    b->mask = xcalloc((size_t)cap * T, sizeof *b->mask);
    b->start = xcalloc((size_t)cap * T, sizeof *b->start);
    b->window = xcalloc((size_t)T + 1, sizeof *b->window);
    b->wmask = xcalloc((size_t)T + 1, sizeof *b->wmask);
    b->wstart = xcalloc((size_t)T + 1, sizeof *b->wstart);
}

void batch_free(struct batch *b) {
    free(b->inp);
    free(b->tgt);
    free(b->mask);
    free(b->start);
    free(b->window);
    free(b->wmask);
    free(b->wstart);
    memset(b, 0, sizeof *b);
}

int batch_load(struct batch *b, const struct tokens *ds, const int64_t *ids, int32_t n) {
    CHECK(n <= b->cap);
    const size_t T = (size_t)b->T;
    for (int32_t i = 0; i < n; i++) {
        if (tokens_read_sample(ds, ids[i], b->T, b->window, b->wmask, b->wstart)) return -1;
        memcpy(b->inp + i * T, b->window, T * sizeof *b->inp);
        memcpy(b->tgt + i * T, b->window + 1, T * sizeof *b->tgt);
        memcpy(b->mask + i * T, b->wmask + 1, T);
        memcpy(b->start + i * T, b->wstart, T * sizeof *b->start);
    }
    b->n = n;
    b->packed = tokens_planned(ds);
    return 0;
}

int64_t batch_targets(const struct batch *b) {
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)b->n * b->T; i++) n += b->mask[i] != 0;
    return n;
}

const int32_t *batch_start(const struct batch *b, int32_t i) {
    return b->packed ? b->start + (size_t)i * b->T : NULL;
}

double batch_grads(struct model *m, const struct batch *b, int32_t M, float scale, float p, uint64_t seed,
                   int64_t step, int64_t first) {
    double sum = 0.0;
    const size_t T = (size_t)b->T;
    for (int32_t i = 0; i < b->n; i += M) {
        int32_t k = b->n - i < M ? b->n - i : M;
        struct lora_rows rows = {.n_sets = m->n_sets, .row0 = {0, k * b->T},
                                 .dp = {{.p = p, .seed = seed, .step = step, .first = first + i, .T = b->T}}};
        sum += model_forward(m, b->inp + i * T, batch_start(b, i), b->tgt + i * T, b->mask + i * T, k, &rows, scale);
        model_backward(m, b->inp + i * T, k, &rows);
    }
    return sum;
}

double batch_loss(struct model *m, const struct batch *b, int32_t M) {
    double sum = 0.0;
    const size_t T = (size_t)b->T;
    for (int32_t i = 0; i < b->n; i += M) {
        int32_t k = b->n - i < M ? b->n - i : M;
        sum += model_forward(m, b->inp + i * T, batch_start(b, i), b->tgt + i * T, b->mask + i * T, k, NULL, 0.0f);
    }
    return sum;
}

/* B's sequences [I, I + N) into JOINT's rows from ROW, each padded to JOINT's T. */
static void rows_join(struct batch *joint, int32_t row, const struct batch *b, int32_t i, int32_t n) {
    const size_t T = (size_t)joint->T, t = (size_t)b->T;
    for (int32_t k = 0; k < n; k++) {
        const size_t to = (size_t)(row + k) * T, from = (size_t)(i + k) * t;
        memcpy(joint->inp + to, b->inp + from, t * sizeof *b->inp);
        memcpy(joint->tgt + to, b->tgt + from, t * sizeof *b->tgt);
        memcpy(joint->mask + to, b->mask + from, t);
        memset(joint->inp + to + t, 0, (T - t) * sizeof *b->inp);
        memset(joint->tgt + to + t, 0, (T - t) * sizeof *b->tgt);
        memset(joint->mask + to + t, 0, T - t);
        for (size_t c = 0; c < T; c++) /* padding: each position an example of its own */
            joint->start[to + c] = c >= t ? (int32_t)c : b->packed ? b->start[from + c] : 0;
    }
}

void batch_run_jobs(struct model *m, const struct batch_job *jobs, int32_t K, struct batch *joint, int grads,
                    double *sums) {
    CHECK(K == m->n_sets && joint->T == m->T);
    int32_t forwards = 0, packed = 0;
    for (int32_t j = 0; j < K; j++) {
        const int32_t f = (jobs[j].b->n + jobs[j].micro - 1) / jobs[j].micro;
        forwards = f > forwards ? f : forwards;
        packed |= jobs[j].b->packed;
        CHECK(jobs[j].b->T <= m->T);
    }
    for (int32_t f = 0; f < forwards; f++) {
        struct lora_rows rows = {.n_sets = K};
        int32_t n = 0;
        for (int32_t j = 0; j < K; j++) {
            const struct batch_job *job = &jobs[j];
            const int32_t i = f * job->micro, k = i >= job->b->n ? 0 : job->b->n - i < job->micro ? job->b->n - i : job->micro;
            rows.row0[j] = n * m->T;
            rows.dp[j] = (struct dropout){.p = job->p, .seed = job->seed, .step = job->step, .first = job->first + i,
                                          .T = m->T};
            rows_join(joint, n, job->b, i, k);
            n += k;
        }
        rows.row0[K] = n * m->T;
        model_forward(m, joint->inp, packed ? joint->start : NULL, joint->tgt, joint->mask, n, &rows, grads ? 1.0f : 0.0f);
        if (grads) model_backward(m, joint->inp, n, &rows);
        const float *losses = model_losses(m);
        for (int32_t j = 0; j < K; j++)
            for (size_t r = (size_t)rows.row0[j]; r < (size_t)rows.row0[j + 1]; r++)
                if (joint->mask[r]) sums[j] += losses[r];
    }
}
