/*
 * quant.c: the int8 and NF4 forms of frozen weights (quant.h): encoding at load, and
 * the decoding of a tile to bf16 that gemm_quant runs before each oneDNN bf16 matmul
 * of a tile. Decoding has an AVX-512 form (vpermps looks the 16 NF4 codes up in one
 * register) chosen at run time, and a plain one for other CPUs; both give the same bits.
 */
#include "quant.h"

#include <math.h>
#include <stddef.h>

#include "safetensors.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define QUANT_AVX512 1
#endif

const float quant_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f,
};

uint64_t quant_code_bytes(enum quant_kind kind, int64_t rows, int64_t cols) {
    return (uint64_t)(rows * cols) / (kind == QUANT_NF4 ? 2 : 1);
}

static float absmax(const float *x, int n) {
    float m = 0.0f;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* One block of N elements of X into codes Q and its scale *S. */
static void encode_int8(const float *x, int n, int8_t *q, float *s) {
    const float scale = absmax(x, n) / 127.0f;
    *s = scale;
    for (int i = 0; i < n; i++) q[i] = scale > 0.0f ? (int8_t)fminf(127.0f, fmaxf(-127.0f, rintf(x[i] / scale))) : 0;
}

/* The index of the code nearest to X in [-1, 1]: how many midpoints lie below it. */
static int nf4_index(float x) {
    int k = 0;
    for (int i = 0; i < 15; i++) k += x > (quant_nf4_code[i] + quant_nf4_code[i + 1]) * 0.5f;
    return k;
}

static void encode_nf4(const float *x, int n, uint8_t *q, float *s) {
    const float m = absmax(x, n);
    *s = m;
    for (int i = 0; i < n; i += 2) {
        int lo = nf4_index(m > 0.0f ? x[i] / m : 0.0f), hi = nf4_index(m > 0.0f ? x[i + 1] / m : 0.0f);
        q[i / 2] = (uint8_t)(lo | hi << 4);
    }
}

void quant_encode(enum quant_kind kind, int32_t block, const float *w, int32_t rows, int32_t cols, uint8_t *q,
                  float *scale) {
    const int32_t nb = cols / block;
#pragma omp parallel for schedule(static)
    for (int32_t r = 0; r < rows; r++)
        for (int32_t b = 0; b < nb; b++) {
            const size_t at = (size_t)r * cols + (size_t)b * block;
            if (kind == QUANT_INT8)
                encode_int8(w + at, block, (int8_t *)q + at, scale + (size_t)r * nb + b);
            else
                encode_nf4(w + at, block, q + at / 2, scale + (size_t)r * nb + b);
        }
}

/* The scale of element (R, C). */
static float scale_at(const struct qweight *w, int32_t r, int32_t c) {
    return w->scale[(size_t)r * (w->cols / w->block) + c / w->block];
}

/* o (c1-c0) = row R of W over [c0, c1), decoded to bf16: the plain form. */
static void decode_row_plain(const struct qweight *w, int32_t r, int32_t c0, int32_t c1, uint16_t *o) {
    const size_t row = (size_t)r * w->cols;
    for (int32_t c = c0; c < c1; c++) {
        const float s = scale_at(w, r, c);
        const uint8_t b = w->q[w->kind == QUANT_INT8 ? row + c : (row + c) / 2];
        const float v = w->kind == QUANT_INT8 ? (float)(int8_t)b * s : quant_nf4_code[c & 1 ? b >> 4 : b & 15] * s;
        o[c - c0] = f32_to_bf16(v);
    }
}

#ifdef QUANT_AVX512
/* bf16 (round to nearest even) of each lane, in the upper 16 bits, the lower ones not cleared. */
__attribute__((target("avx512f"))) static inline __m512i bf16_upper(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
}

/* The same as decode_row_plain, 16 (int8) or 32 (nf4) elements per step. */
__attribute__((target("avx512f"))) static void decode_row_avx512(const struct qweight *w, int32_t r, int32_t c0,
                                                                 int32_t c1, uint16_t *o) {
    const size_t row = (size_t)r * w->cols;
    if (w->kind == QUANT_INT8) {
        for (int32_t c = c0; c < c1; c += 16) {
            const __m128i b = _mm_loadu_si128((const __m128i *)(w->q + row + c));
            const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), _mm512_set1_ps(scale_at(w, r, c)));
            _mm256_storeu_si256((__m256i *)(o + (c - c0)), _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_upper(v), 16)));
        }
        return;
    }
    const __m512 code = _mm512_loadu_ps(quant_nf4_code);
    const __m512i nibble = _mm512_set1_epi32(15), upper = _mm512_set1_epi32((int)0xffff0000u);
    for (int32_t c = c0; c < c1; c += 32) {
        const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w->q + (row + c) / 2)));
        const __m512 s = _mm512_set1_ps(scale_at(w, r, c));
        const __m512 lo = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(b, nibble), code), s);
        const __m512 hi = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), code), s);
        /* lane j holds elements 2j (low half) and 2j+1 (high half): 32 bf16 in order */
        const __m512i pair = _mm512_or_si512(_mm512_srli_epi32(bf16_upper(lo), 16), _mm512_and_si512(bf16_upper(hi), upper));
        _mm512_storeu_si512((void *)(o + (c - c0)), pair);
    }
}
#endif

static int simd_allowed = 1;

void quant_use_simd(int on) { simd_allowed = on; }

void quant_decode_bf16(const struct qweight *w, int32_t r0, int32_t r1, int32_t c0, int32_t c1, uint16_t *out,
                       int32_t ldo) {
    void (*row)(const struct qweight *, int32_t, int32_t, int32_t, uint16_t *) = decode_row_plain;
#ifdef QUANT_AVX512
    if (simd_allowed && __builtin_cpu_supports("avx512f")) row = decode_row_avx512;
#endif
#pragma omp parallel for schedule(static)
    for (int32_t r = r0; r < r1; r++) row(w, r, c0, c1, out + (size_t)(r - r0) * ldo);
}
