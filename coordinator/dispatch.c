/*
 * dispatch.c: jobs from rank 0 to every rank (dispatch.h).
 */
#include "dispatch.h"

#include <stdlib.h>

#include "error.h"

/* Runs the packed spec BYTES (N > 0) on this rank. */
static int spec_run(struct comm *c, const uint8_t *bytes, size_t n, struct train_ctl *ctl) {
    Lorad__JobSpec *job = lorad__job_spec__unpack(NULL, n, bytes);
    CHECK(job != NULL);
    int rc = train_run(job, c, ctl);
    lorad__job_spec__free_unpacked(job, NULL);
    return rc;
}

int dispatch_run(struct comm *c, const uint8_t *spec, size_t n, struct train_ctl *ctl) {
    CHECK(c->rank == 0 && n > 0);
    uint8_t *bytes = (uint8_t *)spec;
    comm_bcast_bytes(c, &bytes, &n);
    return spec_run(c, spec, n, ctl);
}

void dispatch_end(struct comm *c) {
    uint8_t *none = NULL;
    size_t n = 0;
    comm_bcast_bytes(c, &none, &n);
}

int dispatch_follow(struct comm *c, struct train_ctl *ctl) {
    int rc = 0;
    for (;;) {
        uint8_t *bytes = NULL;
        size_t n = 0;
        comm_bcast_bytes(c, &bytes, &n);
        if (n) rc = spec_run(c, bytes, n, ctl);
        free(bytes);
        if (!n) return rc;
    }
}
