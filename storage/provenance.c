/*
 * provenance.c: tokenizer fingerprints and the model check of token files
 * (provenance.h).
 */
#include "provenance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "hash.h"

/* Continues H over DIR/NAME: its name, a NUL, its size (8 bytes, little-endian), its bytes. */
static int file_hash(const char *dir, const char *name, uint64_t *h) {
    char *path = path_join(dir, name);
    size_t n;
    char *data = file_read_all(path, &n);
    free(path);
    if (!data) return -1;
    unsigned char size[8];
    for (int i = 0; i < 8; i++) size[i] = (unsigned char)((uint64_t)n >> (8 * i));
    *h = hash_bytes(*h, name, strlen(name) + 1);
    *h = hash_bytes(*h, size, sizeof size);
    *h = hash_bytes(*h, data, n);
    free(data);
    return 0;
}

/* Whether DIR holds NAME. */
static int dir_has(const char *dir, const char *name) {
    char *path = path_join(dir, name);
    int has = access(path, F_OK) == 0;
    free(path);
    return has;
}

int provenance_read(struct provenance *p, const char *dir) {
    memset(p, 0, sizeof *p);
    static const char *const json[] = {"tokenizer.json", NULL}, *const legacy[] = {"vocab.json", "merges.txt", NULL};
    const char *const *files = dir_has(dir, "tokenizer.json") ? json : dir_has(dir, "vocab.json") ? legacy : NULL;
    if (!files) return 0;
    uint64_t h = HASH_INIT;
    for (int i = 0; files[i]; i++) {
        if (file_hash(dir, files[i], &h)) return -1;
        snprintf(p->files + strlen(p->files), sizeof p->files - strlen(p->files), "%s%s", i ? "," : "", files[i]);
    }
    snprintf(p->fingerprint, sizeof p->fingerprint, "%016llx", (unsigned long long)h);
    return 1;
}

int provenance_is_fingerprint(const char *s) {
    return strlen(s) == PROVENANCE_HEX && strspn(s, "0123456789abcdef") == PROVENANCE_HEX;
}

int provenance_check(const struct tokens *ds, const char *dir, int32_t vocab) {
    if (ds->vocab_size > vocab) {
        err_set(ds->path, "was tokenized with a vocabulary of %lld tokens, more than the model's %d",
                (long long)ds->vocab_size, vocab);
        return err_hint("the data was tokenized for another model: run lorad prep with --model %s", dir);
    }
    if (!ds->fingerprint) return 0;
    struct provenance p;
    int has = provenance_read(&p, dir);
    if (has <= 0 || strcmp(p.fingerprint, ds->fingerprint) == 0) return has < 0 ? -1 : 0;
    err_set(ds->path, "was tokenized by another tokenizer (fingerprint %s) than the model's (%s of %s)",
            ds->fingerprint, p.fingerprint, p.files);
    return err_hint("run lorad prep again with --model %s", dir);
}

int provenance_open(struct tokens *ds, const char *path, const char *dir, int32_t vocab, int32_t T, int pack,
                    int truncate) {
    if (tokens_open(ds, path) || provenance_check(ds, dir, vocab)) return -1;
    tokens_plan(ds, T, pack, truncate);
    return tokens_validate(ds, vocab, T);
}
