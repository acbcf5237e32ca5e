/*
 * client.h: the client commands that talk to a running daemon over its control socket
 * (or TCP): submit, status, list, cancel, logs and shutdown. Human-readable output by
 * default, JSON with --json.
 */
#ifndef LORAD_CLIENT_H
#define LORAD_CLIENT_H

/* Runs client command CMD with its ARGV. Returns 0, or -1 with an error. */
int client_run(const char *cmd, int argc, char **argv);

#endif
