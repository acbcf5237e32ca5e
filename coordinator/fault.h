/*
 * fault.h: fault injection for tests. LORAD_FAULT=rank:R:step:S:KIND makes rank R fail
 * at step S (1-based): KIND "exit" ends the process at once, as a crash would; "nan"
 * poisons its loss, as a numerical blow-up would; "stop" sends the rank SIGUSR1 during
 * the step, as a preemption would, at a step the test chooses; "skew" nudges one of its
 * parameters after the step, as a rank that computes differently would.
 * LORAD_FAULT=rank:R:step:S:slow:MS paces the run instead: from step S on, each of rank
 * R's steps lasts at least MS milliseconds (the other ranks wait for it in the step's
 * all-reduce), so that a test's signal, kill or cancel finds the job still running
 * however fast the machine is. The wait comes before the step's stop flags are read.
 */
#ifndef LORAD_FAULT_H
#define LORAD_FAULT_H

#include <stdint.h>

enum fault_kind {
    FAULT_KIND_NONE,
    FAULT_KIND_EXIT,
    FAULT_KIND_NAN,
    FAULT_KIND_STOP,
    FAULT_KIND_SKEW,
    FAULT_KIND_SLOW,
};

struct fault {
    enum fault_kind kind;
    int rank;
    int64_t step;
    double floor_s; /* FAULT_KIND_SLOW: the least seconds a step lasts */
};

/* Reads LORAD_FAULT; -1 with an error naming it when malformed. */
int fault_from_env(struct fault *f);
/* The fault due on RANK at STEP (1-based), FAULT_KIND_NONE otherwise. An exit fault
 * prints one line naming the rank and ends the process here. */
enum fault_kind fault_due(const struct fault *f, int rank, int64_t step);
/* A slow fault: waits until step STEP (1-based) of RANK, begun at T_START (clock_now),
 * has lasted its floor. */
void fault_pace(const struct fault *f, int rank, int64_t step, double t_start);

#endif
