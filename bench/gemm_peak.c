/*
 * gemm_peak.c: times the matrix products a GPT-2 training step runs, on each library
 * lorad can run them on, through lorad's own product interface (worker/gemm.h): OpenBLAS's
 * cblas_sgemm and oneDNN's dnnl_sgemm via gemm(), and oneDNN's bf16 matmul via gemm_bf16()
 * (A converted to bf16 inside, as in a step). bench/run.py turns the fastest rate of each
 * library into the "peak" that the MFU of the runs on that library is measured against.
 *
 * usage: gemm_peak [--threads N] [--tokens BT] [--dim C] [--vocab V] [--rank R] [--min-time S]
 *
 * Every shape is called as worker/linear.c calls it (row-major, the same transposes, beta 1
 * where a step accumulates): the forward products of the four linear maps and the tied LM
 * head, their input gradients (what LoRA's backward runs on a frozen weight), the weight
 * gradients (what only --mode full runs), and the thin LoRA products of rank R. bf16 applies
 * to the frozen-weight products only (forward and input gradient, B the bf16 weight). Each
 * (library, shape) runs once to warm up (oneDNN makes its primitive there), then repeatedly
 * until --min-time seconds have passed (at least twice); one JSON line each on stdout with
 * the best and the mean rate. The libraries run one after the other, never interleaved.
 */
#include <cblas.h>
#include <dnnl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "safetensors.h"

struct shape {
    const char *name; /* what the product is in the model */
    int ta, tb;       /* op(A), op(B) transposed */
    long M, N, K;     /* C (M,N) = op(A) (M,K) . op(B) (K,N) + beta C */
    float beta;       /* 1 where the step accumulates into C */
    int frozen;       /* B is a frozen weight: the product runs in bf16 with --base-dtype bf16 */
};

enum lib { LIB_OPENBLAS, LIB_ONEDNN, LIB_ONEDNN_BF16, LIB_COUNT };

static const char *const lib_names[LIB_COUNT] = {"openblas", "onednn", "onednn_bf16"};

/* Operands big enough for every shape; B also in bf16. */
struct operands {
    float *A, *B, *C;
    uint16_t *B16;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *must_alloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "gemm_peak: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

static float *floats_random(size_t n, unsigned *seed) {
    float *p = must_alloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
    return p;
}

static struct operands operands_make(const struct shape *shapes, size_t n) {
    size_t a = 0, b = 0, c = 0;
    for (size_t i = 0; i < n; i++) {
        const struct shape *s = &shapes[i];
        if ((size_t)(s->M * s->K) > a) a = (size_t)(s->M * s->K);
        if ((size_t)(s->K * s->N) > b) b = (size_t)(s->K * s->N);
        if ((size_t)(s->M * s->N) > c) c = (size_t)(s->M * s->N);
    }
    unsigned seed = 1234;
    struct operands op = {floats_random(a, &seed), floats_random(b, &seed), floats_random(c, &seed), NULL};
    op.B16 = must_alloc(b * sizeof *op.B16);
    for (size_t i = 0; i < b; i++) op.B16[i] = f32_to_bf16(op.B[i]);
    return op;
}

static void operands_free(struct operands *op) {
    free(op->A);
    free(op->B);
    free(op->C);
    free(op->B16);
}

/* One product of shape S on library LIB, exactly as a step calls it. */
static void product(enum lib lib, const struct shape *s, const struct operands *op) {
    const int M = (int)s->M, N = (int)s->N, K = (int)s->K;
    const int lda = s->ta ? M : K, ldb = s->tb ? K : N;
    if (lib == LIB_ONEDNN_BF16)
        gemm_bf16(s->tb, M, N, K, 1.0f, op->A, lda, op->B16, ldb, s->beta, NULL, op->C, N);
    else
        gemm(s->ta, s->tb, M, N, K, 1.0f, op->A, lda, op->B, ldb, s->beta, op->C, N);
}

static void time_shape(enum lib lib, const struct shape *s, const struct operands *op, double min_time) {
    const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    product(lib, s, op);
    double best = 1e30, total = 0.0;
    int reps = 0;
    while (reps < 2 || total < min_time) {
        double t0 = now();
        product(lib, s, op);
        double dt = now() - t0;
        if (dt < best) best = dt;
        total += dt;
        reps++;
    }
    printf("{\"name\": \"%s\", \"lib\": \"%s\", \"trans\": \"%c%c\", \"M\": %ld, \"N\": %ld, \"K\": %ld, "
           "\"beta\": %g, \"frozen\": %d, \"reps\": %d, \"best_s\": %.6g, \"gflops_best\": %.2f, "
           "\"gflops_mean\": %.2f}\n",
           s->name, lib_names[lib], s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->M, s->N, s->K, (double)s->beta,
           s->frozen, reps, best, flops / best * 1e-9, flops * reps / total * 1e-9);
    fflush(stdout);
}

static void time_library(enum lib lib, const struct shape *shapes, size_t n, const struct operands *op,
                         double min_time) {
    if (lib != LIB_ONEDNN_BF16) gemm_set_backend(lib == LIB_OPENBLAS ? GEMM_BACKEND_OPENBLAS : GEMM_BACKEND_ONEDNN);
    for (size_t i = 0; i < n; i++)
        if (lib != LIB_ONEDNN_BF16 || shapes[i].frozen) time_shape(lib, &shapes[i], op, min_time);
}

static const char *arg_value(int argc, char **argv, const char *flag) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], flag)) return argv[i + 1];
    return NULL;
}

