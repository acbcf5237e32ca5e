/*
 * server.h: the daemon's control socket, served by one thread of rank 0 that never
 * touches MPI. It accepts clients on a Unix socket (0600, in a 0700 directory) and,
 * when asked, on TCP (with a token), reads request frames from every client at once
 * with poll(), and answers each through a handler. A slow, silent or hostile client
 * never blocks the others: sockets are non-blocking, frames are bounded, and idle
 * connections are closed.
 */
#ifndef LORAD_SERVER_H
#define LORAD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "lorad.pb-c.h"

/* Answers REQ (from a TCP client when TCP) with a frame of *N bytes (malloc'd). */
typedef uint8_t *(*server_handler)(void *ctx, const Lorad__Request *req, size_t *n);

struct server_options {
    const char *socket_path;  /* the Unix socket */
    const char *listen;       /* "HOST:PORT", "PORT" (127.0.0.1) or NULL/"": no TCP */
    const char *token;        /* what TCP clients must send; required with LISTEN */
    server_handler handle;
    void *ctx;
};

struct server;

/* Binds the sockets and starts the thread. NULL with an error naming the socket. */
struct server *server_start(const struct server_options *o);
/* Stops the thread, closes every connection and removes the socket file. */
void server_stop(struct server *s);

#endif
