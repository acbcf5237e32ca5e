/*
 * train_cmd.c: `lorad train` (train_cmd.h).
 */
#include "train_cmd.h"

#include <stdlib.h>

#include "dispatch.h"
#include "error.h"
#include "job.h"
#include "rundata.h"
#include "rundir.h"

int train_cmd(const struct command_call *call) {
    struct comm *comm = call->comm;
    if (comm->rank != 0) return dispatch_follow(comm, NULL);
    Lorad__JobSpec *job = (Lorad__JobSpec *)call->spec[0];
    int rc = -1;
    /* the output is checked here too, so a refusal comes before any rank loads the model */
    if (job && job_validate(job) == 0 && job_resolve(job) == 0 &&
        rundir_claim(job->out, job->resume, job->overwrite, 0) == 0 && rundata_job(job) == 0) {
        size_t n = lorad__job_spec__get_packed_size(job);
        uint8_t *bytes = xmalloc(n + 1);
        lorad__job_spec__pack(job, bytes);
        rc = dispatch_run(comm, bytes, n, NULL);
        free(bytes);
    }
    dispatch_end(comm);
    return rc;
}