static long arg_long(int argc, char **argv, const char *flag, long def) {
    const char *v = arg_value(argc, argv, flag);
    return v ? strtol(v, NULL, 10) : def;
}

static void print_libraries(int threads) {
    const dnnl_version_t *v = dnnl_version();
    fprintf(stderr, "gemm_peak: %s (core %s); oneDNN %d.%d.%d (cpu isa 0x%x); %d threads\n", openblas_get_config(),
            openblas_get_corename(), v->major, v->minor, v->patch, (unsigned)dnnl_get_effective_cpu_isa(),
            threads);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fprintf(stderr, "usage: gemm_peak [--threads N] [--tokens BT] [--dim C] [--vocab V] [--rank R] "
                            "[--min-time S]\n");
            return 0;
        }
    const int threads = (int)arg_long(argc, argv, "--threads", 2);
    const long N = arg_long(argc, argv, "--tokens", 1024), C = arg_long(argc, argv, "--dim", 768);
    const long V = arg_long(argc, argv, "--vocab", 50257), R = arg_long(argc, argv, "--rank", 8);
    const char *mt = arg_value(argc, argv, "--min-time");
    const double min_time = mt ? strtod(mt, NULL) : 0.5;
    if (threads < 1 || N < 1 || C < 1 || V < 1 || R < 1) {
        fprintf(stderr, "gemm_peak: every size must be positive\n");
        return 2;
    }
    gemm_set_threads(threads);
    print_libraries(threads);
    /* worker/linear.c: forward gemm(0,0,N,out,in) (beta 0), input gradient gemm(0,1,N,in,out)
     * (beta 1), weight gradient gemm(1,0,in,out,N) (beta 1); the LM head uses wte (V,C) as
     * [out,in]; LoRA u = x.A^T (beta 0), out += s u.B^T (beta 1). */
    const struct shape shapes[] = {
        {"fwd c_attn", 0, 0, N, 3 * C, C, 0.0f, 1},
        {"fwd attn.c_proj", 0, 0, N, C, C, 0.0f, 1},
        {"fwd mlp.c_fc", 0, 0, N, 4 * C, C, 0.0f, 1},
        {"fwd mlp.c_proj", 0, 0, N, C, 4 * C, 0.0f, 1},
        {"fwd lm_head", 0, 1, N, V, C, 0.0f, 1},
        {"dx c_attn", 0, 1, N, C, 3 * C, 1.0f, 1},
        {"dx attn.c_proj", 0, 1, N, C, C, 1.0f, 1},
        {"dx mlp.c_fc", 0, 1, N, C, 4 * C, 1.0f, 1},
        {"dx mlp.c_proj", 0, 1, N, 4 * C, C, 1.0f, 1},
        {"dx lm_head", 0, 0, N, C, V, 1.0f, 1},
        {"dw c_attn (full)", 1, 0, C, 3 * C, N, 1.0f, 0},
        {"dw attn.c_proj (full)", 1, 0, C, C, N, 1.0f, 0},
        {"dw mlp.c_fc (full)", 1, 0, C, 4 * C, N, 1.0f, 0},
        {"dw mlp.c_proj (full)", 1, 0, 4 * C, C, N, 1.0f, 0},
        {"dw lm_head (full)", 1, 0, V, C, N, 1.0f, 0},
        {"lora x.A^T", 0, 1, N, R, C, 0.0f, 0},
        {"lora u.B^T", 0, 1, N, C, R, 1.0f, 0},
    };
    const size_t n = sizeof shapes / sizeof shapes[0];
    struct operands op = operands_make(shapes, n);
    for (int lib = 0; lib < LIB_COUNT; lib++) time_library((enum lib)lib, shapes, n, &op, min_time);
    operands_free(&op);
    gemm_release();
    return 0;
}
