/*
 * sgemm_peak.c: times OpenBLAS's cblas_sgemm at the matrix shapes a GPT-2 training step
 * runs (bench/run.py turns the fastest into the "peak" that MFU is measured against).
 *
 * usage: sgemm_peak [--threads N] [--tokens BT] [--dim C] [--vocab V] [--rank R] [--min-time S]
 *
 * Every shape is called as lorad's worker/ calls it (row-major, the same transposes): the
 * forward products of the four linear maps and the tied LM head, their input gradients
 * (what LoRA's backward runs on a frozen weight), the weight gradients (what only
 * --mode full runs), and the thin LoRA products of rank R. Each shape runs once to warm up,
 * then repeatedly until --min-time seconds have passed (at least twice); the line reports
 * the best and the mean rate. One JSON object per line on stdout.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct shape {
    const char *name; /* what the product is in the model */
    int ta, tb;       /* op(A), op(B) transposed */
    long M, N, K;     /* C (M,N) = op(A) (M,K) . op(B) (K,N) */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *buf_random(size_t n, unsigned *seed) {
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "sgemm_peak: out of memory (%zu floats)\n", n);
        exit(2);
    }
    for (size_t i = 0; i < n; i++) p[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
    return p;
}

static void run_shape(const struct shape *s, double min_time) {
    unsigned seed = 1234;
    float *A = buf_random((size_t)s->M * s->K, &seed);
    float *B = buf_random((size_t)s->K * s->N, &seed);
    float *C = buf_random((size_t)s->M * s->N, &seed);
    const int lda = s->ta ? (int)s->M : (int)s->K, ldb = s->tb ? (int)s->K : (int)s->N;
    const enum CBLAS_TRANSPOSE ta = s->ta ? CblasTrans : CblasNoTrans, tb = s->tb ? CblasTrans : CblasNoTrans;
    const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)s->M, (int)s->N, (int)s->K, 1.0f, A, lda, B, ldb, 0.0f, C, (int)s->N);
    double best = 1e30, total = 0.0;
    int reps = 0;
    while (reps < 2 || total < min_time) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, ta, tb, (int)s->M, (int)s->N, (int)s->K, 1.0f, A, lda, B, ldb, 0.0f, C,
                    (int)s->N);
        double dt = now() - t0;
        if (dt < best) best = dt;
        total += dt;
        reps++;
    }
    printf("{\"name\": \"%s\", \"trans\": \"%c%c\", \"M\": %ld, \"N\": %ld, \"K\": %ld, \"reps\": %d, "
           "\"best_s\": %.6g, \"gflops_best\": %.2f, \"gflops_mean\": %.2f}\n",
           s->name, s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->M, s->N, s->K, reps, best, flops / best * 1e-9,
           flops * reps / total * 1e-9);
    fflush(stdout);
    free(A);
    free(B);
    free(C);
}

static long arg_long(int argc, char **argv, const char *flag, long def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], flag)) return strtol(argv[i + 1], NULL, 10);
    return def;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fprintf(stderr, "usage: sgemm_peak [--threads N] [--tokens BT] [--dim C] [--vocab V] [--rank R] "
                            "[--min-time S]\n");
            return 0;
        }
    const int threads = (int)arg_long(argc, argv, "--threads", 2);
    const long N = arg_long(argc, argv, "--tokens", 1024), C = arg_long(argc, argv, "--dim", 768);
    const long V = arg_long(argc, argv, "--vocab", 50257), R = arg_long(argc, argv, "--rank", 8);
    double min_time = 0.5;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--min-time")) min_time = strtod(argv[i + 1], NULL);
    if (threads < 1 || N < 1 || C < 1 || V < 1 || R < 1) {
        fprintf(stderr, "sgemm_peak: every size must be positive\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    fprintf(stderr, "sgemm_peak: %s (core %s), %d threads\n", openblas_get_config(),
            openblas_get_corename(), threads);
    /* worker/linear.c: forward gemm(0,0,N,out,in), input gradient gemm(0,1,N,in,out),
     * weight gradient gemm(1,0,in,out,N); the LM head uses wte (V,C) as [out,in]. */
    const struct shape shapes[] = {
        {"fwd c_attn", 0, 0, N, 3 * C, C},
        {"fwd attn.c_proj", 0, 0, N, C, C},
        {"fwd mlp.c_fc", 0, 0, N, 4 * C, C},
        {"fwd mlp.c_proj", 0, 0, N, C, 4 * C},
        {"fwd lm_head", 0, 1, N, V, C},
        {"dx c_attn", 0, 1, N, C, 3 * C},
        {"dx attn.c_proj", 0, 1, N, C, C},
        {"dx mlp.c_fc", 0, 1, N, C, 4 * C},
        {"dx mlp.c_proj", 0, 1, N, 4 * C, C},
        {"dx lm_head", 0, 0, N, C, V},
        {"dw c_attn (full)", 1, 0, C, 3 * C, N},
        {"dw attn.c_proj (full)", 1, 0, C, C, N},
        {"dw mlp.c_fc (full)", 1, 0, C, 4 * C, N},
        {"dw mlp.c_proj (full)", 1, 0, 4 * C, C, N},
        {"dw lm_head (full)", 1, 0, V, C, N},
        {"lora x.A^T", 0, 1, N, R, C},
        {"lora u.B^T", 0, 1, N, C, R},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) run_shape(&shapes[i], min_time);
    return 0;
}
