/*
 * test_kernels.c: every kernel's backward against central finite differences of its
 * forward, then the whole GPT-2 model's gradient (LoRA with q/v slices, dropout and a
 * loss mask; and full mode) the same way. The scalar checked is L = sum(out · R) for a
 * random R, so dout = R. Packed rows (several examples a row, kernels.h) are checked
 * the same way, and packed attention against each example run alone. Exits non-zero
 * on any mismatch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "batch.h"
#include "check.h"
#include "error.h"
#include "fileio.h"
#include "hf_config.h"
#include "kernels.h"
#include "linear.h"
#include "model.h"
#include "quant.h"
#include "rng.h"
#include "safetensors.h"

static uint64_t draws;

static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(12345, draws++);
}

static float *rnd(size_t n, float scale) {
    float *x = xcalloc(n, sizeof *x);
    fill(x, n, scale);
    return x;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

/* The central difference of F in X[I] with step H. */
static double central(loss_fn f, void *ctx, float *x, size_t i, float h) {
    float saved = x[i];
    x[i] = saved + h;
    double lp = f(ctx);
    x[i] = saved - h;
    double lm = f(ctx);
    x[i] = saved;
    return (lp - lm) / (2.0 * h);
}

/* Compares GRAD with finite differences of F over up to 48 entries of X: central
 * differences at h and h/2 combined by Richardson extrapolation, so the truncation
 * error is O(h^4) and h can stay large enough for float rounding not to dominate.
 * The error must be under 1e-2 of the gradient's norm, or, for a gradient that is
 * nearly zero (a key bias, which attention almost ignores), under the float rounding
 * of the loss itself: 1e-4 per entry per unit of loss. */
static void fd_check(const char *name, loss_fn f, void *ctx, float *x, const float *grad, size_t n) {
    const float h = 1e-2f;
    double diff2 = 0.0, ref2 = 0.0, loss = fabs(f(ctx));
    size_t stride = n > 48 ? n / 48 : 1, count = 0;
    for (size_t i = 0; i < n; i += stride, count++) {
        double num = (4.0 * central(f, ctx, x, i, h / 2) - central(f, ctx, x, i, h)) / 3.0;
        diff2 += (num - grad[i]) * (num - grad[i]);
        ref2 += num * num;
    }
    double rel = sqrt(diff2) / (sqrt(ref2) + 1e-12), floor = 1e-4 * sqrt((double)count) * (loss > 1 ? loss : 1);
    int ok = ref2 > 0 && (rel < 1e-2 || sqrt(diff2) < floor);
    printf("%-34s rel err %.2e (abs %.1e) %s\n", name, rel, sqrt(diff2), ok ? "ok" : "FAIL");
    checks_note(ok);
}

/* ---- layernorm ---- */
struct ln_ctx {
    int N, C;
    float *x, *w, *b, *out, *mean, *rstd, *R;
};

static double ln_loss(void *p) {
    struct ln_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C, 1e-5f);
    return dot(c->out, c->R, (size_t)c->N * c->C);
}

static void test_layernorm(void) {
    struct ln_ctx c = {.N = 6, .C = 16};
    size_t nc = (size_t)c.N * c.C;
    c.x = rnd(nc, 1.0f), c.w = rnd(c.C, 1.0f), c.b = rnd(c.C, 1.0f), c.R = rnd(nc, 1.0f);
    c.out = rnd(nc, 0), c.mean = rnd(c.N, 0), c.rstd = rnd(c.N, 0);
    float *dx = xcalloc(nc, 4), *dw = xcalloc(c.C, 4), *db = xcalloc(c.C, 4);
    ln_loss(&c);
    layernorm_backward(dx, dw, db, c.R, c.x, c.w, c.mean, c.rstd, c.N, c.C);
    fd_check("layernorm dinp", ln_loss, &c, c.x, dx, nc);
    fd_check("layernorm dweight", ln_loss, &c, c.w, dw, c.C);
    fd_check("layernorm dbias", ln_loss, &c, c.b, db, c.C);
    free(c.x), free(c.w), free(c.b), free(c.R), free(c.out), free(c.mean), free(c.rstd);
    free(dx), free(dw), free(db);
}

/* Examples of the packed rows of B = 2, T = 5 (kernels.h): row 0 holds [0,2) and [2,5),
 * row 1 [0,1), [1,4) and [4,5). */
static const int32_t starts_2x5[10] = {0, 0, 2, 2, 2, 0, 1, 1, 1, 4};

/* ---- attention: GPT-2's packed q,k,v and grouped-query heads in separate buffers ---- */
struct att_ctx {
    struct attn_shape s;
    float *q, *k, *v, *out, *lse, *R, *scratch;
};

#define ATT_SLOTS 2 /* the kernels' OpenMP threads, as many as the test has */

static double att_loss(void *p) {
    struct att_ctx *c = p;
    attention_forward(c->out, c->lse, c->q, c->k, c->v, c->scratch, ATT_SLOTS, &c->s);
    return dot(c->out, c->R, (size_t)c->s.B * c->s.T * c->s.NH * c->s.hd);
}

/* PACKED: one (B,T,3C) buffer as GPT-2's c_attn writes it; otherwise q, k, v apart. */
static void test_attention(struct attn_shape s, int packed, const char *label) {
    struct att_ctx c = {.s = s};
    size_t nq = (size_t)s.B * s.T * s.q_stride, nkv = (size_t)s.B * s.T * s.kv_stride;
    size_t n_out = (size_t)s.B * s.T * s.NH * s.hd, C = (size_t)s.NH * s.hd;
    float *buf = rnd(packed ? nq : nq + 2 * nkv, 1.0f), *dbuf = xcalloc(packed ? nq : nq + 2 * nkv, 4);
    c.q = buf, c.k = packed ? buf + C : buf + nq, c.v = packed ? buf + 2 * C : buf + nq + nkv;
    float *dq = dbuf, *dk = packed ? dbuf + C : dbuf + nq, *dv = packed ? dbuf + 2 * C : dbuf + nq + nkv;
    c.R = rnd(n_out, 1.0f), c.out = rnd(n_out, 0), c.lse = rnd((size_t)s.B * s.NH * s.T, 0);
    c.scratch = xcalloc(attention_scratch_size(s.T, ATT_SLOTS), 4);
    att_loss(&c);
    attention_backward(dq, dk, dv, c.scratch, ATT_SLOTS, c.R, c.q, c.k, c.v, c.lse, &s);
    char name[64];
    snprintf(name, sizeof name, "attention %s%s dq,dk,dv", label, s.start ? " segments" : "");
    fd_check(name, att_loss, &c, buf, dbuf, packed ? nq : nq + 2 * nkv);
    free(buf), free(dbuf), free(c.R), free(c.out), free(c.lse), free(c.scratch);
}

/* The rows [a, a+n) of X (rows of STRIDE floats, B rows of T) from sequence b, or back. */
static void rows_copy(float *dst, const float *src, int stride, int T, int b, int a, int n, int to_sub) {
    for (int t = 0; t < n; t++) {
        float *d = to_sub ? dst + (size_t)t * stride : dst + ((size_t)b * T + a + t) * stride;
        const float *x = to_sub ? src + ((size_t)b * T + a + t) * stride : src + (size_t)t * stride;
        memcpy(d, x, (size_t)stride * sizeof(float));
    }
}

