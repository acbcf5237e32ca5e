/*
 * simd.h: KERNEL_CLONES, the attribute that builds a hot loop three times, for AVX-512,
 * AVX2+FMA and baseline x86-64, the loader picking the best the CPU has. GCC only, and
 * not under AddressSanitizer (its clones are not instrumented alike); elsewhere a no-op.
 */
#ifndef LORAD_SIMD_H
#define LORAD_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define KERNEL_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define KERNEL_CLONES
#endif

#endif
