/*
 * server.c: the control socket's thread (server.h).
 */
#define _GNU_SOURCE /* accept4, pipe2 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "frame.h"
#include "netaddr.h"

#define SERVER_MAX_CONNS 128
#define SERVER_IDLE_S 30.0 /* a connection silent this long is closed */
#define SERVER_READ 65536

struct conn {
    int fd;
    int tcp;        /* came through TCP: must carry the token */
    uint8_t *in;    /* bytes received, not yet a whole frame */
    size_t in_n, in_cap;
    uint8_t *out;   /* the answer being sent */
    size_t out_n, out_at;
    double last;    /* when the client last sent or received something */
    int hangup;     /* close once OUT is sent */
};

struct server {
    struct server_options o;
    char *socket_path, *token;
    int unix_fd, tcp_fd, wake[2];
    pthread_t thread;
    struct conn conns[SERVER_MAX_CONNS];
    int n;
};

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Equal strings, in time that depends only on their lengths. */
static int token_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned diff = na != nb;
    for (size_t i = 0; i < nb; i++) diff |= (unsigned)(uint8_t)b[i] ^ (unsigned)(uint8_t)(i < na ? a[i] : 0);
    return diff == 0;
}

/* PATH's directory must keep others out: 0700 (created so when absent). */
static int dir_private_check(const char *path) {
    char *dir = xstrdup(path), *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
    else strcpy(dir, ".");
    struct stat st;
    int rc = 0;
    if (stat(dir, &st) != 0 && mkdir(dir, 0700) != 0) {
        rc = err_set(dir, "cannot create the socket's directory: %s", strerror(errno));
    } else if (stat(dir, &st) == 0 && (st.st_mode & 077)) {
        err_set(dir, "is open to other users (mode %03o); the control socket needs a private directory",
                (unsigned)(st.st_mode & 0777));
        rc = err_hint("give --socket a path in a directory only its owner can enter (chmod 700), as --state is");
    }
    free(dir);
    return rc;
}

/* Removes a stale socket at PATH; refuses a live one or another kind of file. */
static int socket_path_free(const char *path, const struct sockaddr_un *addr) {
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    if (!S_ISSOCK(st.st_mode)) return err_set(path, "exists and is not a socket");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    int live = fd >= 0 && connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0;
    if (fd >= 0) close(fd);
    if (live) {
        err_set(path, "a daemon is already listening here");
        return err_hint("lorad shutdown --socket %s stops it", path);
    }
    unlink(path);
    return 0;
}

static int unix_listen(struct server *s) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(s->socket_path) >= sizeof addr.sun_path)
        return err_set(s->socket_path, "is longer than a Unix socket path may be (%zu)", sizeof addr.sun_path - 1);
    strcpy(addr.sun_path, s->socket_path);
    if (dir_private_check(s->socket_path) || socket_path_free(s->socket_path, &addr)) return -1;
    s->unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177);
    int rc = bind(s->unix_fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (rc != 0 || listen(s->unix_fd, 64) != 0)
        return err_set(s->socket_path, "cannot listen: %s", strerror(errno));
    nonblock(s->unix_fd);
    return 0;
}

/* LISTEN_AT as netaddr.h reads it. */
static int tcp_listen(struct server *s, const char *listen_at) {
    struct addrinfo *ai;
    if (netaddr_resolve("--listen", listen_at, 1, &ai)) return -1;
    s->tcp_fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    int one = 1;
    setsockopt(s->tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = s->tcp_fd < 0 || bind(s->tcp_fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s->tcp_fd, 64) != 0;
    freeaddrinfo(ai);
    if (rc) return err_set("--listen", "cannot listen on %s: %s", listen_at, strerror(errno));
    nonblock(s->tcp_fd);
    return 0;
}

static void conn_close(struct conn *c) {
    close(c->fd);
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static void accept_all(struct server *s, int lfd, int tcp) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (s->n == SERVER_MAX_CONNS) { /* full: the client sees a closed connection */
            close(fd);
            continue;
        }
        s->conns[s->n++] = (struct conn){.fd = fd, .tcp = tcp, .last = clock_now()};
    }
}

/* Answers every whole frame in C's buffer; a bad frame is answered and ends C. */
static void conn_serve(struct server *s, struct conn *c) {
    while (!c->hangup && c->out_n == 0) {
        Lorad__Request *req;
        size_t used = 0;
        enum frame_status st = frame_request_take(c->in, c->in_n, &req, &used);
        if (st == FRAME_STATUS_MORE) return;
        if (st == FRAME_STATUS_OK && c->tcp && !token_equal(req->token, s->token)) {
            err_set("request", "wrong or missing token");
            err_hint("TCP clients need the daemon's --token-file");
            st = FRAME_STATUS_BAD;
        }
        if (st == FRAME_STATUS_BAD) {
            c->out = frame_error(&c->out_n);
            c->hangup = 1;
            c->in_n = 0;
        } else {
            c->out = s->o.handle(s->o.ctx, req, &c->out_n);
            memmove(c->in, c->in + used, c->in_n - used);
            c->in_n -= used;
        }
        if (req) lorad__request__free_unpacked(req, NULL);
        c->out_at = 0;
    }
}