/* Attention over packed rows (S.start) equals attention over each example alone: the
 * outputs, log-sum-exps and gradients of each example's rows, to float rounding (the
 * products differ in size, so their sums round apart). Q, K, V apart. */
static void test_attention_alone(struct attn_shape s, const char *label) {
    const int T = s.T, ldo = s.NH * s.hd;
    size_t nq = (size_t)s.B * T * s.q_stride, nkv = (size_t)s.B * T * s.kv_stride, n_out = (size_t)s.B * T * ldo;
    float *q = rnd(nq, 1), *k = rnd(nkv, 1), *v = rnd(nkv, 1), *R = rnd(n_out, 1);
    float *out = xcalloc(n_out, 4), *lse = xcalloc((size_t)s.B * s.NH * T, 4);
    float *dq = xcalloc(nq, 4), *dk = xcalloc(nkv, 4), *dv = xcalloc(nkv, 4);
    float *scratch = xcalloc(attention_scratch_size(T, ATT_SLOTS), 4);
    attention_forward(out, lse, q, k, v, scratch, ATT_SLOTS, &s);
    attention_backward(dq, dk, dv, scratch, ATT_SLOTS, R, q, k, v, lse, &s);
    /* the same arrays again, each example alone (its rows as a sequence of its own) */
    float *out1 = xcalloc(n_out, 4), *lse1 = xcalloc((size_t)s.B * s.NH * T, 4);
    float *dq1 = xcalloc(nq, 4), *dk1 = xcalloc(nkv, 4), *dv1 = xcalloc(nkv, 4);
    float *sq = xcalloc(nq, 4), *sk = xcalloc(nkv, 4), *sv = xcalloc(nkv, 4), *sR = xcalloc(n_out, 4);
    float *so = xcalloc(n_out, 4), *sl = xcalloc((size_t)s.NH * T, 4);
    float *sdq = xcalloc(nq, 4), *sdk = xcalloc(nkv, 4), *sdv = xcalloc(nkv, 4);
    int examples = 0;
    for (int b = 0; b < s.B; b++)
        for (int a = 0; a < T;) {
            int e = a + 1;
            while (e < T && s.start[(size_t)b * T + e] == a) e++;
            const int n = e - a;
            struct attn_shape one = s;
            one.B = 1, one.T = n, one.start = NULL;
            rows_copy(sq, q, s.q_stride, T, b, a, n, 1), rows_copy(sk, k, s.kv_stride, T, b, a, n, 1);
            rows_copy(sv, v, s.kv_stride, T, b, a, n, 1), rows_copy(sR, R, ldo, T, b, a, n, 1);
            memset(sdq, 0, nq * 4), memset(sdk, 0, nkv * 4), memset(sdv, 0, nkv * 4);
            attention_forward(so, sl, sq, sk, sv, scratch, ATT_SLOTS, &one);
            attention_backward(sdq, sdk, sdv, scratch, ATT_SLOTS, sR, sq, sk, sv, sl, &one);
            rows_copy(out1, so, ldo, T, b, a, n, 0), rows_copy(dq1, sdq, s.q_stride, T, b, a, n, 0);
            rows_copy(dk1, sdk, s.kv_stride, T, b, a, n, 0), rows_copy(dv1, sdv, s.kv_stride, T, b, a, n, 0);
            for (int h = 0; h < s.NH; h++)
                memcpy(lse1 + ((size_t)b * s.NH + h) * T + a, sl + (size_t)h * n, (size_t)n * 4);
            examples++;
            a = e;
        }
    const float *got[] = {out, lse, dq, dk, dv}, *want[] = {out1, lse1, dq1, dk1, dv1};
    const size_t len[] = {n_out, (size_t)s.B * s.NH * T, nq, nkv, nkv};
    double worst = 0;
    for (int i = 0; i < 5; i++)
        for (size_t j = 0; j < len[i]; j++) {
            double d = fabs((double)got[i][j] - want[i][j]) / (1.0 + fabs((double)want[i][j]));
            worst = d > worst ? d : worst;
        }
    int ok = worst < 1e-5 && examples > s.B;
    printf("%-34s %d examples, worst rel %.1e %s\n", label, examples, worst, ok ? "ok" : "FAIL");
    checks_note(ok);
    float *all[] = {q, k, v, R, out, lse, dq, dk, dv, scratch, out1, lse1, dq1, dk1, dv1, sq, sk, sv, sR, so, sl,
                    sdq, sdk, sdv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

/* The heads run on separate threads: one thread and ATT_SLOTS threads give the same bits. */
static void test_attention_threads(struct attn_shape s) {
    size_t nq = (size_t)s.B * s.T * s.q_stride, n_out = (size_t)s.B * s.T * s.NH * s.hd;
    float *qkv = rnd(nq, 1.0f), *R = rnd(n_out, 1.0f), *res[2];
    struct att_ctx c = {.s = s, .q = qkv, .k = qkv + s.NH * s.hd, .v = qkv + 2 * s.NH * s.hd, .R = R};
    c.out = xcalloc(n_out, 4), c.lse = xcalloc((size_t)s.B * s.NH * s.T, 4);
    c.scratch = xcalloc(attention_scratch_size(s.T, ATT_SLOTS), 4);
    for (int threads = 1; threads <= 2; threads++) {
        gemm_set_threads(threads);
        res[threads - 1] = xcalloc(n_out + nq, 4);
        att_loss(&c);
        memcpy(res[threads - 1], c.out, n_out * 4);
        attention_backward(res[threads - 1] + n_out, res[threads - 1] + n_out + s.NH * s.hd,
                           res[threads - 1] + n_out + 2 * s.NH * s.hd, c.scratch, ATT_SLOTS, R, c.q, c.k, c.v,
                           c.lse, &s);
    }
    int same = memcmp(res[0], res[1], (n_out + nq) * 4) == 0;
    printf("%-34s %s\n", "attention 1 vs 2 threads", same ? "identical ok" : "FAIL: differ");
    checks_note(same);
    gemm_set_threads(ATT_SLOTS);
    free(qkv), free(R), free(c.out), free(c.lse), free(c.scratch), free(res[0]), free(res[1]);
}

/* ---- RMSNorm ---- */
struct rms_ctx {
    int N, C;
    float *x, *w, *out, *rstd, *R;
};

static double rms_loss(void *p) {
    struct rms_ctx *c = p;
    rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-6f);
    return dot(c->out, c->R, (size_t)c->N * c->C);
}

static void test_rmsnorm(void) {
    struct rms_ctx c = {.N = 6, .C = 16};
    size_t nc = (size_t)c.N * c.C;
    c.x = rnd(nc, 1.0f), c.w = rnd(c.C, 1.0f), c.R = rnd(nc, 1.0f), c.out = rnd(nc, 0), c.rstd = rnd(c.N, 0);
    float *dx = xcalloc(nc, 4), *dw = xcalloc(c.C, 4);
    rms_loss(&c);
    rmsnorm_backward(dx, dw, c.R, c.x, c.w, c.rstd, c.N, c.C);
    fd_check("rmsnorm dinp", rms_loss, &c, c.x, dx, nc);
    fd_check("rmsnorm dweight", rms_loss, &c, c.w, dw, c.C);
    free(c.x), free(c.w), free(c.R), free(c.out), free(c.rstd), free(dx), free(dw);
}

/* ---- rotary embedding (Llama 3 scaling on) ---- */
struct rope_ctx {
    int B, T, stride, nheads, hd;
    const int32_t *start;
    float *x, *work, *cos, *sin, *R;
};

static double rope_loss(void *p) {
    struct rope_ctx *c = p;
    size_t n = (size_t)c->B * c->T * c->stride;
    memcpy(c->work, c->x, n * sizeof(float));
    rope_forward(c->work, c->start, c->cos, c->sin, c->B, c->T, c->stride, c->nheads, c->hd);
    return dot(c->work, c->R, n);
}

static void test_rope(const int32_t *start) {
    /* 2 floats per row untouched */
    struct rope_ctx c = {.B = 2, .T = 5, .stride = 14, .nheads = 3, .hd = 4, .start = start};
    struct rope_scaling sc = {.factor = 8, .low_freq_factor = 1, .high_freq_factor = 4, .original_max_position = 4};
    size_t n = (size_t)c.B * c.T * c.stride;
    c.x = rnd(n, 1), c.work = rnd(n, 0), c.R = rnd(n, 1);
    c.cos = rnd((size_t)c.T * c.hd / 2, 0), c.sin = rnd((size_t)c.T * c.hd / 2, 0);
    rope_tables(c.cos, c.sin, c.T, c.hd, 10000.0, &sc);
    float *dx = xcalloc(n, 4);
    memcpy(dx, c.R, n * sizeof(float));
    rope_backward(dx, start, c.cos, c.sin, c.B, c.T, c.stride, c.nheads, c.hd);
    fd_check(start ? "rope dinp packed" : "rope dinp", rope_loss, &c, c.x, dx, n);
    /* unscaled tables are cos/sin of t * theta^(-2i/hd) */
    rope_tables(c.cos, c.sin, c.T, c.hd, 10000.0, NULL);
    float want = cosf(3.0f * (float)(1.0 / pow(10000.0, 2.0 / 4))), got = c.cos[3 * 2 + 1];
    int ok = fabsf(got - want) < 1e-6f;
    printf("%-34s got %.7f want %.7f %s\n", "rope table t=3 i=1", got, want, ok ? "ok" : "FAIL");
    EXPECT(ok);
    free(c.x), free(c.work), free(c.R), free(c.cos), free(c.sin), free(dx);
}

/* ---- SwiGLU ---- */
struct swiglu_ctx {
    int N;
    float *gate, *up, *out, *R;
};

static double swiglu_loss(void *p) {
    struct swiglu_ctx *c = p;
    swiglu_forward(c->out, c->gate, c->up, c->N);
    return dot(c->out, c->R, (size_t)c->N);
}

static void test_swiglu(void) {
    struct swiglu_ctx c = {.N = 64};
    c.gate = rnd(c.N, 2), c.up = rnd(c.N, 1), c.R = rnd(c.N, 1), c.out = rnd(c.N, 0);
    float *dg = xcalloc(c.N, 4), *du = xcalloc(c.N, 4);
    swiglu_backward(dg, du, c.R, c.gate, c.up, c.N);
    fd_check("swiglu dgate", swiglu_loss, &c, c.gate, dg, c.N);
    fd_check("swiglu dup", swiglu_loss, &c, c.up, du, c.N);
    free(c.gate), free(c.up), free(c.R), free(c.out), free(dg), free(du);
}

/* ---- gelu ---- */
struct gelu_ctx {
    int N;
    float *x, *out, *R;
};

static double gelu_loss(void *p) {
    struct gelu_ctx *c = p;
    gelu_forward(c->out, c->x, c->N);
    return dot(c->out, c->R, (size_t)c->N);
}

static void test_gelu(void) {
    struct gelu_ctx c = {.N = 64};
    c.x = rnd(c.N, 2.0f), c.R = rnd(c.N, 1.0f), c.out = rnd(c.N, 0);
    float *dx = xcalloc(c.N, 4);
    gelu_backward(dx, c.x, c.R, c.N);
    fd_check("gelu dinp", gelu_loss, &c, c.x, dx, c.N);
    free(c.x), free(c.R), free(c.out), free(dx);
}

/* ---- encoder ---- */
struct enc_ctx {
    int B, T, C;
    int32_t *inp;
    const int32_t *start;
    float *wte, *wpe, *out, *R;
};

static double enc_loss(void *p) {
    struct enc_ctx *c = p;
    encoder_forward(c->out, c->inp, c->start, c->wte, c->wpe, c->B, c->T, c->C);
    return dot(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_encoder(const int32_t *start) {
    struct enc_ctx c = {.B = 2, .T = 5, .C = 8, .start = start};
    const int V = 5;
    int32_t inp[10] = {0, 3, 3, 1, 4, 0, 2, 3, 1, 1};
    c.inp = inp;
    size_t n = (size_t)c.B * c.T * c.C;
    c.wte = rnd((size_t)V * c.C, 1), c.wpe = rnd((size_t)c.T * c.C, 1), c.out = rnd(n, 0), c.R = rnd(n, 1);
    float *dwte = xcalloc((size_t)V * c.C, 4), *dwpe = xcalloc((size_t)c.T * c.C, 4);
    encoder_backward(dwte, dwpe, c.R, c.inp, start, c.B, c.T, c.C);
    fd_check(start ? "encoder dwte packed" : "encoder dwte", enc_loss, &c, c.wte, dwte, (size_t)V * c.C);
    fd_check(start ? "encoder dwpe packed" : "encoder dwpe", enc_loss, &c, c.wpe, dwpe, (size_t)c.T * c.C);
    free(c.wte), free(c.wpe), free(c.out), free(c.R), free(dwte), free(dwpe);
}

/* ---- cross-entropy ---- */
struct ce_ctx {
    int N, V;
    float *logits, *work, *losses;
    int32_t *tgt;
    uint8_t *mask;
    float scale;
};

static double ce_loss(void *p) {
    struct ce_ctx *c = p;
    memcpy(c->work, c->logits, (size_t)c->N * c->V * sizeof(float));
    return c->scale * crossentropy_forward(c->work, c->losses, c->tgt, c->mask, 0.0f, c->N, c->V);
}

static void test_crossentropy(void) {
    struct ce_ctx c = {.N = 6, .V = 11, .scale = 0.25f};
    int32_t tgt[6] = {0, 10, 3, 3, 7, 1};
    uint8_t mask[6] = {1, 1, 0, 1, 1, 0};
    c.tgt = tgt, c.mask = mask;
    size_t n = (size_t)c.N * c.V;
    c.logits = rnd(n, 2), c.work = rnd(n, 0), c.losses = rnd(c.N, 0);
    memcpy(c.work, c.logits, n * sizeof(float));
    const double loss = c.scale * crossentropy_forward(c.work, c.losses, c.tgt, c.mask, c.scale, c.N, c.V);
    float *grad = xcalloc(n, 4);
    memcpy(grad, c.work, n * sizeof(float));
    EXPECT(loss == ce_loss(&c)); /* the gradient pass leaves the loss as it is */
    fd_check("crossentropy dlogits", ce_loss, &c, c.logits, grad, n);
    free(c.logits), free(c.work), free(c.losses), free(grad);
}

/* ---- linear with LoRA adapters and dropout ---- */
struct lin_ctx {
    struct linear *l;
    int N;
    float *x, *out, *R, *scratch;
    const struct lora_rows *rows;
};

static double lin_loss(void *p) {
    struct lin_ctx *c = p;
    linear_forward(c->l, c->out, c->x, c->scratch, c->rows, c->N);
    return dot(c->out, c->R, (size_t)c->N * c->l->out);
}

/* Gradients of a linear with two adapters (q and v slices), of one set over every row, or
 * of two sets each over its own rows (ROWS, with their dropout). */
static void test_linear(enum gemm_layout layout, const struct lora_rows *rows, const char *label) {
    const int N = 6, in = 10, out = 12, r = 3;
    struct lora_adapter ad[2] = {
        {.id = 0, .slice = 0, .r = r, .in = in, .out = 4, .col0 = 0, .scale = 1.5f},
        {.id = 1, .slice = 2, .r = r, .in = in, .out = 4, .col0 = 8, .scale = 0.5f, .set = rows->n_sets - 1},
    };
    for (int k = 0; k < 2; k++) {
        ad[k].A = rnd((size_t)r * in, 1), ad[k].B = rnd((size_t)4 * r, 1);
        ad[k].dA = xcalloc((size_t)r * in, 4), ad[k].dB = xcalloc((size_t)4 * r, 4);
        ad[k].u = xcalloc((size_t)N * r, 4);
    }
    struct linear l = {.in = in, .out = out, .layout = layout, .lora = {&ad[0], &ad[1]}, .n_lora = 2};
    float *w = rnd((size_t)in * out, 1), *b = rnd(out, 1);
    l.w = w, l.b = b, l.dw = xcalloc((size_t)in * out, 4), l.db = xcalloc(out, 4);
    struct lin_ctx c = {.l = &l, .N = N, .x = rnd((size_t)N * in, 1), .out = rnd((size_t)N * out, 0),
                        .R = rnd((size_t)N * out, 1), .rows = rows};
    c.scratch = xcalloc(linear_scratch_size(&l, N), 4);
    float *dx = xcalloc((size_t)N * in, 4);
    lin_loss(&c);
    linear_backward(&l, dx, c.R, c.x, c.scratch, rows, N);
    char name[64];
    snprintf(name, sizeof name, "linear %s dinp", label);
    fd_check(name, lin_loss, &c, c.x, dx, (size_t)N * in);
    snprintf(name, sizeof name, "linear %s dweight", label);
    fd_check(name, lin_loss, &c, w, l.dw, (size_t)in * out);
    snprintf(name, sizeof name, "linear %s dbias", label);
    fd_check(name, lin_loss, &c, b, l.db, out);
    for (int k = 0; k < 2; k++) {
        snprintf(name, sizeof name, "linear %s lora%d dA", label, k);
        fd_check(name, lin_loss, &c, ad[k].A, ad[k].dA, (size_t)r * in);
        snprintf(name, sizeof name, "linear %s lora%d dB", label, k);
        fd_check(name, lin_loss, &c, ad[k].B, ad[k].dB, (size_t)4 * r);
    }
    if (rows->n_sets == 2) {
        /* each set's rows are what its adapter alone gives them: the other set's adapter
         * and its dropout leave them untouched */
        float *alone = xcalloc((size_t)N * out, 4);
        double worst = 0.0;
        for (int k = 0; k < 2; k++) {
            const int r0 = rows->row0[k], n = rows->row0[k + 1] - r0;
            struct lora_adapter one = ad[k];
            one.set = 0;
            struct linear lk = l;
            lk.lora[0] = &one, lk.n_lora = 1;
            struct lora_rows rk = {.n_sets = 1, .row0 = {0, n}, .dp = {rows->dp[k]}};
            linear_forward(&lk, alone + (size_t)r0 * out, c.x + (size_t)r0 * in, c.scratch, &rk, n);
        }
        linear_forward(&l, c.out, c.x, c.scratch, rows, N);
        for (size_t i = 0; i < (size_t)N * out; i++)
            if (fabs(alone[i] - c.out[i]) > worst) worst = fabs(alone[i] - c.out[i]);
        printf("%-34s max diff %.1e %s\n", "linear two sets = each alone", worst, worst < 1e-5 ? "ok" : "FAIL");
        checks_note(worst < 1e-5);
        free(alone);
    }
    for (int k = 0; k < 2; k++) free(ad[k].A), free(ad[k].B), free(ad[k].dA), free(ad[k].dB), free(ad[k].u);
    free(w), free(b), free(l.dw), free(l.db), free(c.x), free(c.out), free(c.R), free(c.scratch), free(dx);
}

static float *heavy(size_t n) {
    float *x = rnd(n, 0.05f);
    for (size_t i = 0; i < n; i += 47) x[i] *= 9.0f;
    return x;
}

static float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

/* The NF4 code nearest to X by distance (the format's definition; lorad counts midpoints). */
static int nf4_nearest(float x) {
    int best = 0;
    for (int i = 1; i < 16; i++)
        if (fabsf(quant_nf4_code[i] - x) < fabsf(quant_nf4_code[best] - x)) best = i;
    return best;
}

/* W[r, c] as the format defines it, from W itself: the reference each decoding must equal. */
static float quant_reference(enum quant_kind kind, int block, const float *w, int cols, int r, int c) {
    const float *b = w + (size_t)r * cols + c / block * block;
    float m = 0.0f;
    for (int i = 0; i < block; i++) m = fmaxf(m, fabsf(b[i]));
    const float x = w[(size_t)r * cols + c];
    if (kind == QUANT_NF4) return m > 0.0f ? quant_nf4_code[nf4_nearest(x / m)] * m : 0.0f;
    const float s = m / 127.0f;
    return s > 0.0f ? fminf(127.0f, fmaxf(-127.0f, rintf(x / s))) * s : 0.0f;
}

/* A quantized (rows, cols) weight of KIND with blocks of BLOCK, encoded from W; free q and scale. */
static struct qweight qweight_make(enum quant_kind kind, int block, const float *w, int rows, int cols) {
    uint8_t *q = xcalloc(quant_code_bytes(kind, rows, cols), 1);
    float *scale = xcalloc((size_t)rows * (cols / block), sizeof *scale);
    quant_encode(kind, block, w, rows, cols, q, scale);
    return (struct qweight){.kind = kind, .rows = rows, .cols = cols, .block = block, .q = q, .scale = scale};
}

static void qweight_free(struct qweight *q) { free((void *)q->q), free((void *)q->scale); }

/* Encoding then decoding, whole and as a tile at an offset, the AVX-512 and the plain
 * form: every element the bf16 of the format's reference value, within half a step of W. */
static void test_quant_codec(enum quant_kind kind, int block, const char *label) {
    const int rows = 5, cols = 256;
    float *w = heavy((size_t)rows * cols);
    w[3] = 0.0f; /* and one block all zero */
    memset(w + 2 * cols + 64, 0, 64 * sizeof *w);
    struct qweight q = qweight_make(kind, block, w, rows, cols);
    uint16_t *out = xcalloc((size_t)rows * cols, sizeof *out);
    for (int simd = 1; simd >= 0; simd--) {
        quant_use_simd(simd);
        int bad = 0, far = 0;
        quant_decode_bf16(&q, 0, rows, 0, cols, out, cols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                const float ref = quant_reference(kind, block, w, cols, r, c), got = bf16_to_f32(out[(size_t)r * cols + c]);
                bad += got != round_bf16(ref);
                /* the step: s for int8, the widest gap between codes (0.304) times absmax for nf4 */
                const float step = kind == QUANT_INT8 ? q.scale[(size_t)r * (cols / block) + c / block]
                                                      : 0.31f * q.scale[(size_t)r * (cols / block) + c / block];
                far += fabsf(ref - w[(size_t)r * cols + c]) > 0.5f * step * 1.0001f;
            }
        /* a tile: rows 1..3, columns 64..192, into a wider buffer */
        uint16_t tile[3 * 200];
        quant_decode_bf16(&q, 1, 4, 64, 192, tile, 200);
        for (int r = 1; r < 4; r++)
            for (int c = 64; c < 192; c++) bad += tile[(r - 1) * 200 + c - 64] != out[(size_t)r * cols + c];
        printf("quant %-10s %-6s decoded %d of %d off the reference, %d beyond half a step %s\n", label,
               simd ? "simd" : "plain", bad, rows * cols, far, bad || far ? "FAIL" : "ok");
        checks_note(bad == 0 && far == 0);
    }
    quant_use_simd(1);
    qweight_free(&q);
    free(w), free(out);
}

/* gemm_quant against a product in double of the same bf16 operands, over several tiles
 * (the last one partial) both ways, with beta 1 and a bias. */
static void test_gemm_quant(enum quant_kind kind) {
    const int M = 7, out = 640, in = 2048;
    float *w = heavy((size_t)out * in);
    struct qweight q = qweight_make(kind, QUANT_BLOCK, w, out, in);
    uint16_t *w16 = xcalloc((size_t)out * in, sizeof *w16);
    quant_decode_bf16(&q, 0, out, 0, in, w16, in); /* checked by test_quant_codec */
    for (int forward = 1; forward >= 0; forward--) {
        const int N = forward ? out : in, K = forward ? in : out;
        float *A = rnd((size_t)M * K, 1), *C = rnd((size_t)M * N, 1), *bias = forward ? rnd(N, 1) : NULL;
        double *ref = xcalloc((size_t)M * N, sizeof *ref);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double acc = forward ? bias[n] : C[(size_t)m * N + n]; /* forward: beta 0; input gradient: beta 1 */
                for (int k = 0; k < K; k++) {
                    const size_t wi = forward ? (size_t)n * in + k : (size_t)k * in + n;
                    acc += (double)round_bf16(A[(size_t)m * K + k]) * bf16_to_f32(w16[wi]);
                }
                ref[(size_t)m * N + n] = acc;
            }
        gemm_quant(forward, M, N, K, A, K, &q, forward ? 0.0f : 1.0f, bias, C, N);
        double d2 = 0.0, r2 = 0.0;
        for (size_t i = 0; i < (size_t)M * N; i++) d2 += (C[i] - ref[i]) * (C[i] - ref[i]), r2 += ref[i] * ref[i];
        const double rel = sqrt(d2 / r2);
        printf("gemm_quant %-4s %-10s rel err %.2e %s\n", kind == QUANT_INT8 ? "int8" : "nf4",
               forward ? "forward" : "input_grad", rel, rel < 1e-5 ? "ok" : "FAIL");
        checks_note(rel < 1e-5);
        free(A), free(C), free(bias), free(ref);
    }
    qweight_free(&q);
    free(w), free(w16);
}

/* max |x - y| / max |y| over N. */
static double max_rel(const float *x, const float *y, size_t n) {
    double d = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)x[i] - y[i])), m = fmax(m, fabs((double)y[i]));
    return d / (m > 0 ? m : 1);
}

