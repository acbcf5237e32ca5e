/*
 * gemm_peak.c: times the matrix products a GPT-2 training step runs, on each library
 * lorad can run them on, through lorad's own product interface (worker/gemm.h): OpenBLAS's
 * cblas_sgemm and oneDNN's dnnl_sgemm via gemm(), and oneDNN's bf16 matmul via gemm_bf16()
 * (A converted to bf16 inside, as in a step). bench/run.py turns the fastest rate of each
 * library into the "peak" that the MFU of the runs on that library is measured against.
 * One more column is a path lorad does not take, measured as the lever it would be: the
 * bf16 matmul with the weight re-laid once, ahead of time, in the layout oneDNN's kernel
 * prefers, instead of on every call from the plain bf16 matrix. On a CPU where oneDNN has
 * no bf16 matmul (gemm_bf16_native: no AVX-512), gemm_bf16 multiplies in f32 and that
 * column is left out.
 *
 * usage: gemm_peak [--threads N] [--tokens BT] [--dim C] [--vocab V] [--rank R] [--head-rows H]
 *                  [--min-time S]
 *
 * Every shape is called as worker/linear.c calls it (row-major, the same transposes, beta 1
 * where a step accumulates): the forward products of the four linear maps and the tied LM
 * head (H rows at a time, as the step computes its logits), their input gradients (what
 * LoRA's backward runs on a frozen weight), the weight
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

#include "clock.h"
#include "gemm.h"
#include "safetensors.h"
#include "simd.h"

struct shape {
    const char *name; /* what the product is in the model */
    int ta, tb;       /* op(A), op(B) transposed */
    long M, N, K;     /* C (M,N) = op(A) (M,K) . op(B) (K,N) + beta C */
    float beta;       /* 1 where the step accumulates into C */
    int frozen;       /* B is a frozen weight: the product runs in bf16 with --base-dtype bf16 */
};

enum lib { LIB_OPENBLAS, LIB_ONEDNN, LIB_ONEDNN_BF16, LIB_ONEDNN_BF16_PACKED, LIB_COUNT };

static const char *const lib_names[LIB_COUNT] = {"openblas", "onednn", "onednn_bf16", "onednn_bf16_packed"};

/* Operands big enough for every shape; B also in bf16. */
struct operands {
    float *A, *B, *C;
    uint16_t *B16;
};

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

#define DNNL_OK(call)                                                               \
    do {                                                                            \
        if ((call) != dnnl_success) {                                               \
            fprintf(stderr, "gemm_peak: %s:%d: oneDNN call failed\n", __FILE__, __LINE__); \
            exit(2);                                                                \
        }                                                                           \
    } while (0)

/* The bf16 matmul of one shape with its weight pre-packed: the primitive, the packed B,
 * and A's bf16 buffer, all made before the timing. */
static struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
    uint16_t *a16;
} packed;

/* dst (row-major, strided) or, with ANY, the layout the primitive is to choose. */
static void md_2d(dnnl_memory_desc_t *md, long rows, long cols, dnnl_data_type_t dt, int transposed, int any) {
    const dnnl_dims_t d = {rows, cols}, plain = {cols, 1}, trans = {1, rows};
    if (any)
        DNNL_OK(dnnl_memory_desc_init_by_tag(md, 2, d, dt, dnnl_format_tag_any));
    else
        DNNL_OK(dnnl_memory_desc_init_by_strides(md, 2, d, dt, transposed ? trans : plain));
}

