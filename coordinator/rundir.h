/*
 * rundir.h: a training run's output directory (--out). A run never mixes its files with
 * another run's: a directory that holds a run is continued (--resume), started again
 * (--overwrite: lorad's own files of the old run are removed first, nothing else), or
 * refused. What counts as a run's files: metrics.jsonl, train.log, profile.jsonl,
 * checkpoints/ (step-N.h5, latest), adapter/ and model/ (the exported result). The
 * data a run prepared from .jsonl or .txt (data/) is kept by its own rules (the
 * daemon's rundata.h), so that claiming OUT again never removes what was prepared for it.
 */
#ifndef LORAD_RUNDIR_H
#define LORAD_RUNDIR_H

/* Whether a run that starts with RESUME ("", "auto", a checkpoint path, or NULL for a
 * daemon's new job, which is "" with a hint of its own) and OVERWRITE
 * may write into OUT, and, when APPLY is set, prepares OUT: removes the old run's files
 * where the rules below say so, and creates OUT.
 *   - RESUME a path: the caller chose the checkpoint; OUT is used as it is.
 *   - RESUME "auto" and OUT holds a checkpoint: it is resumed; nothing is removed.
 *   - RESUME "auto" and no checkpoint: a run stopped before its first checkpoint (logs
 *     only) is started afresh, its files removed; a finished run's adapter or model
 *     without a checkpoint is refused unless OVERWRITE.
 *   - no RESUME: any run file in OUT is refused unless OVERWRITE.
 * -1 with an error naming --out, the first old file and the flags that decide. */
int rundir_claim(const char *out, const char *resume, int overwrite, int apply);
/* Whether a run starting with RESUME ("", "auto" or a checkpoint path) continues one:
 * a path, or "auto" and OUT holds a checkpoint. */
int rundir_resumes(const char *out, const char *resume);

#endif