/* A linear on a quantized weight, with an adapter, against the same linear in f32 on the
 * weight decoded (bf16 values) stored as LAYOUT says, its inputs already bf16: the same
 * products but for the order of f32 sums, so the output, the input gradient and the
 * adapter's gradients agree to 1e-5. The f32 linear is the one test_linear checks. */
static void test_linear_quant(enum gemm_layout layout) {
    const int N = 9, in = 128, out = 192, r = 4;
    float *w = heavy((size_t)out * in), *wf = xcalloc((size_t)out * in, sizeof *wf);
    struct qweight q = qweight_make(QUANT_NF4, QUANT_BLOCK, w, out, in);
    uint16_t *w16 = xcalloc((size_t)out * in, sizeof *w16);
    quant_decode_bf16(&q, 0, out, 0, in, w16, in);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++)
            wf[layout == GEMM_LAYOUT_OUT_IN ? (size_t)o * in + i : (size_t)i * out + o] = bf16_to_f32(w16[(size_t)o * in + i]);
    float *bias = rnd(out, 1), *x = rnd((size_t)N * in, 1), *R = rnd((size_t)N * out, 1);
    for (size_t i = 0; i < (size_t)N * in; i++) x[i] = round_bf16(x[i]);
    for (size_t i = 0; i < (size_t)N * out; i++) R[i] = round_bf16(R[i]); /* the backward's input, dout */
    float *A = rnd((size_t)r * in, 1), *B = rnd((size_t)out * r, 1);
    float *res[2][4]; /* out, dinp, dA, dB of the quantized and the f32 linear */
    for (int k = 0; k < 2; k++) {
        struct lora_adapter ad = {.r = r, .in = in, .out = out, .scale = 2.0f, .A = A, .B = B,
                                  .u = xcalloc((size_t)N * r, 4)};
        ad.dA = xcalloc((size_t)r * in, 4), ad.dB = xcalloc((size_t)out * r, 4);
        struct linear l = {.in = in, .out = out, .layout = layout, .b = bias, .lora = {&ad}, .n_lora = 1};
        if (k == 0) l.wq = &q; else l.w = wf;
        float *scratch = xcalloc(linear_scratch_size(&l, N), 4);
        res[k][0] = xcalloc((size_t)N * out, 4), res[k][1] = xcalloc((size_t)N * in, 4);
        linear_forward(&l, res[k][0], x, scratch, NULL, N);
        linear_backward(&l, res[k][1], R, x, scratch, NULL, N);
        res[k][2] = ad.dA, res[k][3] = ad.dB;
        free(ad.u), free(scratch);
    }
    const size_t n[4] = {(size_t)N * out, (size_t)N * in, (size_t)r * in, (size_t)out * r};
    static const char *const what[4] = {"out", "dinp", "dA", "dB"};
    for (int t = 0; t < 4; t++) {
        const double e = max_rel(res[0][t], res[1][t], n[t]);
        printf("linear nf4 %-6s %-4s against f32 on the decoded weight: %.2e %s\n",
               layout == GEMM_LAYOUT_OUT_IN ? "out_in" : "in_out", what[t], e, e < 1e-5 ? "ok" : "FAIL");
        checks_note(e < 1e-5);
        free(res[0][t]), free(res[1][t]);
    }
    qweight_free(&q);
    free(w), free(wf), free(w16), free(bias), free(x), free(R), free(A), free(B);
}

