/*
 * base.c: opening a base model directory once (base.h), and its block of low-precision
 * product weights, shared by the processes of a node through a file in /dev/shm.
 */
#define _GNU_SOURCE /* O_TMPFILE */
#include "base.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "hash.h"

/* Continues H over N bytes of FD at OFF, read with pread into BUF (at least N): not
 * through the mapping, whose faults would map whole page-cache folios (up to MiBs each)
 * and, sampled every MiB, make the whole file resident for a moment. */
static uint64_t hash_at(uint64_t h, int fd, uint64_t off, size_t n, unsigned char *buf) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
        CHECK(r > 0); /* the file is mapped and validated: a short read is an I/O failure */
        got += (size_t)r;
    }
    return hash_bytes(h, buf, n);
}

/* Continues H over a safetensors file's header (names, dtypes, shapes, offsets) and a
 * sample of every tensor's bytes (its ends and 64 bytes of each MiB). */
static uint64_t fingerprint_file(uint64_t h, const struct safetensors *st) {
    const unsigned char *map = st->map;
    uint64_t header_len = (uint64_t)map[0] | (uint64_t)map[1] << 8 | (uint64_t)map[2] << 16 |
                          (uint64_t)map[3] << 24 | (uint64_t)map[4] << 32 | (uint64_t)map[5] << 40 |
                          (uint64_t)map[6] << 48 | (uint64_t)map[7] << 56; /* validated by safetensors_open */
    int fd = open(st->path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    unsigned char *buf = xmalloc(8 + header_len > 256 ? 8 + header_len : 256);
    h = hash_at(h, fd, 0, 8 + header_len, buf);
    for (int32_t i = 0; i < st->n_tensors; i++) {
        const uint64_t d = (uint64_t)((const unsigned char *)st->tensors[i].data - map);
        size_t n = st->tensors[i].nbytes, edge = n < 256 ? n : 256;
        h = hash_at(hash_at(h, fd, d, edge, buf), fd, d + n - edge, edge, buf);
        for (size_t at = 1 << 20; at + 64 <= n; at += 1 << 20) h = hash_at(h, fd, d + at, 64, buf);
    }
    free(buf);
    close(fd);
    return h;
}

/* Continues H over PATH's identity and modification time; 0 when PATH is gone. */
static uint64_t stamp_file(uint64_t h, const char *path) {
    struct stat s;
    if (stat(path, &s) != 0) return 0;
    uint64_t id[5] = {(uint64_t)s.st_dev, (uint64_t)s.st_ino, (uint64_t)s.st_size, (uint64_t)s.st_mtim.tv_sec,
                      (uint64_t)s.st_mtim.tv_nsec};
    return hash_bytes(h, id, sizeof id);
}

/* The stamp of DIR's config.json and B's weights files as they are on disk now. */
static uint64_t stamp_compute(const struct base *b, const char *dir) {
    char *config = path_join(dir, "config.json");
    uint64_t h = stamp_file(HASH_INIT, config);
    free(config);
    if (h) h = stamp_file(h, b->st.path);
    for (int32_t i = 0; h && i < b->st.n_files; i++) h = stamp_file(h, b->st.files[i].path);
    return h;
}

int base_open(struct base *b, const char *dir) {
    memset(b, 0, sizeof *b);
    if (hf_config_read(&b->cfg, dir)) return -1;
    b->dir = xstrdup(dir);
    char *path = path_join(dir, "config.json");
    size_t len;
    b->config_text = file_read_all(path, &len);
    free(path);
    if (!b->config_text || st_set_open(&b->st, dir)) {
        base_close(b);
        return -1;
    }
    uint64_t h = hash_bytes(HASH_INIT, b->config_text, len);
    for (int32_t i = 0; i < b->st.n_files; i++) {
        h = fingerprint_file(h, &b->st.files[i]);
    }
    b->fingerprint = h;
    b->stamp = stamp_compute(b, dir);
    return 0;
}

static void shared_free(struct base *b);

const char *base_dtype_name(enum base_dtype d) {
    static const char *const names[] = {"f32", "bf16", "int8", "nf4"};
    return names[d];
}

void base_close(struct base *b) {
    base_unshare(b);
    st_set_close(&b->st);
    free(b->frozen);
    shared_free(b);
    free(b->config_text);
    free(b->dir);
    memset(b, 0, sizeof *b);
}

int base_current(const struct base *b, const char *dir) {
    return b->dir && strcmp(b->dir, dir) == 0 && b->stamp != 0 && stamp_compute(b, dir) == b->stamp;
}

int base_keep(struct base *b, const char *dir, int *reused) {
    *reused = base_current(b, dir);
    if (*reused) return 0;
    base_close(b);
    return base_open(b, dir);
}

/* ---- the shared block, one per node ---- */

/* Lets go of B's shared block, mapped or private. */
static void shared_free(struct base *b) {
    if (b->shared_map)
        munmap(b->shared_map, b->shared_map_len);
    else
        free(b->shared);
    b->shared = b->shared_map = NULL;
    b->shared_map_len = 0;
}

#define SHARE_DIR "/dev/shm"
#define SHARE_MAGIC 0x3161686264726f6cULL /* "lordbha1": the layout of this file */
#define SHARE_HEAD 64                     /* bytes before the data: magic, count */

/* Maps PATH if it is a complete block of N bytes (renamed into place only once
 * written); NULL otherwise. */
static void *share_map(const char *path, uint64_t n, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    void *map = NULL;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size == len) map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED || !map) return NULL;
    const uint64_t *head = map;
    if (head[0] == SHARE_MAGIC && head[1] == n) return map;
    munmap(map, len);
    return NULL;
}

