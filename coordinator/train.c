/*
 * train.c: the training loop, run by every rank. Each step: take the step's G samples
 * from the sample order, keep this rank's contiguous part, run the worker's
 * micro-batches, then ONE all-reduce of the gradient block with the step's loss sum,
 * target count and fault flag packed behind it. Every rank then divides by the global
 * target count, clips, and applies the identical AdamW update. Rank 0 reports and
 * checkpoints; a stop request (a signal on any rank) travels in the same all-reduce.
 */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "checkpoint.h"
#include "clock.h"
#include "error.h"
#include "eval.h"
#include "export.h"
#include "fault.h"
#include "fileio.h"
#include "gemm.h"
#include "job.h"
#include "metrics.h"
#include "model.h"
#include "order.h"
#include "provenance.h"
#include "rundir.h"
#include "signals.h"
#include "tokens.h"

/* The floats sent behind the gradient in the step's all-reduce. */
enum step_hdr {
    STEP_HDR_LOSS,   /* sum of counted losses */
    STEP_HDR_COUNT,  /* counted targets */
    STEP_HDR_FAULTS, /* ranks that failed this step */
    STEP_HDR_STOP,   /* ranks asked to stop (a signal) */
    STEP_HDR_CKPT,   /* rank 0's clock says: checkpoint now */
};

struct train {
    const Lorad__JobSpec *job;
    struct comm *comm;
    struct train_ctl *ctl; /* never NULL: the caller's, or an empty one */
    struct model model;
    struct tokens data, val;
    int has_val;
    struct order order;
    struct batch batch;
    int64_t *ids; /* (G) */
    struct metrics metrics;
    struct fault fault;
    struct export_meta meta;
    struct lora_spec lora;         /* the job's adapter set */
    struct peft_pattern *patterns; /* its --rank-pattern and --alpha-pattern */
    struct run_state rs;
    double t0;
    double last_ckpt; /* rank 0: when the last checkpoint was written */
    const char *stop_why; /* rank 0: why the caller's stop hook asked to stop, or NULL */
};


/* The most sequences of a step this rank runs: its part of the batch. */
static int32_t rank_cap(const struct train *t) {
    return (int32_t)(((int64_t)t->job->batch + t->comm->size - 1) / t->comm->size);
}

/* The worker's base dtype of --base-dtype D. */
static enum base_dtype train_base_dtype(Lorad__BaseDtype d) {
    switch (d) {
    case LORAD__BASE_DTYPE__BASEDTYPE_BF16:
        return BASE_DTYPE_BF16;
    case LORAD__BASE_DTYPE__BASEDTYPE_INT8:
        return BASE_DTYPE_INT8;
    case LORAD__BASE_DTYPE__BASEDTYPE_NF4:
        return BASE_DTYPE_NF4;
    default:
        return BASE_DTYPE_F32;
    }
}

static int train_model_load(struct train *t) {
    const Lorad__JobSpec *job = t->job;
    const int32_t micro = job_micro_batch(job);
    struct model_options o = {
        .dir = job->model,
        .full = job->mode == LORAD__MODE__MODE_FULL,
        /* a forward runs at most a micro-batch, and at most this rank's part: activations
         * for no more, so a node's memory does not grow with its ranks */
        .max_batch = micro < rank_cap(t) ? micro : rank_cap(t),
        .seq = job->seq,
        .sets = &t->lora,
        .n_sets = 1,
        .base_dtype = train_base_dtype(job->base_dtype),
        .recompute = job->recompute,
    };
    if (job_lora_spec(job, &t->lora, &t->patterns)) return -1;
    if (t->ctl->resident) {
        if (base_keep(t->ctl->resident, job->model, &t->ctl->base_reused)) return -1;
        o.base = t->ctl->resident;
    }
    if (model_init(&t->model, &o)) return -1;
    if (job->init_adapter && job->init_adapter[0]) return adapter_import(&t->model, 0, job->init_adapter);
    return 0;
}

/* Rank 0: loads the checkpoint --resume names, if any, into the model and T->rs. */
static int resume_local(struct train *t) {
    if (!t->job->resume[0]) return 0;
    struct ckpt c;
    char *path;
    int found, rc = checkpoint_find(t->job, &c, &path, &found);
    if (rc == 0 && found) rc = checkpoint_restore(t->job, &t->model, t->meta.set, &c, &t->rs);
    if (rc == 0 && found)
        fprintf(stderr, "lorad: resuming from %s at step %lld (saved with %d rank%s)\n", path, (long long)t->rs.step,
                c.world_size, c.world_size > 1 ? "s" : "");
    if (rc == 0 && !found) fprintf(stderr, "lorad: no checkpoint to resume from; starting afresh\n");
    ckpt_free(&c);
    free(path);
    return rc;
}