/* ---- the whole model ---- */
static void model_write(const char *dir, const struct model_config *cfg) {
    CHECK(dir_make(dir) == 0 && hf_config_write(cfg, dir) == 0);
    const int64_t C = cfg->n_embd, F = cfg->n_inner;
    char names[64][64];
    struct st_write_entry e[64];
    int n = 0;
#define T2(nm, a, b) (snprintf(names[n], 64, "%s", nm), e[n] = (struct st_write_entry){names[n], rnd((a) * (b), 0.3f), 2, {a, b}, ST_DTYPE_F32}, n++)
#define T1(nm, a, s) (snprintf(names[n], 64, "%s", nm), e[n] = (struct st_write_entry){names[n], rnd(a, s), 1, {a}, ST_DTYPE_F32}, n++)
    T2("wte.weight", (int64_t)cfg->vocab_size, C);
    T2("wpe.weight", (int64_t)cfg->n_positions, C);
    for (int l = 0; l < cfg->n_layer; l++) {
        char p[64];
#define NM(s) (snprintf(p, sizeof p, "h.%d.%s", l, s), p)
        T1(NM("ln_1.weight"), C, 1.0f);
        T1(NM("ln_1.bias"), C, 0.3f);
        T2(NM("attn.c_attn.weight"), C, 3 * C);
        T1(NM("attn.c_attn.bias"), 3 * C, 0.3f);
        T2(NM("attn.c_proj.weight"), C, C);
        T1(NM("attn.c_proj.bias"), C, 0.3f);
        T1(NM("ln_2.weight"), C, 1.0f);
        T1(NM("ln_2.bias"), C, 0.3f);
        T2(NM("mlp.c_fc.weight"), C, F);
        T1(NM("mlp.c_fc.bias"), F, 0.3f);
        T2(NM("mlp.c_proj.weight"), F, C);
        T1(NM("mlp.c_proj.bias"), C, 0.3f);
    }
    T1("ln_f.weight", C, 1.0f);
    T1("ln_f.bias", C, 0.3f);
    char *path = path_join(dir, "model.safetensors");
    CHECK(safetensors_write(path, e, n, NULL, 0) == 0);
    free(path);
    for (int i = 0; i < n; i++) free((void *)e[i].data);
}