/* Writes the block to an unnamed file of /dev/shm (O_TMPFILE), FILL filling its data,
 * and links it in as PATH once complete; the mapping, or NULL when /dev/shm cannot take
 * it. A writer killed while it fills (minutes, for a big model's encoding) leaves no file
 * behind to hold the node's memory. */
static void *share_write(const char *path, uint64_t n, size_t len, void (*fill)(void *, void *), void *ctx) {
    int fd = open(SHARE_DIR, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return NULL;
    void *map = MAP_FAILED;
    if (posix_fallocate(fd, 0, (off_t)len) == 0) map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    uint64_t *head = map;
    head[0] = SHARE_MAGIC;
    head[1] = n;
    fill(ctx, (char *)map + SHARE_HEAD);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    unlink(path); /* an incomplete or stale one: the lock is held, no process maps it now */
    int linked = linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0;
    close(fd);
    if (!linked) {
        munmap(map, len);
        return NULL;
    }
    mprotect(map, len, PROT_READ);
    return map;
}

float *base_f32_block(struct base *b, uint64_t n, int kind, void (*fill)(void *ctx, float *block), void *ctx) {
    if (b->frozen && b->frozen_kind == kind) {
        CHECK(b->frozen_n == n);
        return b->frozen;
    }
    free(b->frozen);
    b->frozen = xalloc_aligned(n * sizeof(float));
    b->frozen_n = n;
    b->frozen_kind = kind;
    fill(ctx, b->frozen);
    return b->frozen;
}

void *base_shared_block(struct base *b, enum base_dtype kind, uint64_t bytes, void (*fill)(void *ctx, void *block),
                        void *ctx) {
    if (b->shared && b->shared_kind == kind) {
        CHECK(b->shared_bytes == bytes);
        return b->shared;
    }
    base_unshare(b);
    shared_free(b);
    b->shared_bytes = bytes;
    b->shared_kind = kind;
    const size_t len = SHARE_HEAD + bytes;
    snprintf(b->share_path, sizeof b->share_path, "%s/lorad-%d-%016llx.%s", SHARE_DIR, (int)getuid(),
             (unsigned long long)(b->fingerprint ^ b->stamp), base_dtype_name(kind));
    /* one process of the node writes it, under the lock; the others wait and map it */
    char lock[310];
    snprintf(lock, sizeof lock, "%s.lock", b->share_path);
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    void *map = NULL;
    if (lfd >= 0 && flock(lfd, LOCK_EX) == 0) {
        map = share_map(b->share_path, bytes, len);
        if (!map) map = share_write(b->share_path, bytes, len, fill, ctx);
    }
    if (lfd >= 0) close(lfd); /* releases the lock */
    if (map) {
        b->shared_map = map;
        b->shared_map_len = len;
        return b->shared = (char *)map + SHARE_HEAD;
    }
    b->share_path[0] = '\0'; /* no /dev/shm: a private block */
    b->shared = xalloc_aligned(bytes);
    fill(ctx, b->shared);
    return b->shared;
}

void base_unshare(struct base *b) {
    if (!b->share_path[0]) return;
    unlink(b->share_path); /* whoever comes first; the others find it gone */
    char lock[310];
    snprintf(lock, sizeof lock, "%s.lock", b->share_path);
    unlink(lock);
    b->share_path[0] = '\0';
}
