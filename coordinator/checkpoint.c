/*
 * checkpoint.c: saving, finding and restoring checkpoints (checkpoint.h).
 */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "flags.h"
#include "jsonio.h"
#include "protojson.h"

static char *ckpt_dir(const Lorad__JobSpec *job) { return path_join(job->out, "checkpoints"); }

/* The step of a file named step-NNNNNNNN.h5, or -1. */
static int64_t file_step(const char *name) {
    long long step;
    int end = 0;
    if (sscanf(name, "step-%lld.h5%n", &step, &end) != 1 || name[end] != '\0' || step < 0) return -1;
    return step;
}

static int step_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* Steps of the checkpoint files in DIR, newest first; *N their count. */
static int64_t *steps_list(const char *dir, int32_t *n) {
    *n = 0;
    int64_t *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    for (struct dirent *e; (e = readdir(d));) {
        int64_t s = file_step(e->d_name);
        if (s < 0) continue;
        steps = xrealloc(steps, (size_t)(*n + 1) * sizeof *steps);
        steps[(*n)++] = s;
    }
    closedir(d);
    if (*n) qsort(steps, (size_t)*n, sizeof *steps, step_desc);
    return steps;
}

static char *step_path(const char *dir, int64_t step) {
    char name[64];
    snprintf(name, sizeof name, "step-%08lld.h5", (long long)step);
    return path_join(dir, name);
}

/* Points DIR/latest at NAME: a symlink made under a temporary name, then renamed. */
static int latest_update(const char *dir, const char *name) {
    char tmp_name[64];
    snprintf(tmp_name, sizeof tmp_name, "latest.tmp.%ld", (long)getpid());
    char *tmp = path_join(dir, tmp_name), *latest = path_join(dir, "latest");
    unlink(tmp);
    int rc = 0;
    if (symlink(name, tmp) != 0 || rename(tmp, latest) != 0) {
        rc = err_set(latest, "cannot update: %s", strerror(errno));
        unlink(tmp);
    }
    if (rc == 0) rc = dir_sync_parent(latest);
    free(tmp);
    free(latest);
    return rc;
}

/* Deletes the oldest checkpoints beyond KEEP (never the newest). */
static void keep_newest(const char *dir, int32_t keep) {
    int32_t n;
    int64_t *steps = steps_list(dir, &n);
    for (int32_t i = keep > 0 ? keep : n; i < n; i++) {
        char *p = step_path(dir, steps[i]);
        unlink(p);
        free(p);
    }
    free(steps);
}

static char *job_json(const Lorad__JobSpec *job) {
    json_t *obj = proto_to_json(&job->base);
    char *text = jsonio_text(obj);
    json_decref(obj);
    return text;
}

char *checkpoint_save(const Lorad__JobSpec *job, const struct model *m, const struct export_meta *meta,
                      const struct run_state *rs, int32_t world_size, int64_t n_samples) {
    char *dir = ckpt_dir(job);
    if (dir_make(dir)) {
        free(dir);
        return NULL;
    }
    struct export_set x;
    int rc = export_collect(m, meta, &x);
    const struct trainable p = model_set_params(m, meta->set);
    struct ckpt c = {.step = rs->step, .samples = rs->samples, .tokens = rs->tokens, .n_samples = n_samples,
                     .loss = rs->loss, .lr = rs->lr, .world_size = world_size, .wall_time = (double)time(NULL),
                     .seed = job->seed, .fingerprint = m->base->fingerprint, .group = x.full ? "params" : "adapter",
                     .config_json = x.config, .m = p.m, .v = p.v, .n = p.n};
    c.tensors = xcalloc((size_t)x.n + 1, sizeof *c.tensors);
    for (int32_t i = 0; i < x.n; i++)
        c.tensors[i] = (struct ckpt_tensor){.name = (char *)x.e[i].name, .data = (float *)x.e[i].data,
                                            .ndim = x.e[i].ndim, .shape = {x.e[i].shape[0], x.e[i].shape[1]}};
    c.n_tensors = x.n;
    c.job_len = lorad__job_spec__get_packed_size(job);
    c.job = xmalloc(c.job_len + 1);
    lorad__job_spec__pack(job, c.job);
    c.job_json = job_json(job);
    char *path = step_path(dir, rs->step);
    if (rc == 0) rc = ckpt_write(path, &c);
    if (rc == 0) rc = latest_update(dir, strrchr(path, '/') + 1);
    if (rc == 0) keep_newest(dir, job->keep);
    free(c.job);
    free(c.job_json);
    free(c.tensors);
    export_free(&x);
    free(dir);
    if (rc == 0) return path;
    free(path);
    return NULL;
}