/* Reads what C sent; 0 when C is gone. */
static int conn_read(struct server *s, struct conn *c) {
    if (c->in_cap < c->in_n + SERVER_READ) c->in = xrealloc(c->in, c->in_cap = c->in_n + SERVER_READ);
    ssize_t k = read(c->fd, c->in + c->in_n, SERVER_READ);
    if (k < 0) return errno == EAGAIN || errno == EINTR;
    c->last = clock_now();
    if (k == 0) c->hangup = 1; /* answer what came, then close */
    c->in_n += (size_t)k;
    conn_serve(s, c);
    return k > 0 || c->out_n > c->out_at;
}

/* Sends what is pending to C; 0 when C is done or gone. */
static int conn_write(struct server *s, struct conn *c) {
    ssize_t k = send(c->fd, c->out + c->out_at, c->out_n - c->out_at, MSG_NOSIGNAL);
    if (k < 0) return errno == EAGAIN || errno == EINTR;
    c->last = clock_now();
    c->out_at += (size_t)k;
    if (c->out_at < c->out_n) return 1;
    free(c->out);
    c->out = NULL;
    c->out_n = c->out_at = 0;
    if (c->hangup) return 0;
    conn_serve(s, c); /* requests that came while this answer was going out */
    return 1;
}

/* The control thread runs on any core: mpirun binds a rank to one core, which its
 * training thread keeps busy, and a status answer would wait for that thread's slice. */
static void server_unbind(void) {
    cpu_set_t all;
    CPU_ZERO(&all);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET((int)i, &all);
    (void)sched_setaffinity(0, sizeof all, &all); /* best effort: a cpuset may refuse */
}

static void *server_main(void *arg) {
    server_unbind();
    struct server *s = arg;
    struct pollfd p[SERVER_MAX_CONNS + 3];
    for (;;) {
        int base = 0;
        p[base++] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        p[base++] = (struct pollfd){.fd = s->unix_fd, .events = POLLIN};
        p[base++] = (struct pollfd){.fd = s->tcp_fd, .events = POLLIN}; /* -1: ignored */
        for (int i = 0; i < s->n; i++) {
            struct conn *c = &s->conns[i];
            p[base + i] = (struct pollfd){.fd = c->fd, .events = c->out_n ? POLLOUT : c->hangup ? 0 : POLLIN};
        }
        if (poll(p, (nfds_t)(base + s->n), 1000) < 0 && errno != EINTR) break;
        if (p[0].revents) { /* stopping: a last try to send the answers made (a shutdown's) */
            for (int i = 0; i < s->n; i++)
                if (s->conns[i].out_n) conn_write(s, &s->conns[i]);
            break;
        }
        int n = s->n;
        double now = clock_now();
        for (int i = 0; i < n; i++) {
            struct conn *c = &s->conns[i];
            short ev = p[base + i].revents;
            int alive = now - c->last < SERVER_IDLE_S;
            if (alive && (ev & POLLOUT)) alive = conn_write(s, c);
            else if (alive && (ev & POLLIN)) alive = conn_read(s, c);
            else if (ev & (POLLERR | POLLHUP | POLLNVAL)) alive = 0;
            if (alive && c->hangup && c->out_n == 0) alive = 0;
            if (!alive) conn_close(c);
        }
        int kept = 0; /* compact the live connections to the front */
        for (int i = 0; i < n; i++)
            if (s->conns[i].fd >= 0) s->conns[kept++] = s->conns[i];
        s->n = kept;
        if (p[1].revents & POLLIN) accept_all(s, s->unix_fd, 0);
        if (s->tcp_fd >= 0 && (p[2].revents & POLLIN)) accept_all(s, s->tcp_fd, 1);
    }
    return NULL;
}

struct server *server_start(const struct server_options *o) {
    struct server *s = xcalloc(1, sizeof *s);
    s->o = *o;
    s->socket_path = xstrdup(o->socket_path);
    s->token = xstrdup(o->token ? o->token : "");
    s->unix_fd = s->tcp_fd = s->wake[0] = s->wake[1] = -1;
    int tcp = o->listen && o->listen[0];
    int rc = unix_listen(s);
    if (rc == 0 && tcp) rc = tcp_listen(s, o->listen);
    if (rc == 0) CHECK(pipe2(s->wake, O_CLOEXEC) == 0);
    if (rc == 0) CHECK(pthread_create(&s->thread, NULL, server_main, s) == 0);
    if (rc == 0) return s;
    if (s->unix_fd >= 0) close(s->unix_fd);
    if (s->tcp_fd >= 0) close(s->tcp_fd);
    free(s->socket_path);
    free(s->token);
    free(s);
    return NULL;
}

void server_stop(struct server *s) {
    (void)!write(s->wake[1], "x", 1);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->n; i++) conn_close(&s->conns[i]);
    close(s->unix_fd);
    if (s->tcp_fd >= 0) close(s->tcp_fd);
    close(s->wake[0]);
    close(s->wake[1]);
    unlink(s->socket_path);
    free(s->socket_path);
    free(s->token);
    free(s);
}
