/*
 * frame.c: packing, decoding and blocking I/O of control frames (frame.h).
 */
#include "frame.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "fileio.h"

static uint32_t be32_get(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

uint8_t *frame_pack(const ProtobufCMessage *msg, size_t *n) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > FRAME_MAX) {
        err_set("answer", "of %zu bytes exceeds the %u-byte frame limit", len, FRAME_MAX);
        return frame_error(n);
    }
    uint8_t *buf = xmalloc(FRAME_HDR + len);
    buf[0] = (uint8_t)(len >> 24);
    buf[1] = (uint8_t)(len >> 16);
    buf[2] = (uint8_t)(len >> 8);
    buf[3] = (uint8_t)len;
    protobuf_c_message_pack(msg, buf + FRAME_HDR);
    *n = FRAME_HDR + len;
    return buf;
}

uint8_t *frame_error(size_t *n) {
    Lorad__Response r = LORAD__RESPONSE__INIT;
    r.version = FRAME_VERSION;
    r.error = (char *)err_msg();
    return frame_pack(&r.base, n);
}

enum frame_status frame_request_take(const uint8_t *buf, size_t n, Lorad__Request **req, size_t *used) {
    *req = NULL;
    if (n < FRAME_HDR) return FRAME_STATUS_MORE;
    uint32_t len = be32_get(buf);
    if (len == 0 || len > FRAME_MAX) {
        err_set("frame", "of %u bytes; requests hold 1 to %u bytes", len, FRAME_MAX);
        err_hint("frames are a 4-byte big-endian length and a packed lorad.Request");
        return FRAME_STATUS_BAD;
    }
    if (n - FRAME_HDR < len) return FRAME_STATUS_MORE;
    Lorad__Request *r = lorad__request__unpack(NULL, len, buf + FRAME_HDR);
    if (!r) {
        err_set("frame", "is not a lorad.Request");
        return FRAME_STATUS_BAD;
    }
    if (r->version != FRAME_VERSION) {
        err_set("request", "speaks protocol version %u; this daemon speaks %d", r->version, FRAME_VERSION);
        err_hint("use a lorad client of the daemon's version");
        lorad__request__free_unpacked(r, NULL);
        return FRAME_STATUS_BAD;
    }
    *req = r;
    *used = FRAME_HDR + len;
    return FRAME_STATUS_OK;
}

char *frame_token_read(const char *path) {
    size_t n;
    char *text = file_read_all(path, &n);
    if (!text) return NULL;
    while (n && isspace((unsigned char)text[n - 1])) text[--n] = '\0';
    size_t lead = strspn(text, " \t\r\n");
    memmove(text, text + lead, n - lead + 1);
    if (!text[0] || strlen(text) != n - lead) {
        free(text);
        err_set(path, "holds no token");
        err_hint("put one line of random text in it, e.g. head -c 32 /dev/urandom | base64");
        return NULL;
    }
    return text;
}

int frame_send(int fd, const uint8_t *buf, size_t n) {
    for (size_t at = 0; at < n;) {
        ssize_t k = send(fd, buf + at, n - at, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return err_set("daemon", "connection lost while sending: %s", strerror(errno));
        at += (size_t)k;
    }
    return 0;
}

/* Reads exactly N bytes into BUF before DEADLINE (1e3 * clock_now()). */
static int read_full(int fd, uint8_t *buf, size_t n, double deadline) {
    for (size_t at = 0; at < n;) {
        int left = (int)(deadline - 1e3 * clock_now());
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = left > 0 ? poll(&p, 1, left) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready == 0) return err_set("daemon", "no answer in time");
        ssize_t k = read(fd, buf + at, n - at);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return err_set("daemon", "closed the connection%s%s", k ? ": " : "", k ? strerror(errno) : "");
        at += (size_t)k;
    }
    return 0;
}

Lorad__Response *frame_response_recv(int fd, int timeout_ms) {
    double deadline = 1e3 * clock_now() + timeout_ms;
    uint8_t hdr[FRAME_HDR];
    if (read_full(fd, hdr, sizeof hdr, deadline)) return NULL;
    uint32_t len = be32_get(hdr);
    if (len > FRAME_MAX) {
        err_set("daemon", "sent a frame of %u bytes, over the %u-byte limit", len, FRAME_MAX);
        return NULL;
    }
    uint8_t *buf = xmalloc(len ? len : 1);
    Lorad__Response *r = NULL;
    if (read_full(fd, buf, len, deadline) == 0 && !(r = lorad__response__unpack(NULL, len, buf)))
        err_set("daemon", "sent a frame that is not a lorad.Response");
    free(buf);
    return r;
}
