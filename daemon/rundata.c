/*
 * rundata.c: .jsonl and .txt data prepared for training and evaluation (rundata.h).
 */
#include "rundata.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "error.h"
#include "fileio.h"
#include "flags.h"
#include "hash.h"
#include "jsonio.h"
#include "outputs.h"
#include "prep.h"
#include "provenance.h"
#include "rundir.h"

/* What a run keeps in OUT/data/. */
static const char *const data_files[] = {
    OUTPUTS_WITH_TMP("data/train.h5"), OUTPUTS_WITH_TMP("data/train.json"), OUTPUTS_WITH_TMP("data/val.h5"),
    OUTPUTS_WITH_TMP("data/val.json"), "data/", NULL,
};

/* Runs prep on SRC for the model in MODEL with O into OUT (replaced). */
static int data_prep(const char *model, const char *src, const struct rundata_options *o, const char *out) {
    Lorad__PrepSpec ps;
    flags_defaults(&ps.base, &lorad__prep_spec__descriptor);
    char *data[1] = {(char *)src};
    ps.model = (char *)model;
    ps.data = data;
    ps.n_data = 1;
    ps.out = (char *)out;
    ps.overwrite = 1;
    ps.format = o->format;
    ps.split = o->split;
    ps.train_on = o->train_on;
    ps.add_eos = o->add_eos;
    ps.max_len = o->max_len;
    ps.template_ = (char *)(o->template_name ? o->template_name : "");
    ps.threads = o->threads;
    return prep_dataset(&ps, o->quiet);
}

/* The fingerprint of SRC's bytes prepared with O and MODEL's tokenizer, as hex in HEX. */
static int data_fingerprint(const char *model, const char *src, const struct rundata_options *o,
                            char hex[PROVENANCE_HEX + 1]) {
    size_t n;
    char *bytes = file_read_all(src, &n);
    if (!bytes) return -1;
    uint64_t h = hash_bytes(HASH_INIT, bytes, n);
    free(bytes);
    struct provenance p;
    int has = provenance_read(&p, model);
    if (has < 0) return -1;
    char opts[160];
    int len = snprintf(opts, sizeof opts, "format=%d split=%d train_on=%d add_eos=%d max_len=%lld tokenizer=%s",
                       (int)o->format, (int)o->split, (int)o->train_on, o->add_eos, (long long)o->max_len,
                       has ? p.fingerprint : "none");
    h = hash_bytes(h, opts, (size_t)len);
    if (o->template_name && o->template_name[0]) { /* hashed apart: a name may be long */
        h = hash_bytes(h, " template=", 10);
        h = hash_bytes(h, o->template_name, strlen(o->template_name));
    }
    snprintf(hex, PROVENANCE_HEX + 1, "%016llx", (unsigned long long)h);
    return 0;
}

/* The fingerprint the record at PATH holds, in HEX; 0 when there is no readable one. */
static int record_read(const char *path, char hex[PROVENANCE_HEX + 1]) {
    size_t n;
    char *text = access(path, F_OK) == 0 ? file_read_all(path, &n) : NULL;
    json_t *root = text ? json_loadb(text, n, 0, NULL) : NULL;
    const char *fp = json_string_value(json_object_get(root, "fingerprint"));
    int ok = fp && provenance_is_fingerprint(fp);
    if (ok) snprintf(hex, PROVENANCE_HEX + 1, "%s", fp);
    json_decref(root);
    free(text);
    return ok;
}

/* *FIELD (the job's --data or --val, of flag FLAG) prepared as OUT/data/NAME.h5, or
 * taken from there; *FIELD then names it. */
static int data_field(Lorad__JobSpec *job, char **field, const char *flag, const char *name,
                      const struct rundata_options *o) {
    char file[32], rec[32], want[PROVENANCE_HEX + 1], had[PROVENANCE_HEX + 1];
    snprintf(file, sizeof file, "data/%s.h5", name);
    snprintf(rec, sizeof rec, "data/%s.json", name);
    char *h5 = path_join(job->out, file), *record = path_join(job->out, rec);
    int rc = data_fingerprint(job->model, *field, o, want);
    int recorded = rc == 0 && record_read(record, had), same = recorded && !strcmp(had, want);
    if (rc == 0 && rundir_resumes(job->out, job->resume) && recorded && !same) {
        err_set(flag, "%s changed since the run prepared it into %s (fingerprint %s, now %s)", *field, h5, had, want);
        rc = err_hint("resume with the data it was prepared from, or --overwrite to start again");
    } else if (rc == 0 && same && access(h5, F_OK) == 0) {
        fprintf(stderr, "lorad: %s %s: using %s, prepared from the same bytes (fingerprint %s)\n", flag, *field, h5,
                want);
    } else if (rc == 0) {
        unlink(record);
        rc = data_prep(job->model, *field, o, h5);
        json_t *j = json_pack("{ssss}", "source", *field, "fingerprint", want);
        if (rc == 0) rc = jsonio_write(record, j);
        json_decref(j);
        if (rc == 0) fprintf(stderr, "lorad: %s %s: prepared into %s (fingerprint %s)\n", flag, *field, h5, want);
    }
    if (rc == 0) {
        if (*field != protobuf_c_empty_string) free(*field); /* the spec's strings are malloc'd, as protobuf-c frees them */
        *field = h5;
        h5 = NULL;
    }
    free(h5);
    free(record);
    return rc;
}

int rundata_check(const char *data, const struct rundata_options *o) {
    if (dataset_is_text(data) || !(o->format || o->split || o->train_on || o->max_len ||
                                   (o->template_name && o->template_name[0])))
        return 0;
    return err_set("--data", "%s is a token file; --format, --split, --train-on, --max-len and --template apply to "
                             ".jsonl and .txt data", data);
}

int rundata_job(Lorad__JobSpec *job) {
    struct rundata_options o = {.format = job->format, .split = job->split, .train_on = job->train_on,
                                .add_eos = job->add_eos, .max_len = job->max_len, .template_name = job->template_,
                                .threads = job->threads};
    int text = dataset_is_text(job->data), val_text = job->val[0] && dataset_is_text(job->val);
    int resumes = rundir_resumes(job->out, job->resume);
    if (job->overwrite && !resumes && outputs_remove(job->out, data_files)) return -1;
    if (!text && !val_text) return rundata_check(job->data, &o);
    char *dir = path_join(job->out, "data");
    int rc = dir_make(dir);
    free(dir);
    if (rc == 0 && text) rc = data_field(job, &job->data, "--data", "train", &o);
    if (rc == 0 && val_text) rc = data_field(job, &job->val, "--val", "val", &o);
    return rc;
}

struct rundata_options rundata_eval_options(const Lorad__EvalSpec *s) {
    return (struct rundata_options){.format = s->format, .split = s->split, .train_on = s->train_on,
                                    .add_eos = s->add_eos, .max_len = s->max_len, .template_name = s->template_,
                                    .threads = s->threads};
}

int rundata_temp(const char *model, const char *src, const struct rundata_options *o, char **path) {
    const char *tmp = getenv("TMPDIR");
    char *dir = path_join(tmp && tmp[0] ? tmp : "/tmp", "lorad-data-XXXXXX");
    *path = NULL;
    if (!mkdtemp(dir)) {
        err_set(dir, "cannot create a temporary directory: %s", strerror(errno));
        free(dir);
        return -1;
    }
    *path = path_join(dir, "data.h5");
    free(dir);
    return data_prep(model, src, o, *path);
}

void rundata_temp_remove(const char *path) {
    if (!path) return;
    unlink(path);
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    rmdir(dir);
    free(dir);
}
