/*
 * signals.c: the stop request raised by signals (signals.h).
 */
#include "signals.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t interrupts;

static void on_signal(int sig) {
    if (sig == SIGINT && ++interrupts >= 2) {
        static const char msg[] = "lorad: second interrupt, exiting now\n";
        (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
        _exit(130);
    }
    if (!stop_signal) stop_signal = sig;
}

void signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

int signals_stop_requested(const char **name) {
    int sig = stop_signal;
    if (name) *name = sig == SIGTERM ? "SIGTERM" : sig == SIGUSR1 ? "SIGUSR1" : "SIGINT";
    return sig != 0;
}