/* Reads the newest valid checkpoint of DIR, saying so when it skips a corrupt one. */
static int find_auto(const char *dir, struct ckpt *c, char **path, int *found) {
    int32_t n;
    int64_t *steps = steps_list(dir, &n);
    char first_error[512] = "";
    int rc = 0;
    *found = 0;
    for (int32_t i = 0; i < n && !*found; i++) {
        char *p = step_path(dir, steps[i]);
        if (ckpt_read(p, c) == 0) {
            *found = 1;
            *path = p;
            if (first_error[0]) fprintf(stderr, "lorad: resuming from the older checkpoint %s\n", p);
            break;
        }
        fprintf(stderr, "lorad: skipping invalid checkpoint: %s\n", err_msg());
        if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", err_msg());
        ckpt_free(c);
        free(p);
    }
    if (!*found && n > 0) {
        err_set(dir, "no valid checkpoint among %d (newest: %s)", n, first_error);
        rc = err_hint("use --resume PATH to pick one, or start afresh without --resume");
    }
    free(steps);
    return rc;
}

int checkpoint_find(const Lorad__JobSpec *job, struct ckpt *c, char **path, int *found) {
    memset(c, 0, sizeof *c);
    *path = NULL;
    if (strcmp(job->resume, "auto") != 0) {
        *found = 1;
        if (ckpt_read(job->resume, c)) return -1;
        *path = xstrdup(job->resume);
        return 0;
    }
    char *dir = ckpt_dir(job);
    int rc = find_auto(dir, c, path, found);
    free(dir);
    return rc;
}

/* export_get_fn over a checkpoint's tensors. */
static int ckpt_get(void *ctx, const char *name, int32_t ndim, const int64_t *shape, float *out) {
    const struct ckpt *c = ctx;
    for (int32_t i = 0; i < c->n_tensors; i++) {
        const struct ckpt_tensor *t = &c->tensors[i];
        if (strcmp(t->name, name)) continue;
        if (t->ndim != ndim || t->shape[0] != shape[0] || (ndim == 2 && t->shape[1] != shape[1]))
            return err_set("checkpoint", "tensor %s has another shape than the model's", name);
        memcpy(out, t->data, (size_t)shape[0] * (ndim == 2 ? (size_t)shape[1] : 1) * sizeof(float));
        return 0;
    }
    return err_set("checkpoint", "has no tensor %s", name);
}

int checkpoint_restore(const Lorad__JobSpec *job, struct model *m, int32_t set, const struct ckpt *c,
                       struct run_state *rs) {
    if (c->fingerprint != m->base->fingerprint) {
        err_set("checkpoint", "was saved from another base model (fingerprint %016llx, --model has %016llx)",
                (unsigned long long)c->fingerprint, (unsigned long long)m->base->fingerprint);
        return err_hint("resume with the --model the run started from");
    }
    Lorad__JobSpec *saved = lorad__job_spec__unpack(NULL, c->job_len, c->job);
    if (!saved) return err_set("checkpoint", "its job spec cannot be decoded");
    int rc = flags_resume_check(&job->base, &saved->base, job->mode == LORAD__MODE__MODE_LORA);
    lorad__job_spec__free_unpacked(saved, NULL);
    if (rc) return -1;
    const struct trainable p = model_set_params(m, set);
    if (c->n != p.n) return err_set("checkpoint", "holds %llu optimizer values, the model trains %llu",
                                    (unsigned long long)c->n, (unsigned long long)p.n);
    if (export_restore(m, set, ckpt_get, (void *)c)) return -1;
    memcpy(p.m, c->m, c->n * sizeof(float));
    memcpy(p.v, c->v, c->n * sizeof(float));
    *rs = (struct run_state){.step = c->step, .samples = c->samples, .tokens = c->tokens, .loss = c->loss, .lr = c->lr};
    return 0;
}
