/*
 * rng.h: counter-based random numbers. A value is a pure function of a key and a
 * counter, so any rank can reproduce any draw (A's init, dropout masks, the shuffle)
 * without shared state, and nothing needs saving beyond the seed.
 */
#ifndef LORAD_RNG_H
#define LORAD_RNG_H

#include <stdint.h>

/* Mixes up to four words into a key (SplitMix64 finalizer chained). */
uint64_t rng_key(uint64_t a, uint64_t b, uint64_t c, uint64_t d);
/* 64 random bits for (KEY, COUNTER). */
uint64_t rng_bits(uint64_t key, uint64_t counter);
/* Uniform in [0, 1) with 24 random bits. */
float rng_uniform(uint64_t key, uint64_t counter);
/* Standard normal (Box-Muller on two draws of the counter's stream). */
float rng_normal(uint64_t key, uint64_t counter);

/* Stream names: the first word of every key, so that the uses never collide. */
enum rng_stream {
    RNG_STREAM_INIT = 1,
    RNG_STREAM_DROPOUT = 2,
    RNG_STREAM_SHUFFLE = 3,
    RNG_STREAM_SAMPLE = 4,
    RNG_STREAM_ANALYZE = 5, /* lorad analyze's random directions */
};

#endif
