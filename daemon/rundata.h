/*
 * rundata.h: .jsonl and .txt data for `lorad train`, `lorad submit` and `lorad eval`,
 * prepared in this process exactly as `lorad prep` prepares it (prep_dataset), with the
 * job's --format, --split, --train-on, --add-eos and --max-len, so that training on
 * the JSONL file and on the HDF5 file prep makes of it are the same run.
 *
 * Training (rundata_job, rank 0, before the job goes to the ranks): --data becomes
 * OUT/data/train.h5 and --val OUT/data/val.h5, each written atomically with a record
 * beside it (train.json, val.json) holding its fingerprint: FNV-1a 64 (hash.h) over
 * the source's bytes, the options above and the tokenizer's fingerprint
 * (provenance.h), as 16 hex digits. The job every rank runs names the prepared file,
 * so the ranks read one file and agree (on several hosts, OUT must be on the shared
 * file system, as the data is); the daemon does the same when it starts a job, in the
 * job's directory. A run that starts uses a prepared file whose record has the same
 * fingerprint and prepares it otherwise (--overwrite: always, after removing data/); a
 * run that resumes (rundir_resumes) uses it too, and refuses data whose fingerprint
 * differs: the source changed since the run prepared it.
 *
 * Evaluation (rundata_temp): every rank prepares the data itself into a private
 * temporary directory (the output is the same on every rank), which the caller removes
 * once the file is open.
 */
#ifndef LORAD_RUNDATA_H
#define LORAD_RUNDATA_H

#include "lorad.pb-c.h"

/* How prep turns the data into tokens, and how it runs. */
struct rundata_options {
    Lorad__Format format;
    Lorad__Split split;
    Lorad__Loss train_on;
    int add_eos;
    int64_t max_len;
    const char *template_name; /* --template: "" or NULL for the default */
    int32_t threads; /* 0: every core */
    int quiet;       /* no progress line and no summary */
};

/* -1 with an error when DATA is a token file and O asks for something only prep does
 * (--add-eos is not checked: records from before it have it off). */
int rundata_check(const char *data, const struct rundata_options *o);
/* Rank 0: prepares JOB's .jsonl or .txt --data and --val into OUT/data/ (or takes what
 * is prepared there) and points JOB at the prepared files; token files are left alone.
 * -1 with an error (prep's, naming FILE:LINE, or the changed source on a resume). */
int rundata_job(Lorad__JobSpec *job);
/* The options of EvalSpec S. */
struct rundata_options rundata_eval_options(const Lorad__EvalSpec *s);
/* Prepares SRC for the model in MODEL into a new temporary directory; *PATH is the
 * token file (the caller frees it after rundata_temp_remove). -1 with an error. */
int rundata_temp(const char *model, const char *src, const struct rundata_options *o, char **path);
/* Removes the token file PATH of rundata_temp and its directory. */
void rundata_temp_remove(const char *path);

#endif
