/*
 * fault.c: the LORAD_FAULT switch (fault.h).
 */
#include "fault.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "signals.h"

int fault_from_env(struct fault *f) {
    memset(f, 0, sizeof *f);
    const char *v = getenv("LORAD_FAULT");
    if (!v || !v[0]) return 0;
    char kind[16];
    long long step;
    int ms = 0, end = 0;
    if (sscanf(v, "rank:%d:step:%lld:%15[a-z]%n:%d%n", &f->rank, &step, kind, &end, &ms, &end) < 3 || v[end] ||
        step < 1 || ms < 0) {
        err_set("LORAD_FAULT", "'%s' is malformed", v);
        return err_hint("use rank:R:step:S:exit, :nan, :stop, :skew or :slow:MS");
    }
    f->step = step;
    f->floor_s = 1e-3 * ms;
    if (!strcmp(kind, "slow") && ms > 0) f->kind = FAULT_KIND_SLOW;
    else if (ms > 0) return err_set("LORAD_FAULT", "only slow takes milliseconds, not %s", kind);
    else if (!strcmp(kind, "exit")) f->kind = FAULT_KIND_EXIT;
    else if (!strcmp(kind, "nan")) f->kind = FAULT_KIND_NAN;
    else if (!strcmp(kind, "stop")) f->kind = FAULT_KIND_STOP;
    else if (!strcmp(kind, "skew")) f->kind = FAULT_KIND_SKEW;
    else return err_set("LORAD_FAULT", "unknown fault kind '%s' (exit, nan, stop, skew or slow:MS)", kind);
    return 0;
}

enum fault_kind fault_due(const struct fault *f, int rank, int64_t step) {
    if (f->kind == FAULT_KIND_NONE || f->rank != rank || f->step != step) return FAULT_KIND_NONE;
    if (f->kind == FAULT_KIND_EXIT) {
        fprintf(stderr, "lorad: rank %d: injected fault at step %lld: exiting (LORAD_FAULT)\n", rank,
                (long long)step);
        _exit(1);
    }
    if (f->kind == FAULT_KIND_STOP) {
        /* to the process (its threads block it), then wait until the signal thread has
         * taken it, so that the stop is due at this very step */
        kill(getpid(), SIGUSR1);
        for (int i = 0; i < 5000 && !signals_stop_requested(NULL); i++) nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return f->kind;
}

void fault_pace(const struct fault *f, int rank, int64_t step, double t_start) {
    if (f->kind != FAULT_KIND_SLOW || f->rank != rank || step < f->step) return;
    for (double left; (left = t_start + f->floor_s - clock_now()) > 0;)
        nanosleep(&(struct timespec){(time_t)left, (long)((left - (double)(time_t)left) * 1e9)}, NULL);
}