static int setup_local(struct train *t) {
    const Lorad__JobSpec *job = t->job;
    gemm_set_threads(job->threads ? job->threads : comm_node_cores(t->comm));
    gemm_set_backend(job->gemm == LORAD__GEMM__GEMM_OPENBLAS ? GEMM_BACKEND_OPENBLAS : GEMM_BACKEND_ONEDNN);
    if (fault_from_env(&t->fault) || train_model_load(t)) return -1;
    if (provenance_open(&t->data, job->data, job->model, t->model.cfg.vocab_size, job->seq, job->packing,
                        job->truncate)) return -1;
    t->has_val = job->val && job->val[0];
    if (t->has_val && provenance_open(&t->val, job->val, job->model, t->model.cfg.vocab_size, job->seq,
                                       job->packing, job->truncate)) return -1;
    order_init(&t->order, tokens_n_samples(&t->data, job->seq), job->seed, job->shuffle);
    const int32_t cap = rank_cap(t);
    batch_init(&t->batch, cap, job->seq);
    t->ids = xcalloc((size_t)cap, sizeof *t->ids);
    t->meta = (struct export_meta){.base = job->model, .dropout = (float)job->dropout};
    if (t->comm->rank != 0) return 0;
    if (rundir_claim(job->out, job->resume, job->overwrite, 1) || resume_local(t)) return -1;
    if (metrics_open(&t->metrics, job->out, job->steps, job->log_every, t->rs.step)) return -1;
    int64_t n = model_n_trainable(&t->model);
    char plan[160] = "";
    const struct packing *pk = &t->data.plan;
    if (tokens_planned(&t->data))
        snprintf(plan, sizeof plan, " %s %lld examples (%lld longer than %d tokens, %s)",
                 job->packing ? "packed from" : "one a sample of", (long long)t->data.n_docs, (long long)pk->n_split,
                 job->seq + 1, job->truncate ? "truncated" : "split");
    metrics_say(&t->metrics,
                "%lld trainable parameters (%.3f%% of %lld), %lld training samples of %d tokens%s (--seq %d, the "
                "model's context %d), %d rank%s",
                (long long)n, 100.0 * (double)n / (double)t->model.n_params, (long long)t->model.n_params,
                (long long)t->order.n, job->seq, plan, job->seq, t->model.cfg.n_positions, t->comm->size,
                t->comm->size > 1 ? "s" : "");
    const enum base_dtype bd = train_base_dtype(job->base_dtype);
    metrics_say(&t->metrics,
                "activations %.2f MiB (--recompute %s), low-precision frozen weights %.2f MiB (--base-dtype %s%s)",
                (double)t->model.act_bytes / 1048576.0, job->recompute ? "on" : "off",
                (double)t->model.base->shared_bytes / 1048576.0, base_dtype_name(bd),
                bd != BASE_DTYPE_F32 && !gemm_bf16_native() ? ", multiplied in f32: this CPU has no bf16 matmul" : "");
    return 0;
}

static int train_setup(struct train *t, const Lorad__JobSpec *job, struct comm *comm, struct train_ctl *ctl) {
    memset(t, 0, sizeof *t);
    t->job = job;
    t->comm = comm;
    t->ctl = ctl;
    int failed = comm_agree(comm, setup_local(t) != 0);
    /* every rank of the node has mapped the shared bf16 block (or failed): drop its name */
    if (t->model.base) base_unshare(t->model.base);
    if (failed) return -1;
    /* rank 0 may have resumed: every rank takes its parameters, moments and position */
    struct trainable *tr = &t->model.tr;
    comm_bcast(comm, &t->rs, sizeof t->rs);
    comm_bcast(comm, tr->w, (4 * tr->n + TRAINABLE_HDR) * sizeof(float));
    signals_install();
    return 0;
}

/* Mean loss over the validation set (or its first --eval-batches micro-batches). */
static int train_eval(struct train *t, double *val_loss) {
    struct eval_result r;
    if (eval_run(t->comm, &t->model, &t->batch, &t->val, job_micro_batch(t->job), t->job->eval_batches, &r)) return -1;
    *val_loss = r.loss;
    return 0;
}

/* This rank's part of step S, the N sequences from position FIRST of the global batch:
 * gradient sum, loss sum and count into the block. */
