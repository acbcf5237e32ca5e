/*
 * client.h: the client commands that talk to a running daemon over its control socket
 * (or TCP): submit, status, list, cancel, logs and shutdown. Human-readable output by
 * default, JSON with --json.
 */
#ifndef LORAD_CLIENT_H
#define LORAD_CLIENT_H

#include "command.h"

/* Runs client command CALL->name with its ClientSpec in CALL->spec[0] and, for submit,
 * the job's JobSpec in CALL->spec[1]. Returns 0, or -1 with an error. */
command_fn client_run;

#endif
