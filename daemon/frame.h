/*
 * frame.h: the control protocol's framing. A frame is a 4-byte big-endian length, then
 * that many bytes of a packed lorad.Request (client to daemon) or lorad.Response (daemon
 * to client). Frames hold at most FRAME_MAX bytes; a request must speak FRAME_VERSION.
 */
#ifndef LORAD_FRAME_H
#define LORAD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "lorad.pb-c.h"

#define FRAME_VERSION 1
#define FRAME_HDR 4
#define FRAME_MAX (4u << 20)

enum frame_status {
    FRAME_STATUS_MORE,  /* the buffer holds no whole frame yet */
    FRAME_STATUS_OK,    /* a request was decoded */
    FRAME_STATUS_BAD,   /* garbage, oversized, empty or another version: answer and hang up */
};

/* MSG packed into a new frame of *N bytes (malloc'd); an error frame instead when MSG
 * would exceed FRAME_MAX. */
uint8_t *frame_pack(const ProtobufCMessage *msg, size_t *n);
/* A frame of a failed Response carrying the current error line (err_msg). */
uint8_t *frame_error(size_t *n);
/* Decodes the request frame at the start of BUF (N bytes): on OK, *REQ (free with
 * lorad__request__free_unpacked) and *USED, the frame's bytes; on BAD, an error line. */
enum frame_status frame_request_take(const uint8_t *buf, size_t n, Lorad__Request **req, size_t *used);

/* The token in the file PATH (surrounding whitespace removed; malloc'd). NULL with an
 * error when it cannot be read or is empty. */
char *frame_token_read(const char *path);

/* Client side, blocking: writes the N bytes of BUF to FD. -1 with an error. */
int frame_send(int fd, const uint8_t *buf, size_t n);
/* Reads one Response frame from FD within TIMEOUT_MS. NULL with an error. */
Lorad__Response *frame_response_recv(int fd, int timeout_ms);

#endif
