/*
 * train.c: the training loop. Each step: plan the global batch from the sample order,
 * count its targets, run the worker's micro-batches, normalise by the global target
 * count, clip, apply AdamW, report; evaluate and export at the end.
 */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapter.h"
#include "batch.h"
#include "error.h"
#include "fileio.h"
#include "gemm.h"
#include "job.h"
#include "metrics.h"
#include "model.h"
#include "order.h"
#include "tokens.h"

struct train {
    const Lorad__JobSpec *job;
    struct model model;
    struct tokens data, val;
    int has_val;
    struct order order;
    struct batch batch;
    int64_t *ids; /* (G) */
    struct metrics metrics;
    double t0;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int dataset_open(struct tokens *ds, const char *path, const struct model *m, int32_t T) {
    if (tokens_open(ds, path)) return -1;
    return tokens_validate(ds, m->cfg.vocab_size, T);
}

static int model_load(struct train *t) {
    const Lorad__JobSpec *job = t->job;
    struct model_options o = {
        .dir = job->model,
        .full = job->mode == LORAD__MODE__MODE_FULL,
        .max_batch = job_micro_batch(job),
        .seq = job->seq,
        .targets = (const char *const *)job->targets,
        .n_targets = (int32_t)job->n_targets,
        .rank = job->rank,
        .alpha = (float)job->alpha,
        .rslora = job->rslora,
        .init_gaussian = job->init == LORAD__INIT__INIT_GAUSSIAN,
        .seed = job->seed,
    };
    if (model_init(&t->model, &o)) return -1;
    if (job->init_adapter && job->init_adapter[0]) return adapter_import(&t->model, job->init_adapter);
    return 0;
}

static int train_setup(struct train *t, const Lorad__JobSpec *job) {
    memset(t, 0, sizeof *t);
    t->job = job;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    gemm_set_threads(job->threads ? job->threads : (int)(cores > 0 ? cores : 1));
    if (model_load(t)) return -1;
    if (dataset_open(&t->data, job->data, &t->model, job->seq)) return -1;
    t->has_val = job->val && job->val[0];
    if (t->has_val && dataset_open(&t->val, job->val, &t->model, job->seq)) return -1;
    if (dir_make(job->out)) return -1;
    if (metrics_open(&t->metrics, job->out, job->steps, job->log_every)) return -1;
    order_init(&t->order, tokens_n_samples(&t->data, job->seq), job->seed, job->shuffle);
    batch_init(&t->batch, job->batch, job->seq);
    t->ids = xcalloc((size_t)job->batch, sizeof *t->ids);
    int64_t n = model_n_trainable(&t->model);
    metrics_say(&t->metrics, "%lld trainable parameters (%.3f%% of %lld), %lld training samples of %d tokens",
                (long long)n, 100.0 * (double)n / (double)t->model.n_params, (long long)t->model.n_params,
                (long long)t->order.n, job->seq);
    return 0;
}

/* Mean loss over the validation set (or its first --eval-batches micro-batches). */
static int train_eval(struct train *t, double *val_loss) {
    const Lorad__JobSpec *job = t->job;
    const int32_t M = job_micro_batch(job);
    int64_t n = tokens_n_samples(&t->val, job->seq);
    if (job->eval_batches && job->eval_batches * M < n) n = job->eval_batches * M;
    double sum = 0.0;
    int64_t count = 0;
    for (int64_t i = 0; i < n; i += M) {
        int32_t k = (int32_t)(n - i < M ? n - i : M);
        for (int32_t j = 0; j < k; j++) t->ids[j] = i + j;
        if (batch_load(&t->batch, &t->val, t->ids, k)) return -1;
        count += batch_targets(&t->batch);
        sum += batch_loss(&t->model, &t->batch, M);
    }
    *val_loss = count ? sum / (double)count : NAN;
    return 0;
}

static int train_step(struct train *t, int64_t s, struct step_report *r) {
    const Lorad__JobSpec *job = t->job;
    const int32_t G = job->batch;
    double t_start = now_s();
    for (int32_t g = 0; g < G; g++) t->ids[g] = order_sample(&t->order, s * G + g);
    if (batch_load(&t->batch, &t->data, t->ids, G)) return -1;
    int64_t count = batch_targets(&t->batch);
    struct trainable *tr = &t->model.tr;
    memset(tr->g, 0, tr->n * sizeof(float));
    double sum = batch_grads(&t->model, &t->batch, job_micro_batch(job), 1.0f / (float)(count ? count : 1),
                             (float)job->dropout, job->seed, s);
    double loss = count ? sum / (double)count : 0.0;
    if (!isfinite(loss)) {
        err_set("training", "loss is %g at step %lld", loss, (long long)s + 1);
        return err_hint("lower --lr or check the data");
    }
    double norm = trainable_grad_norm(tr);
    if (job->clip > 0 && norm > job->clip) trainable_grad_scale(tr, (float)(job->clip / (norm + 1e-6)));
    double lr = job_lr(job, s);
    trainable_adamw(tr, (float)lr, (float)job->beta1, (float)job->beta2, (float)job->eps,
                    (float)job->weight_decay, s + 1);
    *r = (struct step_report){.step = s + 1, .loss = loss, .lr = lr, .grad_norm = norm,
                              .tokens = (int64_t)G * job->seq, .target_tokens = count,
                              .step_s = now_s() - t_start, .val_loss = NAN};
    return 0;
}

static int train_export(struct train *t) {
    const Lorad__JobSpec *job = t->job;
    const char *name = job->mode == LORAD__MODE__MODE_FULL ? "model" : "adapter";
    char *dir = path_join(job->out, name);
    int rc = job->mode == LORAD__MODE__MODE_FULL
                 ? model_export(&t->model, dir)
                 : adapter_export(&t->model, dir, (const char *const *)job->targets, (int32_t)job->n_targets,
                                  job->model, (float)job->dropout);
    if (rc == 0) metrics_say(&t->metrics, "wrote %s", dir);
    free(dir);
    return rc;
}

static void train_free(struct train *t) {
    metrics_close(&t->metrics);
    free(t->ids);
    batch_free(&t->batch);
    order_free(&t->order);
    if (t->has_val) tokens_close(&t->val);
    tokens_close(&t->data);
    model_free(&t->model);
}

int train_run(const Lorad__JobSpec *job) {
    struct train t;
    int rc = train_setup(&t, job);
    double base_val;
    if (rc == 0 && t.has_val && (rc = train_eval(&t, &base_val)) == 0)
        metrics_say(&t.metrics, "validation loss before training: %.4f", base_val);
    t.t0 = now_s();
    for (int64_t s = 0; s < job->steps && rc == 0; s++) {
        struct step_report r;
        rc = train_step(&t, s, &r);
        int eval_now = t.has_val && ((job->eval_every && (s + 1) % job->eval_every == 0) || s + 1 == job->steps);
        if (rc == 0 && eval_now) rc = train_eval(&t, &r.val_loss);
        r.elapsed_s = now_s() - t.t0;
        if (rc == 0) metrics_step(&t.metrics, &r);
    }
    if (rc == 0) rc = train_export(&t);
    train_free(&t);
    return rc;
}
