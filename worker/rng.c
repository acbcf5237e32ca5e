/*
 * rng.c: SplitMix64-based counter RNG (see rng.h).
 */
#include "rng.h"

#include <math.h>

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rng_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    const uint64_t golden = 0x9e3779b97f4a7c15ULL;
    uint64_t k = mix64(a + golden);
    k = mix64(k ^ (b + 2 * golden));
    k = mix64(k ^ (c + 3 * golden));
    return mix64(k ^ (d + 4 * golden));
}

uint64_t rng_bits(uint64_t key, uint64_t counter) { return mix64(key ^ mix64(counter + 0x9e3779b97f4a7c15ULL)); }

float rng_uniform(uint64_t key, uint64_t counter) {
    return (float)(rng_bits(key, counter) >> 40) * (1.0f / 16777216.0f);
}

float rng_normal(uint64_t key, uint64_t counter) {
    uint64_t bits = rng_bits(key, counter);
    /* Two 32-bit uniforms; u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(bits >> 32) + 1.0) / 4294967296.0;
    double u2 = (double)(bits & 0xffffffffULL) / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
