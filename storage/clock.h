/*
 * clock.h: the one monotonic clock every layer times itself with (steps, deadlines of
 * the control socket, the stop signals' heartbeat).
 */
#ifndef LORAD_CLOCK_H
#define LORAD_CLOCK_H

/* Seconds on CLOCK_MONOTONIC: only differences mean anything. Async-signal-safe. */
double clock_now(void);

#endif