static int step_local(struct train *t, int64_t s, int64_t first, int32_t n) {
    const Lorad__JobSpec *job = t->job;
    float *hdr = t->model.tr.hdr;
    if (batch_load(&t->batch, &t->data, t->ids, n)) return -1;
    double sum =
        batch_grads(&t->model, &t->batch, job_micro_batch(job), 1.0f, (float)job->dropout, job->seed, s, first);
    if (t->fault.kind != FAULT_KIND_SKEW && fault_due(&t->fault, t->comm->rank, s + 1) == FAULT_KIND_NAN) sum = NAN;
    if (!isfinite(sum)) {
        err_set("training", "loss is %g at step %lld", sum, (long long)s + 1);
        return err_hint("lower --lr or check the data");
    }
    hdr[STEP_HDR_LOSS] = (float)sum;
    hdr[STEP_HDR_COUNT] = (float)batch_targets(&t->batch);
    return 0;
}

static int train_step(struct train *t, int64_t s, struct step_report *r) {
    const Lorad__JobSpec *job = t->job;
    struct trainable *tr = &t->model.tr;
    const int32_t G = job->batch;
    double t_start = clock_now();
    int64_t lo, hi;
    comm_part(t->comm, G, &lo, &hi);
    for (int64_t g = lo; g < hi; g++) t->ids[g - lo] = order_sample(&t->order, t->rs.samples + g);
    memset(tr->g, 0, (tr->n + TRAINABLE_HDR) * sizeof(float));
    int failed = step_local(t, s, lo, (int32_t)(hi - lo)) != 0;
    fault_pace(&t->fault, t->comm->rank, s + 1, t_start);
    tr->hdr[STEP_HDR_FAULTS] = (float)failed;
    if (t->comm->rank == 0 && t->ctl->stop && !t->stop_why) t->stop_why = t->ctl->stop(t->ctl->ctx);
    tr->hdr[STEP_HDR_STOP] = (float)(signals_stop_requested(NULL) || t->stop_why);
    tr->hdr[STEP_HDR_CKPT] = (float)(t->comm->rank == 0 && job->ckpt_every_seconds > 0 &&
                                     clock_now() - t->last_ckpt >= job->ckpt_every_seconds);
    t->comm->comm_s = t->comm->wait_s = 0.0;
    comm_allreduce_floats(t->comm, tr->g, tr->n + TRAINABLE_HDR);
    if (tr->hdr[STEP_HDR_FAULTS] > 0) return comm_agree(t->comm, failed);
    /* the block holds gradient sums: one pass divides by the count and clips */
    double count = tr->hdr[STEP_HDR_COUNT], per = count > 0 ? 1.0 / count : 1.0;
    double loss = tr->hdr[STEP_HDR_LOSS] * per;
    struct trainable p = model_set_params(&t->model, t->meta.set); /* the job's own parameters */
    double norm = trainable_grad_norm(&p) * per;
    double clip = job->clip > 0 && norm > job->clip ? job->clip / (norm + 1e-6) : 1.0;
    trainable_grad_scale(&p, (float)(per * clip));
    double lr = job_lr(job, s);
    trainable_adamw(&p, lr, job->beta1, job->beta2, (float)job->eps, job->weight_decay, s + 1);
    if (t->fault.kind == FAULT_KIND_SKEW && fault_due(&t->fault, t->comm->rank, s + 1)) p.w[0] += 1e-3f;
    t->rs = (struct run_state){.step = s + 1, .samples = t->rs.samples + G, .tokens = t->rs.tokens + (int64_t)G * job->seq,
                               .loss = loss, .lr = lr};
    *r = (struct step_report){.step = s + 1, .loss = loss, .lr = lr, .grad_norm = norm,
                              .tokens = (int64_t)G * job->seq, .target_tokens = (int64_t)count,
                              .allreduce_bytes = t->comm->mpi ? (int64_t)(tr->n + TRAINABLE_HDR) * 4 : 0,
                              .comm_s = t->comm->comm_s, .wait_s = t->comm->wait_s, .step_s = clock_now() - t_start, .val_loss = NAN};
    return 0;
}

/* Every rank must hold the same parameters; -1 on every rank when they differ. */
static int replicas_check(struct train *t, int64_t step) {
    const struct trainable p = model_set_params(&t->model, t->meta.set);
    if (comm_all_equal(t->comm, trainable_checksum(&p))) return 0;
    err_set("replicas", "trainable parameters differ across ranks after step %lld", (long long)step);
    return err_hint("a rank computed differently; check that every node runs the same lorad and libraries");
}

