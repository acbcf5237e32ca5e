/*
 * quant_peak.c: times the frozen-weight products of a Llama step with the weight in
 * bf16 (gemm_bf16) and quantized (gemm_quant: int8 with a scale per block of 64 or per
 * output row, nf4 in blocks of 64), at the shapes bench/quant.py trains, so the cost of
 * decoding inside the product shows beside the bf16 matmul it feeds. Each row also
 * splits the quantized product into its decoding and the rest (gemm.h's profile), and
 * measures what decoding alone costs per weight element. The forward (C = A·Wᵀ) and the
 * input gradient (C = A·W) of every linear of a layer; one JSON line each on stdout.
 *
 * usage: quant_peak [--threads N] [--tokens M] [--dim C] [--ffn F] [--kv KV] [--min-time S]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "gemm.h"
#include "quant.h"
#include "safetensors.h"

struct form {
    const char *name;
    enum quant_kind kind;
    int per_row; /* int8: one scale per output row */
    int bf16;    /* the unquantized bf16 product */
};

static const struct form forms[] = {
    {"bf16", QUANT_INT8, 0, 1}, {"int8_b64", QUANT_INT8, 0, 0}, {"int8_row", QUANT_INT8, 1, 0}, {"nf4", QUANT_NF4, 0, 0}};

/* Runs one product of FORM; TRANS_B 1 the forward. */
static void product(const struct form *f, int trans_b, int M, int out, int in, const float *A, const uint16_t *w16,
                    const struct qweight *q, float *C) {
    const int N = trans_b ? out : in, K = trans_b ? in : out;
    if (f->bf16)
        gemm_bf16(trans_b, M, N, K, 1.0f, A, K, w16, in, trans_b ? 0.0f : 1.0f, NULL, C, N);
    else
        gemm_quant(trans_b, M, N, K, A, K, q, trans_b ? 0.0f : 1.0f, NULL, C, N);
}

/* Times one (form, shape): warm-up, then calls for MIN_TIME seconds; prints a JSON line. */
static void time_shape(const struct form *f, const char *name, int trans_b, int M, int out, int in, double min_time) {
    const size_t n = (size_t)out * in;
    float *w = xalloc_aligned(n * sizeof *w), *A = xalloc_aligned((size_t)M * (out > in ? out : in) * sizeof *A);
    float *C = xalloc_aligned((size_t)M * (out > in ? out : in) * sizeof *C);
    uint16_t *w16 = xalloc_aligned(n * sizeof *w16);
    unsigned seed = 7;
    for (size_t i = 0; i < n; i++) w[i] = ((float)rand_r(&seed) / (float)RAND_MAX - 0.5f) * 0.04f;
    for (size_t i = 0; i < (size_t)M * (out > in ? out : in); i++) A[i] = (float)rand_r(&seed) / (float)RAND_MAX - 0.5f;
    for (size_t i = 0; i < n; i++) w16[i] = f32_to_bf16(w[i]);
    struct qweight q = {.kind = f->kind, .rows = out, .cols = in, .block = f->per_row ? in : QUANT_BLOCK};
    uint8_t *codes = xalloc_aligned(quant_code_bytes(q.kind, out, in));
    float *scale = xalloc_aligned((size_t)out * (in / q.block) * sizeof *scale);
    quant_encode(q.kind, q.block, w, out, in, codes, scale);
    q.q = codes;
    q.scale = scale;
    product(f, trans_b, M, out, in, A, w16, &q, C); /* warm-up: the primitives */
    gemm_profile_clear();
    gemm_profile_set(1);
    int calls = 0;
    const double t0 = clock_now();
    double best = 1e30;
    while (calls < 2 || clock_now() - t0 < min_time) {
        const double t = clock_now();
        product(f, trans_b, M, out, in, A, w16, &q, C);
        const double dt = clock_now() - t;
        if (dt < best) best = dt;
        calls++;
    }
    gemm_profile_set(0);
    int nrows;
    const struct gemm_profile_row *r = gemm_profile_rows(&nrows);
    const double convert = nrows ? r[0].convert_s / (double)r[0].calls : 0.0, mean = (clock_now() - t0) / calls;
    /* decoding alone, the whole weight once (what gemm_quant spreads over its tiles) */
    double decode_ns = 0.0;
    for (int rep = 0; rep < 5 && !f->bf16; rep++) { /* the best of 5 */
        const double td = clock_now();
        for (int32_t r0 = 0; r0 < out; r0 += 64) quant_decode_bf16(&q, r0, r0 + 64 < out ? r0 + 64 : out, 0, in, w16, in);
        const double ns = (clock_now() - td) * 1e9 / (double)n;
        if (rep == 0 || ns < decode_ns) decode_ns = ns;
    }
    printf("{\"form\":\"%s\",\"product\":\"%s\",\"pass\":\"%s\",\"M\":%d,\"out\":%d,\"in\":%d,\"best_gflops\":%.1f,"
           "\"mean_gflops\":%.1f,\"mean_ms\":%.3f,\"convert_ms\":%.3f,\"decode_ns_per_weight\":%.3f}\n",
           f->name, name, trans_b ? "forward" : "input_grad", M, out, in, 2.0 * M * n / best * 1e-9,
           2.0 * M * n / mean * 1e-9, mean * 1e3, convert * 1e3, decode_ns);
    fflush(stdout);
    free(w), free(A), free(C), free(w16), free(codes), free(scale);
}

static long arg_long(int argc, char **argv, const char *flag, long def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], flag)) return strtol(argv[i + 1], NULL, 10);
    return def;
}

int main(int argc, char **argv) {
    const int threads = (int)arg_long(argc, argv, "--threads", 2), M = (int)arg_long(argc, argv, "--tokens", 512);
    const int C = (int)arg_long(argc, argv, "--dim", 2048), F = (int)arg_long(argc, argv, "--ffn", 8192);
    const int KV = (int)arg_long(argc, argv, "--kv", 512);
    double min_time = 0.5;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--min-time")) min_time = strtod(argv[i + 1], NULL);
    gemm_set_threads(threads);
    const struct {
        const char *name;
        int out, in;
    } shapes[] = {{"q_proj", C, C}, {"k_proj", KV, C}, {"gate_proj", F, C}, {"down_proj", C, F}};
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int pass = 1; pass >= 0; pass--)
                time_shape(&forms[f], shapes[s].name, pass, M, shapes[s].out, shapes[s].in, min_time);
    gemm_release();
    return 0;
}
