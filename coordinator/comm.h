/*
 * comm.h: every MPI call lorad makes. A process started by mpirun (or srun) initialises
 * MPI; a process started on its own runs as a world of one without touching MPI, so a
 * plain `lorad train` needs no MPI runtime at all. Workers never call MPI; the
 * coordinator goes through these functions.
 */
#ifndef LORAD_COMM_H
#define LORAD_COMM_H

#include <stddef.h>
#include <stdint.h>

struct comm {
    int mpi;                    /* MPI was initialised */
    int rank, size;             /* in the world */
    int local_size;             /* ranks on this node */
    double comm_s;              /* seconds spent in comm_allreduce_floats' reduction since the last read */
    double wait_s;              /* seconds it waited there for the other ranks to arrive */
};

/* Initialises MPI when launched by mpirun/srun; a world of one otherwise. Only the
 * calling thread may use MPI afterwards (MPI_THREAD_FUNNELED): the daemon's socket
 * thread never does. */
void comm_init(struct comm *c, int *argc, char ***argv);
void comm_finalize(struct comm *c);
/* Broadcasts rank 0's BUF (*N bytes, malloc'd) to every rank; other ranks receive a
 * new malloc'd buffer. *N = 0 carries "nothing" (rank 0 failed). Ranks waiting for
 * rank 0 sleep between checks instead of spinning, so an idle daemon idles. */
void comm_bcast_bytes(struct comm *c, uint8_t **buf, size_t *n);
/* This rank's contiguous part [*LO, *HI) of N items; parts differ by at most one. */
void comm_part(const struct comm *c, int64_t n, int64_t *lo, int64_t *hi);
/* Broadcasts N bytes at BUF from rank 0 into every rank's BUF. */
void comm_bcast(struct comm *c, void *buf, size_t n);
/* In-place sum over ranks of N floats, after a barrier: adds the reduction's time to
 * c->comm_s and the barrier's (waiting for the slowest rank) to c->wait_s. */
void comm_allreduce_floats(struct comm *c, float *buf, size_t n);
/* In-place sum over ranks of N doubles. */
void comm_allreduce_doubles(struct comm *c, double *buf, size_t n);
/* Collective: whether every rank's 64-bit value V is the same. */
int comm_all_equal(struct comm *c, uint64_t v);
/* Collective agreement on failure. FAILED says whether this rank failed (its error in
 * err_msg()). Returns 0 when no rank failed. Otherwise returns -1 on every rank, and
 * on rank 0 the current error names the first failing rank and its cause ("rank 2:
 * ..."), or is rank 0's own error when rank 0 failed. */
int comm_agree(struct comm *c, int failed);
/* This node's cores shared among its ranks (at least 1): the threads of a rank by default. */
int comm_node_cores(const struct comm *c);

#endif
