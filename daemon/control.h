/*
 * control.h: the daemon's answers to its clients: each control request (submit, status,
 * list, cancel, logs, shutdown) applied to the job table and turned into a response frame.
 */
#ifndef LORAD_CONTROL_H
#define LORAD_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "lorad.pb-c.h"

/* The server_handler of the daemon: CTX is its struct jobs. */
uint8_t *control_handle(void *ctx, const Lorad__Request *req, size_t *n);

#endif
