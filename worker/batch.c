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

void batch_loss_sets(struct model *m, struct batch *b, double *sums) {
    const int32_t K = m->n_sets, n = b->n;
    const size_t part = (size_t)n * b->T;
    CHECK(K >= 1 && K <= LORA_MAX_SETS && K * n <= b->cap);
    struct lora_rows rows = {.n_sets = K};
    for (int32_t g = 0; g < K; g++) {
        rows.row0[g] = (int32_t)(g * part);
        if (g == 0) continue;
        memcpy(b->inp + g * part, b->inp, part * sizeof *b->inp);
        memcpy(b->tgt + g * part, b->tgt, part * sizeof *b->tgt);
        memcpy(b->mask + g * part, b->mask, part);
        memcpy(b->start + g * part, b->start, part * sizeof *b->start);
    }
    rows.row0[K] = (int32_t)(K * part);
    model_forward(m, b->inp, batch_start(b, 0), b->tgt, b->mask, K * n, &rows, 0.0f);
    const float *losses = model_losses(m);
    for (int32_t g = 0; g < K; g++) /* each set's in row order, as crossentropy_forward sums */
        for (size_t i = g * part; i < (g + 1) * part; i++)
            if (b->mask[i]) sums[g] += losses[i];
}