static void packed_make(const struct shape *s, const struct operands *op) {
    if (!packed.engine) {
        DNNL_OK(dnnl_engine_create(&packed.engine, dnnl_cpu, 0));
        DNNL_OK(dnnl_stream_create(&packed.stream, packed.engine, dnnl_stream_default_flags));
    }
    dnnl_memory_desc_t a, b_any, b_plain, c;
    md_2d(&a, s->M, s->K, dnnl_bf16, 0, 0);
    md_2d(&b_any, s->K, s->N, dnnl_bf16, 0, 1);
    md_2d(&b_plain, s->K, s->N, dnnl_bf16, s->tb, 0);
    md_2d(&c, s->M, s->N, dnnl_f32, 0, 0);
    dnnl_matmul_desc_t md;
    DNNL_OK(dnnl_matmul_desc_init(&md, &a, &b_any, NULL, &c));
    dnnl_primitive_attr_t attr;
    DNNL_OK(dnnl_primitive_attr_create(&attr));
    dnnl_post_ops_t po = NULL;
    if (s->beta != 0.0f) {
        DNNL_OK(dnnl_post_ops_create(&po));
        DNNL_OK(dnnl_post_ops_append_sum(po, s->beta));
        DNNL_OK(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    dnnl_primitive_desc_t pd;
    DNNL_OK(dnnl_primitive_desc_create(&pd, &md, attr, packed.engine, NULL));
    DNNL_OK(dnnl_primitive_create(&packed.prim, pd));
    const dnnl_memory_desc_t *b_packed = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    packed.a16 = must_alloc((size_t)(s->M * s->K) * sizeof *packed.a16);
    DNNL_OK(dnnl_memory_create(&packed.a, &a, packed.engine, packed.a16));
    DNNL_OK(dnnl_memory_create(&packed.b, b_packed, packed.engine, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&packed.c, &c, packed.engine, op->C));
    dnnl_memory_t from;
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t reorder;
    DNNL_OK(dnnl_memory_create(&from, &b_plain, packed.engine, op->B16));
    DNNL_OK(dnnl_reorder_primitive_desc_create(&rpd, &b_plain, packed.engine, b_packed, packed.engine, NULL));
    DNNL_OK(dnnl_primitive_create(&reorder, rpd));
    const dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, packed.b}};
    DNNL_OK(dnnl_primitive_execute(reorder, packed.stream, 2, args));
    DNNL_OK(dnnl_stream_wait(packed.stream));
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(from);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
}

/* out (n) = A (n) rounded to bf16, vectorised on the OpenMP threads as gemm_bf16 does it. */
KERNEL_CLONES static void bf16_round(uint16_t *out, const float *A, long n) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) out[i] = f32_to_bf16(A[i]);
}

/* A rounded to bf16, then the matmul. */
static void packed_run(const struct shape *s, const struct operands *op) {
    bf16_round(packed.a16, op->A, s->M * s->K);
    const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, packed.a}, {DNNL_ARG_WEIGHTS, packed.b}, {DNNL_ARG_DST, packed.c}};
    DNNL_OK(dnnl_primitive_execute(packed.prim, packed.stream, 3, args));
    DNNL_OK(dnnl_stream_wait(packed.stream));
}

static void packed_free(void) {
    dnnl_primitive_destroy(packed.prim);
    dnnl_memory_destroy(packed.a);
    dnnl_memory_destroy(packed.b);
    dnnl_memory_destroy(packed.c);
    free(packed.a16);
}

/* One product of shape S on library LIB, exactly as a step calls it. */
static void product(enum lib lib, const struct shape *s, const struct operands *op) {
    const int M = (int)s->M, N = (int)s->N, K = (int)s->K;
    const int lda = s->ta ? M : K, ldb = s->tb ? K : N;
    if (lib == LIB_ONEDNN_BF16_PACKED)
        packed_run(s, op);
    else if (lib == LIB_ONEDNN_BF16)
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
        double t0 = clock_now();
        product(lib, s, op);
        double dt = clock_now() - t0;
        if (dt < best) best = dt;
        total += dt;
        reps++;
    }
    printf("{\"name\": \"%s\", \"lib\": \"%s\", \"trans\": \"%c%c\", \"M\": %ld, \"N\": %ld, \"K\": %ld, "
           "\"beta\": %g, \"frozen\": %d, \"reps\": %d, \"best_s\": %.6g, \"gflops_best\": %.6g, "
           "\"gflops_mean\": %.6g}\n",
           s->name, lib_names[lib], s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->M, s->N, s->K, (double)s->beta,
           s->frozen, reps, best, flops / best * 1e-9, flops * reps / total * 1e-9);
    fflush(stdout);
}