/* A Llama-family model with grouped-query attention, attention biases (q, k, v and o,
 * as Llama's attention_bias gives), an untied head and Llama 3 rope scaling. */
static void llama_write(const char *dir) {
    static const char config[] =
        "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, "
        "\"intermediate_size\": 12, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
        "\"head_dim\": 4, \"max_position_embeddings\": 16, \"vocab_size\": 9, \"rms_norm_eps\": 1e-6, "
        "\"tie_word_embeddings\": false, \"attention_bias\": true, \"rope_theta\": 100.0, "
        "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 4.0, \"low_freq_factor\": 1.0, "
        "\"high_freq_factor\": 2.0, \"original_max_position_embeddings\": 4}}";
    CHECK(dir_make(dir) == 0);
    char *path = path_join(dir, "config.json");
    CHECK(file_write_atomic(path, config, strlen(config)) == 0);
    free(path);
    const int64_t C = 8, F = 12, Q = 8, KV = 4, V = 9;
    char names[64][64];
    struct st_write_entry e[64];
    int n = 0;
    T2("model.embed_tokens.weight", V, C);
    for (int l = 0; l < 2; l++) {
        char p[64];
#define LN(s) (snprintf(p, sizeof p, "model.layers.%d.%s", l, s), p)
        T1(LN("input_layernorm.weight"), C, 1.0f);
        T2(LN("self_attn.q_proj.weight"), Q, C);
        T1(LN("self_attn.q_proj.bias"), Q, 0.3f);
        T2(LN("self_attn.k_proj.weight"), KV, C);
        T1(LN("self_attn.k_proj.bias"), KV, 0.3f);
        T2(LN("self_attn.v_proj.weight"), KV, C);
        T1(LN("self_attn.v_proj.bias"), KV, 0.3f);
        T2(LN("self_attn.o_proj.weight"), C, Q);
        T1(LN("self_attn.o_proj.bias"), C, 0.3f);
        T1(LN("post_attention_layernorm.weight"), C, 1.0f);
        T2(LN("mlp.gate_proj.weight"), F, C);
        T2(LN("mlp.up_proj.weight"), F, C);
        T2(LN("mlp.down_proj.weight"), C, F);
    }
    T1("model.norm.weight", C, 1.0f);
    T2("lm_head.weight", V, C);
    path = path_join(dir, "model.safetensors");
    CHECK(safetensors_write(path, e, n, NULL, 0) == 0);
    free(path);
    for (int i = 0; i < n; i++) free((void *)e[i].data);
}

