/*
 * base.c: opening a base model directory once (base.h).
 */
#include "base.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "fileio.h"
#include "hash.h"

/* Continues H over a safetensors file's header (names, dtypes, shapes, offsets) and a
 * sample of every tensor's bytes (its ends and 64 bytes of each MiB). */
static uint64_t fingerprint_file(uint64_t h, const struct safetensors *st) {
    const unsigned char *map = st->map;
    uint64_t header_len = (uint64_t)map[0] | (uint64_t)map[1] << 8 | (uint64_t)map[2] << 16 |
                          (uint64_t)map[3] << 24 | (uint64_t)map[4] << 32 | (uint64_t)map[5] << 40 |
                          (uint64_t)map[6] << 48 | (uint64_t)map[7] << 56; /* validated by safetensors_open */
    h = hash_bytes(h, map, 8 + header_len);
    for (int32_t i = 0; i < st->n_tensors; i++) {
        const unsigned char *d = st->tensors[i].data;
        size_t n = st->tensors[i].nbytes, edge = n < 256 ? n : 256;
        h = hash_bytes(hash_bytes(h, d, edge), d + n - edge, edge);
        for (size_t at = 1 << 20; at + 64 <= n; at += 1 << 20) h = hash_bytes(h, d + at, 64);
    }
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
    for (int32_t i = 0; i < b->st.n_files; i++) h = fingerprint_file(h, &b->st.files[i]);
    b->fingerprint = h;
    b->stamp = stamp_compute(b, dir);
    return 0;
}

void base_close(struct base *b) {
    st_set_close(&b->st);
    free(b->frozen);
    free(b->frozen16);
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
