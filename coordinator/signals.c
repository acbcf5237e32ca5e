/*
 * signals.c: the stop request raised by signals (signals.h). No thread ever runs a
 * signal handler. signals_block, first thing in main, blocks the stop signals before
 * Open MPI, OpenMP and oneDNN make their threads, so they inherit the mask;
 * signals_start then makes one thread of ours that takes them with sigwait. (The pool
 * OpenBLAS starts before main does not block them: there the same code runs as a
 * handler, on an idle thread.) A handler that interrupted a computing thread corrupted
 * the heap about one stop in eight (glibc: "corrupted size vs. prev_size").
 *
 * SIGCONT is taken too. Open MPI 4.1's mpirun, given SIGTERM or SIGINT, sends its ranks
 * SIGCONT at once, SIGTERM only odls_base_sigkill_timeout seconds later and SIGKILL as
 * long after that (orte/mca/odls/base/odls_base_default_fns.c, kill_local_procs); Slurm
 * and systemd also send SIGCONT beside their SIGTERM. So a SIGCONT that finds the process
 * running is the first word of a stop, and requests one. A SIGCONT that ends a stop
 * (SIGSTOP, or Ctrl-Z on mpirun and then fg) does not: the signal thread wakes every
 * SIGNALS_TICK_MS, and a silence of more than SIGNALS_STOPPED_MS means the process was
 * stopped. The SIGCONT may be taken on another thread (OpenBLAS's, as a handler) just
 * after the signal thread, woken too, has ended that silence: so a silence that ended
 * less than SIGNALS_STOPPED_MS ago counts as well.
 */
#include "signals.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"

#define SIGNALS_TICK_MS 100
#define SIGNALS_STOPPED_MS 1000

static sigset_t stops;
static volatile sig_atomic_t stop_signal, armed;
static volatile sig_atomic_t interrupts;
static _Atomic double awake;   /* when the signal thread last woke (clock_now) */
static _Atomic double resumed; /* when it last woke from a silence that means a stop */

/* The signal thread, at each wake: a silence long enough to mean a stop has ended. */
static void signals_wake(void) {
    double now = clock_now();
    if (now - atomic_load(&awake) > 1e-3 * SIGNALS_STOPPED_MS) atomic_store(&resumed, now);
    atomic_store(&awake, now);
}

/* Whether a SIGCONT now follows a stop of the process rather than interrupting a run:
 * the signal thread's silence goes on, or has just ended. */
static int signals_was_stopped(void) {
    double now = clock_now();
    return now - atomic_load(&awake) > 1e-3 * SIGNALS_STOPPED_MS ||
           now - atomic_load(&resumed) < 1e-3 * SIGNALS_STOPPED_MS;
}

/* One stop signal: before signals_install, the default action (the process dies of it;
 * SIGCONT only continues it); after, the first one is the stop request and a second
 * SIGINT exits at once. Async-signal-safe: it also runs as the handler on the threads
 * libraries made before main (OpenBLAS's pool), which do not block the signals. */
static void signals_take(int sig) {
    if (sig == SIGCONT && (signals_was_stopped() || !armed)) return;
    if (!armed) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        signal(sig, SIG_DFL);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        raise(sig);
        return;
    }
    if (sig == SIGINT && ++interrupts >= 2) {
        static const char msg[] = "lorad: second interrupt, exiting now\n";
        (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
        _exit(130);
    }
    if (!stop_signal) stop_signal = sig;
}

static void *signals_wait(void *unused) {
    (void)unused;
    const struct timespec tick = {0, SIGNALS_TICK_MS * 1000000L};
    for (;;) {
        int sig = sigtimedwait(&stops, NULL, &tick);
        if (sig > 0) signals_take(sig); /* judged before this wake ends the silence */
        signals_wake();
    }
    return NULL;
}

void signals_block(void) {
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGUSR1);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGCONT);
    CHECK(pthread_sigmask(SIG_BLOCK, &stops, NULL) == 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = signals_take;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&stops, sig)) CHECK(sigaction(sig, &sa, NULL) == 0);
    atomic_store(&awake, clock_now());
}

void signals_start(void) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, signals_wait, NULL) == 0);
    CHECK(pthread_detach(t) == 0);
}

void signals_install(void) { armed = 1; }

int signals_stop_requested(const char **name) {
    int sig = stop_signal;
    if (name)
        *name = sig == SIGTERM   ? "SIGTERM"
                : sig == SIGUSR1 ? "SIGUSR1"
                : sig == SIGCONT ? "SIGCONT (mpirun, Slurm or systemd stopping the job)"
                                 : "SIGINT";
    return sig != 0;
}