struct model_ctx {
    struct model *m;
    int32_t *inp, *tgt;
    const int32_t *start;
    uint8_t *mask;
    int B;
    const struct lora_rows *rows;
};

static double model_loss(void *p) {
    struct model_ctx *c = p;
    return 0.1 * model_forward(c->m, c->inp, c->start, c->tgt, c->mask, c->B, c->rows, 0.0f);
}

static int model_open(struct model *m, const char *dir, int full, const struct lora_spec *sets, int32_t n_sets,
                      int32_t B, int32_t T) {
    struct model_options o = {.dir = dir, .full = full, .max_batch = B, .seq = T, .sets = sets, .n_sets = n_sets,
                              .head_rows = 3}; /* the head's 10 rows in chunks of 3, 3, 3, 1 */
    if (model_init(m, &o) == 0) {
        /* B starts at zero: give it values so every path carries gradient, keyed by the
         * set's seed and the adapter's id, as A is */
        for (int32_t i = 0; i < m->n_adapters; i++) {
            const struct lora_adapter *ad = &m->adapters[i];
            for (size_t k = 0; k < (size_t)ad->out * ad->r; k++)
                ad->B[k] = 0.5f * rng_normal(sets[ad->set].seed * 64 + (uint64_t)ad->id, k);
        }
        return 0;
    }
    printf("model_init: %s FAIL\n", err_msg());
    checks_note(0);
    return -1;
}

static const int32_t model_inp[10] = {1, 4, 4, 0, 6, 2, 2, 5, 3, 1}, model_tgt[10] = {4, 4, 0, 6, 2, 2, 5, 3, 1, 0};
static const uint8_t model_mask[10] = {1, 1, 0, 1, 1, 1, 1, 1, 0, 1};

