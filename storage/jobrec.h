/*
 * jobrec.h: the daemon's job records on disk. Job N of state directory STATE lives in
 * STATE/jobs/N/: job.pb (a packed lorad.JobRecord, rewritten atomically on every change)
 * beside the job's outputs (metrics.jsonl, train.log, checkpoints/, adapter/).
 */
#ifndef LORAD_JOBREC_H
#define LORAD_JOBREC_H

#include <stdint.h>

#include "lorad.pb-c.h"

/* STATE/jobs/ID (malloc'd). */
char *jobrec_dir(const char *state, uint64_t id);
/* Writes R as STATE/jobs/<R->id>/job.pb, creating the directory. -1 with an error. */
int jobrec_write(const char *state, const Lorad__JobRecord *r);
/* Reads one job.pb. NULL with an error naming the file when it is unreadable or not a
 * record of the directory it sits in (ID). */
Lorad__JobRecord *jobrec_read(const char *path, uint64_t id);
/* Every record under STATE/jobs, by increasing id, into a new array *OUT of *N (free
 * each with lorad__job_record__free_unpacked, then the array). A record that cannot be
 * read is passed to SKIPPED with the error line and left out. -1 with an error when
 * STATE/jobs cannot be listed. */
int jobrec_load_all(const char *state, Lorad__JobRecord ***out, size_t *n, void (*skipped)(const char *why));

#endif
