/*
 * strmap.h: a hash map from byte strings to 32-bit values, for the tokenizer's
 * vocabularies (token -> id), merges (a pair of ids as 8 bytes -> rank) and word
 * caches. Open addressing with linear probing; keys are copied into one growing
 * arena, so a map is two allocations however many keys it holds.
 */
#ifndef LORAD_STRMAP_H
#define LORAD_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct strmap {
    struct strmap_slot {
        uint64_t hash;  /* 0: empty */
        size_t key;     /* offset of the key in keys */
        uint32_t len;
        int32_t value;
    } *slots;
    size_t cap, count; /* cap is a power of two */
    char *keys;        /* the keys, one after another */
    size_t keys_len, keys_cap;
};

void strmap_init(struct strmap *m);
void strmap_free(struct strmap *m);
/* Sets KEY (N bytes) to VALUE; returns 1 when KEY was new, 0 when it was replaced. */
int strmap_put(struct strmap *m, const void *key, size_t n, int32_t value);
/* KEY's value into *VALUE; returns 0 when KEY is absent. */
int strmap_get(const struct strmap *m, const void *key, size_t n, int32_t *value);

#endif