/* Every trainable gradient of a model of N_SETS adapter sets (none: FULL) over two
 * sequences against finite differences; with two sets each owns one sequence. */
static void test_model(const char *dir, int full, const struct lora_spec *sets, int32_t n_sets, const int32_t *start) {
    struct model m;
    if (model_open(&m, dir, full, sets, n_sets, 2, 5)) return;
    int32_t inp[10], tgt[10];
    uint8_t mask[10];
    memcpy(inp, model_inp, sizeof inp), memcpy(tgt, model_tgt, sizeof tgt), memcpy(mask, model_mask, sizeof mask);
    struct lora_rows rows = {.n_sets = m.n_sets, .row0 = {0, n_sets == 2 ? 5 : 10, 10},
                             .dp = {{.p = full ? 0.0f : 0.25f, .seed = 1, .step = 2, .first = 3, .T = 5},
                                    {.p = 0.1f, .seed = 4, .step = 6, .first = 0, .T = 5}}};
    struct model_ctx c = {.m = &m, .inp = inp, .tgt = tgt, .start = start, .mask = mask, .B = 2, .rows = &rows};
    memset(m.tr.g, 0, m.tr.n * sizeof(float));
    model_forward(&m, inp, start, tgt, mask, 2, &rows, 0.1f);
    model_backward(&m, inp, 2, &rows);
    for (int32_t i = 0; i < m.tr.n_entries; i++) {
        const struct trainable_entry *e = &m.tr.entries[i];
        size_t n = (size_t)e->shape[0] * (e->ndim == 2 ? (size_t)e->shape[1] : 1);
        char name[64];
        snprintf(name, sizeof name, "%s%s %.26s", full ? "full" : n_sets == 2 ? "2 sets" : "lora", start ? " packed" : "",
                 e->name + (strlen(e->name) > 26 ? strlen(e->name) - 26 : 0));
        fd_check(name, model_loss, &c, trainable_w(&m.tr, i), trainable_g(&m.tr, i), n);
    }
    model_free(&m);
}

/* Two adapter sets, each over its own sequence, give each sequence the losses and each
 * set the gradients of that set trained alone on its sequence: same initial A (keyed by
 * the set's seed and its own adapter ids), dropout counted within the set's rows. */
static void test_model_sets_alone(const char *dir, const struct lora_spec *sets, const char *label) {
    struct model both;
    if (model_open(&both, dir, 0, sets, 2, 2, 5)) return;
    const struct lora_rows rows = {.n_sets = 2, .row0 = {0, 5, 10},
                                   .dp = {{.p = 0.25f, .seed = 1, .step = 2, .first = 3, .T = 5},
                                          {.p = 0.1f, .seed = 4, .step = 6, .first = 0, .T = 5}}};
    memset(both.tr.g, 0, both.tr.n * sizeof(float));
    model_forward(&both, model_inp, NULL, model_tgt, model_mask, 2, &rows, 0.1f);
    model_backward(&both, model_inp, 2, &rows);
    double worst_loss = 0.0, worst_grad = 0.0;
    int spans = 1;
    for (int g = 0; g < 2; g++) {
        struct model one;
        if (model_open(&one, dir, 0, &sets[g], 1, 1, 5)) break;
        const struct lora_rows alone = {.n_sets = 1, .row0 = {0, 5}, .dp = {rows.dp[g]}};
        memset(one.tr.g, 0, one.tr.n * sizeof(float));
        model_forward(&one, model_inp + 5 * g, NULL, model_tgt + 5 * g, model_mask + 5 * g, 1, &alone, 0.1f);
        model_backward(&one, model_inp + 5 * g, 1, &alone);
        for (int t = 0; t < 5; t++) {
            double d = fabs(model_losses(&one)[t] - model_losses(&both)[5 * g + t]);
            if (d > worst_loss) worst_loss = d;
        }
        /* set g's span of BOTH is laid out as ONE: the same initial values, the gradients */
        const struct trainable p = model_set_params(&both, g);
        spans &= p.n == one.tr.n && !memcmp(p.w, one.tr.w, p.n * sizeof(float));
        for (size_t i = 0; i < one.tr.n && i < p.n; i++) {
            double d = fabs(one.tr.g[i] - p.g[i]) / (fabs(one.tr.g[i]) + 1e-3);
            if (d > worst_grad) worst_grad = d;
        }
        model_free(&one);
    }
    spans &= model_set_params(&both, 0).n + model_set_params(&both, 1).n == both.tr.n;
    int ok = worst_loss < 1e-5 && worst_grad < 1e-4 && spans;
    printf("%-34s loss %.1e grad %.1e %s\n", label, worst_loss, worst_grad, ok ? "ok" : "FAIL");
    checks_note(ok);
    model_free(&both);
}

/* Two jobs in one joint step (batch_run_jobs): job 0 two sequences of 5 in one
 * micro-batch, job 1 two of 3 (padded to the model's 5) one at a time, each with its own
 * dropout: each job's loss sum and gradients are those of the job alone (batch_grads on a
 * model of its set and its own T). */
static void test_model_jobs_alone(const char *dir, const struct lora_spec *sets, const char *label) {
    const int32_t Ts[2] = {5, 3}, micro[2] = {2, 1};
    struct batch b[2], joint;
    for (int j = 0; j < 2; j++) {
        batch_init(&b[j], 2, Ts[j]);
        b[j].n = 2;
        for (int32_t i = 0; i < 2 * Ts[j]; i++) {
            b[j].inp[i] = model_inp[(i + 3 * j) % 10];
            b[j].tgt[i] = model_tgt[(i + 3 * j) % 10];
            b[j].mask[i] = model_mask[(i + j) % 10];
        }
    }
    const struct batch_job jobs[2] = {{.b = &b[0], .micro = 2, .p = 0.25f, .seed = 1, .step = 2, .first = 3},
                                      {.b = &b[1], .micro = 1, .p = 0.1f, .seed = 4, .step = 6, .first = 0}};
    struct model both;
    if (model_open(&both, dir, 0, sets, 2, 3, 5)) return;
    batch_init(&joint, 3, 5);
    double sums[2] = {0.0, 0.0}, worst_loss = 0.0, worst_grad = 0.0;
    memset(both.tr.g, 0, both.tr.n * sizeof(float));
    batch_run_jobs(&both, jobs, 2, &joint, 1, sums);
    int spans = 1;
    for (int j = 0; j < 2; j++) {
        struct model one;
        if (model_open(&one, dir, 0, &sets[j], 1, micro[j], Ts[j])) break;
        memset(one.tr.g, 0, one.tr.n * sizeof(float));
        double alone = batch_grads(&one, &b[j], micro[j], 1.0f, jobs[j].p, jobs[j].seed, jobs[j].step, jobs[j].first);
        worst_loss = fmax(worst_loss, fabs(alone - sums[j]) / fabs(alone));
        const struct trainable p = model_set_params(&both, j);
        spans &= p.n == one.tr.n;
        for (size_t i = 0; i < one.tr.n && i < p.n; i++)
            worst_grad = fmax(worst_grad, fabs(one.tr.g[i] - p.g[i]) / (fabs(one.tr.g[i]) + 1e-3));
        model_free(&one);
    }
    int ok = worst_loss < 1e-6 && worst_grad < 1e-4 && spans && sums[0] != 0.0 && sums[1] != 0.0;
    printf("%-34s loss %.1e grad %.1e %s\n", label, worst_loss, worst_grad, ok ? "ok" : "FAIL");
    checks_note(ok);
    model_free(&both);
    batch_free(&joint), batch_free(&b[0]), batch_free(&b[1]);
}

