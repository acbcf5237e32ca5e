/*
 * strmap.c: the byte-string hash map (strmap.h).
 */
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

/* FNV-1a's multiply over the bytes, seeded with the length and folded once; never 0,
 * which marks an empty slot. */
static uint64_t key_hash(const unsigned char *k, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 0x100000001b3ULL;
    h ^= h >> 29;
    return h ? h : 1;
}

void strmap_init(struct strmap *m) { memset(m, 0, sizeof *m); }

void strmap_free(struct strmap *m) {
    free(m->slots);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

static struct strmap_slot *slot_find(const struct strmap *m, const void *key, size_t n, uint64_t h) {
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct strmap_slot *s = &m->slots[i];
        if (!s->hash || (s->hash == h && s->len == n && (n == 0 || memcmp(m->keys + s->key, key, n) == 0)))
            return s;
    }
}

static void map_grow(struct strmap *m) {
    struct strmap old = *m;
    m->cap = old.cap ? old.cap * 2 : 64;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    for (size_t i = 0; i < old.cap; i++) {
        const struct strmap_slot *s = &old.slots[i];
        if (s->hash) *slot_find(m, m->keys + s->key, s->len, s->hash) = *s;
    }
    free(old.slots);
}

int strmap_put(struct strmap *m, const void *key, size_t n, int32_t value) {
    CHECK(n < UINT32_MAX);
    if (2 * (m->count + 1) > m->cap) map_grow(m);
    uint64_t h = key_hash(key, n);
    struct strmap_slot *s = slot_find(m, key, n, h);
    if (s->hash) {
        s->value = value;
        return 0;
    }
    if (!m->keys || m->keys_len + n > m->keys_cap) { /* allocated even for an empty first key */
        m->keys_cap = (m->keys_len + n) * 2 + 256;
        m->keys = xrealloc(m->keys, m->keys_cap);
    }
    if (n) memcpy(m->keys + m->keys_len, key, n); /* KEY may be NULL when empty */
    *s = (struct strmap_slot){.hash = h, .key = m->keys_len, .len = (uint32_t)n, .value = value};
    m->keys_len += n;
    m->count++;
    return 1;
}

int strmap_get(const struct strmap *m, const void *key, size_t n, int32_t *value) {
    if (!m->cap) return 0;
    const struct strmap_slot *s = slot_find(m, key, n, key_hash(key, n));
    if (!s->hash) return 0;
    *value = s->value;
    return 1;
}
