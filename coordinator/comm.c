/*
 * comm.c: the MPI layer (comm.h).
 */
#include "comm.h"


#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "signals.h"

#define COMM_ERR_LEN 512

static int launched_by_mpi(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

#define MPI_CHECK(call) CHECK((call) == MPI_SUCCESS)

void comm_init(struct comm *c, int *argc, char ***argv) {
    memset(c, 0, sizeof *c);
    c->size = c->local_size = 1;
    if (!launched_by_mpi()) {
        signals_start();
        return;
    }
    int provided;
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    CHECK(provided >= MPI_THREAD_FUNNELED);
    signals_start();
    c->mpi = 1;
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &c->size));
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_size(node, &c->local_size));
    MPI_CHECK(MPI_Comm_free(&node));
}

void comm_finalize(struct comm *c) {
    if (c->mpi) MPI_Finalize();
    c->mpi = 0;
}

void comm_bcast_bytes(struct comm *c, uint8_t **buf, size_t *n) {
    if (!c->mpi) return;
    uint64_t len = *n;
    MPI_Request req;
    MPI_CHECK(MPI_Ibcast(&len, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD, &req));
    for (int done = 0;;) {
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) break;
        nanosleep(&(struct timespec){.tv_nsec = 2000000}, NULL);
    }
    CHECK(len < (1u << 30));
    if (c->rank != 0) {
        *buf = xmalloc(len ? len : 1);
        *n = len;
    }
    if (len) MPI_CHECK(MPI_Bcast(*buf, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD));
}

void comm_bcast(struct comm *c, void *buf, size_t n) {
    if (!c->mpi) return;
    for (size_t at = 0; at < n; at += (size_t)1 << 30) {
        size_t k = n - at < ((size_t)1 << 30) ? n - at : (size_t)1 << 30;
        MPI_CHECK(MPI_Bcast((char *)buf + at, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD));
    }
}

void comm_part(const struct comm *c, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = n * c->rank / c->size;
    *hi = n * (c->rank + 1) / c->size;
}

void comm_allreduce_floats(struct comm *c, float *buf, size_t n) {
    if (!c->mpi) return;
    /* the ranks meet first, so that comm_s is the reduction alone and wait_s the time this
     * rank waited for the slowest */
    double t = clock_now();
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    c->wait_s += clock_now() - t;
    t = clock_now();
    /* MPI counts are int: reduce in pieces below 2^30 elements */
    for (size_t at = 0; at < n; at += (size_t)1 << 30) {
        size_t k = n - at < ((size_t)1 << 30) ? n - at : (size_t)1 << 30;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + at, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    }
    c->comm_s += clock_now() - t;
}

void comm_allreduce_doubles(struct comm *c, double *buf, size_t n) {
    if (!c->mpi) return;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}

int comm_all_equal(struct comm *c, uint64_t v) {
    if (!c->mpi) return 1;
    uint64_t lo = v, hi = v;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
    return lo == hi;
}

int comm_agree(struct comm *c, int failed) {
    if (!c->mpi) return failed ? -1 : 0;
    int any = failed;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (!any) return 0;
    char mine[COMM_ERR_LEN] = "";
    if (failed) snprintf(mine, sizeof mine, "%s", err_msg());
    char *all = c->rank == 0 ? xcalloc((size_t)c->size, COMM_ERR_LEN) : NULL;
    MPI_CHECK(MPI_Gather(mine, COMM_ERR_LEN, MPI_CHAR, all, COMM_ERR_LEN, MPI_CHAR, 0, MPI_COMM_WORLD));
    if (c->rank == 0 && !failed) {
        for (int r = 1; r < c->size; r++) {
            const char *msg = all + (size_t)r * COMM_ERR_LEN;
            if (msg[0]) {
                char thing[32];
                snprintf(thing, sizeof thing, "rank %d", r);
                err_set(thing, "%.*s", COMM_ERR_LEN - 1, msg);
                break;
            }
        }
    }
    free(all);
    return -1;
}

int comm_node_cores(const struct comm *c) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long per_rank = (cores > 0 ? cores : 1) / (c->local_size > 0 ? c->local_size : 1);
    return per_rank > 0 ? (int)per_rank : 1;
}