int main(void) {
    gemm_set_threads(ATT_SLOTS);
    test_layernorm();
    test_attention((struct attn_shape){.B = 2, .T = 5, .NH = 2, .NKV = 2, .hd = 4, .q_stride = 24, .kv_stride = 24}, 1,
                   "mha packed");
    test_attention((struct attn_shape){.B = 2, .T = 5, .NH = 4, .NKV = 2, .hd = 3, .q_stride = 12, .kv_stride = 6}, 0,
                   "gqa");
    /* longer than one block of query rows (64), the last block partial */
    test_attention((struct attn_shape){.B = 1, .T = 150, .NH = 2, .NKV = 1, .hd = 4, .q_stride = 8, .kv_stride = 4},
                   0, "gqa 150 rows");
    test_attention_threads((struct attn_shape){.B = 2, .T = 100, .NH = 3, .NKV = 3, .hd = 8, .q_stride = 72,
                                               .kv_stride = 72});
    /* packed rows: segments within and across blocks of query rows, a block starting mid-example */
    test_attention((struct attn_shape){.B = 2, .T = 5, .NH = 2, .NKV = 2, .hd = 4, .q_stride = 24, .kv_stride = 24,
                                       .start = starts_2x5},
                   1, "mha packed");
    test_attention((struct attn_shape){.B = 2, .T = 5, .NH = 4, .NKV = 2, .hd = 3, .q_stride = 12, .kv_stride = 6,
                                       .start = starts_2x5},
                   0, "gqa");
    int32_t start150[300];
    for (int t = 0; t < 150; t++) start150[t] = t < 40 ? 0 : t < 100 ? 40 : t < 149 ? 100 : 149;
    for (int t = 0; t < 150; t++) start150[150 + t] = t < 70 ? 0 : 70;
    test_attention((struct attn_shape){.B = 1, .T = 150, .NH = 2, .NKV = 1, .hd = 4, .q_stride = 8, .kv_stride = 4,
                                       .start = start150},
                   0, "gqa 150 rows");
    test_attention_alone((struct attn_shape){.B = 2, .T = 150, .NH = 4, .NKV = 2, .hd = 8, .q_stride = 40,
                                             .kv_stride = 24, .start = start150},
                         "attention packed = each alone");
    test_attention_alone((struct attn_shape){.B = 2, .T = 5, .NH = 2, .NKV = 1, .hd = 4, .q_stride = 8,
                                             .kv_stride = 4, .start = starts_2x5},
                         "attention packed = each alone 2x5");
    test_gelu();
    test_rmsnorm();
    test_rope(NULL);
    test_rope(starts_2x5);
    test_swiglu();
    test_encoder(NULL);
    test_encoder(starts_2x5);
    test_crossentropy();
    const struct lora_rows one = {.n_sets = 1, .row0 = {0, 6}, .dp = {{.p = 0.0f, .T = 3}}};
    const struct lora_rows dropped = {.n_sets = 1, .row0 = {0, 6}, .dp = {{.p = 0.3f, .seed = 5, .step = 3, .first = 7, .T = 3}}};
    /* rows 0-1 set 0, 2-5 set 1 (one whole sequence and part of another: T 2 and 4) */
    const struct lora_rows two = {.n_sets = 2, .row0 = {0, 2, 6},
                                  .dp = {{.p = 0.3f, .seed = 5, .step = 3, .first = 7, .T = 2},
                                         {.p = 0.2f, .seed = 8, .step = 1, .first = 0, .T = 4}}};
    test_linear(GEMM_LAYOUT_IN_OUT, &one, "in_out");
    test_linear(GEMM_LAYOUT_OUT_IN, &dropped, "out_in+dropout");
    test_linear(GEMM_LAYOUT_OUT_IN, &two, "two sets+dropout");
    test_quant_codec(QUANT_INT8, QUANT_BLOCK, "int8 b64");
    test_quant_codec(QUANT_INT8, 256, "int8 row");
    test_quant_codec(QUANT_NF4, QUANT_BLOCK, "nf4");
    test_gemm_quant(QUANT_INT8);
    test_gemm_quant(QUANT_NF4);
    test_linear_quant(GEMM_LAYOUT_IN_OUT);
    test_linear_quant(GEMM_LAYOUT_OUT_IN);
    const char *dir = scratch_dir("kernels_model");
    struct model_config cfg = {.arch = MODEL_ARCH_GPT2, .n_layer = 2, .n_head = 2, .n_embd = 8, .n_inner = 12,
                               .n_positions = 7, .vocab_size = 9, .layer_norm_eps = 1e-5f};
    model_write(dir, &cfg);
    static const char *const gpt2_targets[] = {"q", "v", "mlp.c_fc"}, *const gpt2_other[] = {"attn.c_proj", "c_fc"};
    const struct lora_spec gpt2_sets[2] = {
        {.targets = gpt2_targets, .n_targets = 3, .rank = 2, .alpha = 3.0f, .init_gaussian = 1, .seed = 9},
        {.targets = gpt2_other, .n_targets = 2, .rank = 3, .alpha = 5.0f, .rslora = 1, .seed = 11}};
    test_model(dir, 0, gpt2_sets, 1, NULL);
    test_model(dir, 0, gpt2_sets, 2, NULL);
    test_model_sets_alone(dir, gpt2_sets, "gpt2 2 sets = each alone");
    test_model_jobs_alone(dir, gpt2_sets, "gpt2 2 jobs, T 5 and 3 = each alone");
    test_model(dir, 1, NULL, 0, NULL);
    test_model(dir, 1, NULL, 0, starts_2x5);
    const char *llama = scratch_dir("kernels_llama");
    llama_write(llama);
    static const char *const llama_targets[] = {"q_proj", "v_proj", "o_proj", "down_proj"},
                             *const llama_other[] = {"k_proj", "v_proj", "gate_proj", "up_proj"};
    const struct lora_spec llama_sets[2] = {
        {.targets = llama_targets, .n_targets = 4, .rank = 2, .alpha = 3.0f, .init_gaussian = 1, .seed = 9},
        {.targets = llama_other, .n_targets = 4, .rank = 4, .alpha = 2.0f, .seed = 3}};
    test_model(llama, 0, llama_sets, 1, NULL);
    test_model(llama, 0, llama_sets, 1, starts_2x5);
    test_model(llama, 0, llama_sets, 2, starts_2x5);
    test_model_sets_alone(llama, llama_sets, "llama 2 sets = each alone");
    test_model_jobs_alone(llama, llama_sets, "llama 2 jobs, T 5 and 3 = each alone");
    test_model(llama, 1, NULL, 0, NULL);
    return check_finish();
}
