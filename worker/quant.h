/*
 * quant.h: the quantized forms of a frozen product weight (--base-dtype int8 and nf4)
 * and their two kernels: encoding once at load, and decoding a tile to bf16 inside
 * the product (gemm_quant). A weight is always held as nn.Linear stores it, (out, in),
 * so a block of scales runs along one output row's inputs.
 *   int8: symmetric absmax, q = rint(w / s) in [-127, 127] with s = absmax / 127 per
 *         block, w ≈ q · s.
 *   nf4:  QLoRA's NormalFloat4: w / absmax rounded to the nearest of 16 code values
 *         (midpoints decide), w ≈ code[q] · absmax; element 2j of a row in the low
 *         nibble of byte j, 2j+1 in the high nibble.
 */
#ifndef LORAD_QUANT_H
#define LORAD_QUANT_H

#include <stdint.h>

enum quant_kind { QUANT_INT8, QUANT_NF4 };

/* The elements per scale of both formats along a row (QLoRA's block size); a weight's
 * in-features must be a multiple of it. */
#define QUANT_BLOCK 64

struct qweight {
    enum quant_kind kind;
    int32_t rows, cols;  /* (out, in) */
    int32_t block;       /* elements of a row per scale: QUANT_BLOCK, or COLS (one per row) */
    const uint8_t *q;    /* the codes: rows·cols bytes (int8), rows·cols/2 (nf4) */
    const float *scale;  /* rows·cols/block: s (int8) or absmax (nf4) */
};

/* QLoRA's NormalFloat4 code values (bitsandbytes), ascending. */
extern const float quant_nf4_code[16];

/* Bytes of KIND's codes for ROWS·COLS elements. */
uint64_t quant_code_bytes(enum quant_kind kind, int64_t rows, int64_t cols);

/* Encodes W (rows, cols) f32 into Q (quant_code_bytes) and SCALE (rows·cols/block),
 * rows on the OpenMP threads. COLS a multiple of BLOCK. */
void quant_encode(enum quant_kind kind, int32_t block, const float *w, int32_t rows, int32_t cols, uint8_t *q,
                  float *scale);

/* out (r1-r0, c1-c0) bf16, row stride LDO = W[r0:r1, c0:c1] decoded and rounded to
 * bf16 (round to nearest even), rows on the OpenMP threads. C0 and C1 multiples of
 * QUANT_BLOCK (C1 may also be W's cols). AVX-512 where the CPU has it. */
void quant_decode_bf16(const struct qweight *w, int32_t r0, int32_t r1, int32_t c0, int32_t c1, uint16_t *out,
                       int32_t ldo);
/* Whether quant_decode_bf16 may take its AVX-512 form (on by default, where the CPU
 * has it); tests turn it off to check the plain form against the same reference. */
void quant_use_simd(int on);

#endif
