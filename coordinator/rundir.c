/*
 * rundir.c: what a training run keeps in its output directory, and when a new run may
 * use a directory that holds an old one (rundir.h).
 */
#include "rundir.h"

#include <stdio.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "outputs.h"

/* Every file lorad's training writes into OUT (keep in step with metrics.c, checkpoint.c
 * and train.c's export). */
static const char *const run_files[] = {
    OUTPUTS_WITH_TMP("metrics.jsonl"),
    "train.log",
    OUTPUTS_WITH_TMP("profile.jsonl"),
    OUTPUTS_WITH_TMP("checkpoints/step-[0-9]*.h5"),
    OUTPUTS_WITH_TMP("checkpoints/latest"),
    "checkpoints/",
    OUTPUTS_WITH_TMP("adapter/adapter_config.json"),
    OUTPUTS_WITH_TMP("adapter/adapter_model.safetensors"),
    "adapter/",
    OUTPUTS_WITH_TMP("model/config.json"),
    OUTPUTS_WITH_TMP("model/model.safetensors"),
    "model/",
    NULL,
};
static const char *const ckpt_files[] = {"checkpoints/step-[0-9]*.h5", NULL};
static const char *const result_files[] = {"adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                                           "model/config.json", "model/model.safetensors", NULL};

/* The refusal: OUT holds N run files, FIRST among them; RESUMING: under --resume auto;
 * NEW_JOB: a daemon's job, which cannot take --resume. */
static int refuse(const char *out, const char *first, int n, int resuming, int new_job) {
    char more[48] = "";
    if (n > 1) snprintf(more, sizeof more, " and %d more", n - 1);
    if (new_job) {
        err_set("--out", "%s holds the files of a run the daemon has no record of (%s%s)", out, first, more);
        return err_hint("move them away, or submit with --overwrite to remove them");
    }
    if (resuming) {
        err_set("--out", "%s holds a finished run (%s%s) but no checkpoint to resume from", out, first, more);
        return err_hint("--overwrite starts the run again, or choose another --out");
    }
    err_set("--out", "%s holds a run (%s%s)", out, first, more);
    return err_hint("--resume auto continues it, --overwrite starts it again");
}

int rundir_claim(const char *out, const char *resume, int overwrite, int apply) {
    const int new_job = resume == NULL;
    if (new_job) resume = "";
    const int is_auto = strcmp(resume, "auto") == 0;
    if (resume[0] && !is_auto) return apply ? dir_make(out) : 0;
    char first[256];
    if (is_auto && outputs_find(out, ckpt_files, NULL, 0) > 0) return apply ? dir_make(out) : 0;
    int n = outputs_find(out, run_files, first, sizeof first);
    if (n > 0 && !overwrite) {
        char result[256];
        int finished = outputs_find(out, result_files, result, sizeof result);
        if (!is_auto) return refuse(out, first, n, 0, new_job);
        if (finished) return refuse(out, result, n, 1, 0);
    }
    if (!apply) return 0;
    if (n > 0 && outputs_remove(out, run_files)) return -1;
    return dir_make(out);
}

int rundir_resumes(const char *out, const char *resume) {
    if (!resume[0]) return 0;
    return strcmp(resume, "auto") != 0 || outputs_find(out, ckpt_files, NULL, 0) > 0;
}
