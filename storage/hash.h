/*
 * hash.h: FNV-1a, 64-bit: the checksum behind the replica check and the base-model
 * fingerprint. Not cryptographic; it tells copies apart from changes.
 */
#ifndef LORAD_HASH_H
#define LORAD_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_INIT 0xcbf29ce484222325ULL

/* Continues hash H over N bytes of DATA. */
uint64_t hash_bytes(uint64_t h, const void *data, size_t n);

#endif