static int train_export(struct train *t) {
    if (t->comm->rank != 0) return comm_agree(t->comm, 0);
    struct export_set x;
    int rc = export_collect(&t->model, &t->meta, &x);
    char *dir = path_join(t->job->out, x.full ? "model" : "adapter");
    if (rc == 0) rc = export_write_dir(dir, x.full, x.config, x.e, x.n);
    if (rc == 0) metrics_say(&t->metrics, "wrote %s", dir);
    free(dir);
    export_free(&x);
    return comm_agree(t->comm, rc != 0);
}

/* Rank 0 writes the checkpoint of the current step; every rank learns the outcome. */
static int train_checkpoint(struct train *t) {
    if (t->comm->rank != 0) return comm_agree(t->comm, 0);
    char *path = checkpoint_save(t->job, &t->model, &t->meta, &t->rs, t->comm->size, t->order.n);
    if (path) metrics_say(&t->metrics, "checkpoint %s", path);
    t->last_ckpt = clock_now();
    free(path);
    return comm_agree(t->comm, path == NULL);
}

static void train_free(struct train *t) {
    metrics_close(&t->metrics);
    free(t->ids);
    batch_free(&t->batch);
    order_free(&t->order);
    if (t->has_val) tokens_close(&t->val);
    tokens_close(&t->data);
    model_free(&t->model);
    free(t->patterns);
}

/* Whether step S (0-based, just done) ends with a checkpoint. */
static int checkpoint_due(const struct train *t, int64_t s) {
    const Lorad__JobSpec *job = t->job;
    const float *hdr = t->model.tr.hdr;
    return s + 1 == job->steps || (job->ckpt_every && (s + 1) % job->ckpt_every == 0) ||
           hdr[STEP_HDR_CKPT] > 0 || hdr[STEP_HDR_STOP] > 0;
}

/* Runs the steps from the current position; TRAIN_STOPPED when a signal stopped it. */
static int train_loop(struct train *t) {
    const Lorad__JobSpec *job = t->job;
    double base_val;
    if (t->has_val && t->rs.step == 0) {
        if (train_eval(t, &base_val)) return -1;
        if (t->comm->rank == 0) metrics_say(&t->metrics, "validation loss before training: %.6f", base_val);
    }
    t->t0 = t->last_ckpt = clock_now();
    const int64_t first = t->rs.step;
    gemm_profile_clear();
    for (int64_t s = first; s < job->steps; s++) {
        struct step_report r;
        gemm_profile_set(job->profile && s > first); /* the first step makes the primitives */
        int failed = train_step(t, s, &r);
        gemm_profile_set(0);
        if (failed) return -1;
        int last = s + 1 == job->steps;
        int eval_now = t->has_val && ((job->eval_every && (s + 1) % job->eval_every == 0) || last);
        if (eval_now && train_eval(t, &r.val_loss)) return -1;
        int check_now = (job->replica_check_every && (s + 1) % job->replica_check_every == 0) || last;
        if (check_now && replicas_check(t, s + 1)) return -1;
        r.elapsed_s = clock_now() - t->t0;
        if (t->comm->rank == 0) metrics_step(&t->metrics, &r);
        if (t->comm->rank == 0 && t->ctl->step) t->ctl->step(t->ctl->ctx, &r);
        if (checkpoint_due(t, s) && train_checkpoint(t)) return -1;
        if (t->model.tr.hdr[STEP_HDR_STOP] > 0) {
            const char *sig;
            if (t->comm->rank == 0 && signals_stop_requested(&sig))
                metrics_say(&t->metrics, "stopped at step %lld on %s; resume with --resume auto", (long long)s + 1, sig);
            else if (t->comm->rank == 0)
                metrics_say(&t->metrics, "stopped at step %lld: %s", (long long)s + 1,
                            t->stop_why ? t->stop_why : "a signal on another rank");
            return TRAIN_STOPPED;
        }
    }
    if (job->profile) {
        const int64_t n = job->steps - first - 1;
        if (comm_agree(t->comm, t->comm->rank == 0 && metrics_profile(job->out, n > 0 ? n : 0))) return -1;
    }
    return train_export(t);
}

int train_run(const Lorad__JobSpec *job, struct comm *comm, struct train_ctl *ctl) {
    struct train_ctl none = {0};
    struct train t;
    double t0 = clock_now();
    if (!ctl) ctl = &none;
    int rc = train_setup(&t, job, comm, ctl);
    ctl->setup_s = clock_now() - t0;
    if (rc == 0) rc = train_loop(&t);
    train_free(&t);
    return rc;
}