static void time_library(enum lib lib, const struct shape *shapes, size_t n, const struct operands *op,
                         double min_time) {
    if (lib != LIB_ONEDNN_BF16) gemm_set_backend(lib == LIB_OPENBLAS ? GEMM_BACKEND_OPENBLAS : GEMM_BACKEND_ONEDNN);
    for (size_t i = 0; i < n; i++) {
        if (lib == LIB_ONEDNN_BF16 && !shapes[i].frozen) continue;
        time_shape(lib, &shapes[i], op, min_time);
        if (lib != LIB_ONEDNN_BF16 || !gemm_bf16_native()) continue;
        /* the same shape pre-packed right after, so that both see the machine alike */
        packed_make(&shapes[i], op);
        time_shape(LIB_ONEDNN_BF16_PACKED, &shapes[i], op, min_time);
        packed_free();
    }
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
                            "[--head-rows H] [--min-time S]\n");
            return 0;
        }
    const int threads = (int)arg_long(argc, argv, "--threads", 2);
    const long N = arg_long(argc, argv, "--tokens", 1024), C = arg_long(argc, argv, "--dim", 768);
    const long V = arg_long(argc, argv, "--vocab", 50257), R = arg_long(argc, argv, "--rank", 8);
    const long H = arg_long(argc, argv, "--head-rows", 128);
    const char *mt = arg_value(argc, argv, "--min-time");
    const double min_time = mt ? strtod(mt, NULL) : 0.5;
    if (threads < 1 || N < 1 || C < 1 || V < 1 || R < 1 || H < 1) {
        fprintf(stderr, "gemm_peak: every size must be positive\n");
        return 2;
    }
    gemm_set_threads(threads);
    print_libraries(threads);
    if (!gemm_bf16_native())
        fprintf(stderr, "gemm_peak: oneDNN has no bf16 matmul on this CPU: bf16 products run in f32, none "
                        "pre-packed\n");
    /* worker/linear.c: forward gemm(0,0,N,out,in) (beta 0), input gradient gemm(0,1,N,in,out)
     * (beta 1), weight gradient gemm(1,0,in,out,N) (beta 1); the LM head uses wte (V,C) as
     * [out,in], H rows at a time (worker/model.c, model_head); LoRA u = x.A^T (beta 0),
     * out += s u.B^T (beta 1). */
    const struct shape shapes[] = {
        {"fwd c_attn", 0, 0, N, 3 * C, C, 0.0f, 1},
        {"fwd attn.c_proj", 0, 0, N, C, C, 0.0f, 1},
        {"fwd mlp.c_fc", 0, 0, N, 4 * C, C, 0.0f, 1},
        {"fwd mlp.c_proj", 0, 0, N, C, 4 * C, 0.0f, 1},
        {"fwd lm_head", 0, 1, H, V, C, 0.0f, 1},
        {"dx c_attn", 0, 1, N, C, 3 * C, 1.0f, 1},
        {"dx attn.c_proj", 0, 1, N, C, C, 1.0f, 1},
        {"dx mlp.c_fc", 0, 1, N, C, 4 * C, 1.0f, 1},
        {"dx mlp.c_proj", 0, 1, N, 4 * C, C, 1.0f, 1},
        {"dx lm_head", 0, 0, H, C, V, 1.0f, 1},
        {"dw c_attn (full)", 1, 0, C, 3 * C, N, 1.0f, 0},
        {"dw attn.c_proj (full)", 1, 0, C, C, N, 1.0f, 0},
        {"dw mlp.c_fc (full)", 1, 0, C, 4 * C, N, 1.0f, 0},
        {"dw mlp.c_proj (full)", 1, 0, 4 * C, C, N, 1.0f, 0},
        {"dw lm_head (full)", 1, 0, V, C, H, 1.0f, 0},
        {"lora x.A^T", 0, 1, N, R, C, 0.0f, 0},
        {"lora u.B^T", 0, 1, N, C, R, 1.0f, 0},
    };
    const size_t n = sizeof shapes / sizeof shapes[0];
    struct operands op = operands_make(shapes, n);
    for (int lib = 0; lib <= LIB_ONEDNN_BF16; lib++) time_library((enum lib)lib, shapes, n, &op, min_time);
    operands_free(&op);
    if (packed.engine) {
        dnnl_stream_destroy(packed.stream);
        dnnl_engine_destroy(packed.engine);
    }
    gemm_release();
    return 0;
}
