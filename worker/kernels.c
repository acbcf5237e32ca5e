/*
 * kernels.c: the transformer-layer kernels declared in kernels.h. Loops over rows run on
 * the OpenMP threads gemm_set_threads() sets, each row on one thread, so results do not
 * depend on the thread count; attention's products and the linear maps go through
 * gemm(). The pointwise loops are built for AVX-512, AVX2 and plain x86-64 and chosen
 * at load time, with an exp that vectorises.
 */
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "gemm.h"
#include "simd.h"

/* Query rows of causal attention handled per block (its scratch is 2 blocks of T). */
#define ATTN_BLOCK 64

/* e^x to about 2 ulp over the float range, branch-free so that loops vectorise: x =
 * n·ln2 + r with |r| <= ln2/2, e^r by Cephes' polynomial, 2^n into the exponent bits.
 * n comes from the rounding trick (adding 1.5·2^23 leaves n in the low mantissa bits),
 * so no float-to-int conversion is needed, and a NaN stays NaN without undefined
 * behaviour. */
static inline float exp_fast(float x) {
    x = x < -87.33f ? -87.33f : x > 88.3f ? 88.3f : x;
    union {
        float f;
        uint32_t u;
    } v = {.f = x * 1.44269504089f + 12582912.0f}, two_n;
    const float n = v.f - 12582912.0f;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    two_n.u = (v.u + 127u) << 23; /* the bits of 2^n: (n + 127) << 23, the rest shifted out */
    return p * two_n.f;
}

/* tanh(u) = 1 − 2 / (e^{2u} + 1) */
static inline float tanh_fast(float u) { return 1.0f - 2.0f / (exp_fast(2.0f * u) + 1.0f); }

/* The position id of position T of row B (kernels.h). */
static inline int position_id(const int32_t *start, int b, int T, int t) {
    return start ? t - start[(size_t)b * T + t] : t;
}

void encoder_forward(float *out, const int32_t *inp, const int32_t *start, const float *wte, const float *wpe, int B,
                     int T, int C) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = wte + (size_t)inp[b * T + t] * C;
            const float *pe = wpe + (size_t)position_id(start, b, T, t) * C;
            for (int i = 0; i < C; i++) o[i] = te[i] + pe[i];
        }
    }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, const int32_t *start, int B,
                      int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            if (dwte) {
                float *g = dwte + (size_t)inp[b * T + t] * C;
                for (int i = 0; i < C; i++) g[i] += d[i];
            }
            if (dwpe) {
                float *g = dwpe + (size_t)position_id(start, b, T, t) * C;
                for (int i = 0; i < C; i++) g[i] += d[i];
            }
        }
    }
}

KERNEL_CLONES void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                     const float *bias, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double m = 0.0;
#pragma omp simd reduction(+ : m)
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        double v = 0.0;
#pragma omp simd reduction(+ : v)
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= C;
        float s = (float)(1.0 / sqrt(v + eps));
#pragma omp simd
        for (int i = 0; i < C; i++) o[i] = (float)((x[i] - m) * s) * weight[i] + bias[i];
        mean[n] = (float)m;
        rstd[n] = s;
    }
}

/* dinp (N,C) += the input gradient, one row per thread. */
KERNEL_CLONES static void layernorm_backward_inp(float *dinp, const float *dout, const float *inp, const float *weight,
                                   const float *mean, const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        double dnorm_mean = 0.0, dnorm_norm_mean = 0.0;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
#pragma omp simd
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            dx[i] += (float)((dnorm - dnorm_mean - norm * dnorm_norm_mean) * s);
        }
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    layernorm_backward_inp(dinp, dout, inp, weight, mean, rstd, N, C);
    if (!dweight && !dbias) return;
    /* the parameter gradients sum over rows: one column per thread, rows in order */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++)
        for (int n = 0; n < N; n++) {
            const float d = dout[(size_t)n * C + i];
            if (dbias) dbias[i] += d;
            if (dweight) dweight[i] += (inp[(size_t)n * C + i] - mean[n]) * rstd[n] * d;
        }
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        for (int i = 0; i < C; i++) o[i] = weight[i] * (x[i] * r);
        rstd[n] = r;
    }
}

void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        const float r = rstd[n];
        double dot = 0.0; /* sum of (w·dy)·x */
        for (int i = 0; i < C; i++) dot += (double)weight[i] * d[i] * x[i];
        const float k = (float)(dot / C) * r * r * r;
        for (int i = 0; i < C; i++) dx[i] += weight[i] * d[i] * r - k * x[i];
    }
    if (!dweight) return;
    /* one column per thread, rows in order */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++)
        for (int n = 0; n < N; n++) dweight[i] += dout[(size_t)n * C + i] * inp[(size_t)n * C + i] * rstd[n];
}

/* Turns every head's pairs by the angle of its position id; SIGN -1 turns back. */
static void rope_turn(float *x, const int32_t *start, const float *cos, const float *sin, int B, int T, int stride,
                      int nheads, int hd, float sign) {
    const int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t pos = (size_t)position_id(start, b, T, t);
            const float *c = cos + pos * half, *s = sin + pos * half;
            for (int h = 0; h < nheads; h++) {
                float *v = x + ((size_t)b * T + t) * stride + (size_t)h * hd;
                for (int i = 0; i < half; i++) {
                    float a = v[i], z = v[i + half], si = sign * s[i];
                    v[i] = a * c[i] - z * si;
                    v[i + half] = z * c[i] + a * si;
                }
            }
        }
}

void rope_forward(float *x, const int32_t *start, const float *cos, const float *sin, int B, int T, int stride,
                  int nheads, int hd) {
    rope_turn(x, start, cos, sin, B, T, stride, nheads, hd, 1.0f);
}

void rope_backward(float *dx, const int32_t *start, const float *cos, const float *sin, int B, int T, int stride,
                   int nheads, int hd) {
    rope_turn(dx, start, cos, sin, B, T, stride, nheads, hd, -1.0f);
}

/* Llama 3: low frequencies slowed by FACTOR, high ones kept, a smooth blend between. */
static double rope_scale(double freq, const struct rope_scaling *s) {
    const double old = s->original_max_position, wavelen = 2.0 * M_PI / freq;
    if (wavelen < old / s->high_freq_factor) return freq;
    if (wavelen > old / s->low_freq_factor) return freq / s->factor;
    double smooth = (old / wavelen - s->low_freq_factor) / (s->high_freq_factor - s->low_freq_factor);
    return (1.0 - smooth) * freq / s->factor + smooth * freq;
}

void rope_tables(float *cos, float *sin, int T, int hd, double theta, const struct rope_scaling *s) {
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        /* as Hugging Face: the frequency in float32 */
        float freq = (float)(1.0 / pow(theta, (double)(2 * i) / hd));
        if (s && s->factor > 0) freq = (float)rope_scale(freq, s);
        for (int t = 0; t < T; t++) {
            float angle = (float)t * freq;
            cos[(size_t)t * half + i] = cosf(angle);
            sin[(size_t)t * half + i] = sinf(angle);
        }
    }
}

KERNEL_CLONES void swiglu_forward(float *out, const float *gate, const float *up, int N) {
#pragma omp parallel for simd schedule(static)
    for (int i = 0; i < N; i++) out[i] = gate[i] / (1.0f + exp_fast(-gate[i])) * up[i];
}

KERNEL_CLONES void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                   int N) {
#pragma omp parallel for simd schedule(static)
    for (int i = 0; i < N; i++) {
        float sig = 1.0f / (1.0f + exp_fast(-gate[i])), silu = gate[i] * sig;
        dgate[i] += dout[i] * up[i] * sig * (1.0f + gate[i] * (1.0f - sig));
        dup[i] += dout[i] * silu;
    }
}

uint64_t attention_scratch_size(int T, int slots) { return (uint64_t)slots * 2 * ATTN_BLOCK * (uint64_t)T; }

/* Pointers to one query head's and its key/value head's rows in sequence b. */
struct attn_head {
    const float *q, *k, *v; /* (T, hd) with strides q_stride, kv_stride */
    const int32_t *start;   /* (T) the examples of the row, or NULL */
    size_t out;             /* offset of the head in out/dout rows of NH*hd */
    size_t lse;             /* offset of its (T) log-sum-exps */
};

static struct attn_head attn_head(const struct attn_shape *s, const float *q, const float *k, const float *v,
                                  int b, int h) {
    const size_t kvo = (size_t)b * s->T * s->kv_stride + (size_t)(h / (s->NH / s->NKV)) * s->hd;
    return (struct attn_head){q + (size_t)b * s->T * s->q_stride + (size_t)h * s->hd, k + kvo, v + kvo,
                              s->start ? s->start + (size_t)b * s->T : NULL,
                              ((size_t)b * s->T) * s->NH * s->hd + (size_t)h * s->hd,
                              ((size_t)b * s->NH + h) * s->T};
}

/* A block of query rows r0..r0+rows-1 and the key columns c0..r0+rows-1 they may see:
 * from the start of the first row's example (the starts do not decrease along a row). */
struct attn_block {
    int r0, rows, c0, cols; /* cols = r0 + rows - c0 */
};

static struct attn_block attn_block(const struct attn_head *a, int T, int r0) {
    const int rows = T - r0 < ATTN_BLOCK ? T - r0 : ATTN_BLOCK, c0 = a->start ? a->start[r0] : 0;
    return (struct attn_block){r0, rows, c0, r0 + rows - c0};
}

/* S (rows, cols) = scale · q[r0:r0+rows] · k[c0:c0+cols]ᵀ with row stride T: one block
 * of scores, column j being key position c0 + j. */
static void attn_scores(float *S, const struct attn_head *a, const struct attn_shape *s, const struct attn_block *k) {
    const float scale = 1.0f / sqrtf((float)s->hd);
    gemm(0, 1, k->rows, k->cols, s->hd, scale, a->q + (size_t)k->r0 * s->q_stride, s->q_stride,
         a->k + (size_t)k->c0 * s->kv_stride, s->kv_stride, 0.0f, S, s->T);
}

/* The columns of block row i that its query sees: [*lo, *hi] (relative to c0). */
static void attn_row_span(const struct attn_head *a, const struct attn_block *k, int i, int *lo, int *hi) {
    const int t = k->r0 + i;
    *lo = (a->start ? a->start[t] : 0) - k->c0;
    *hi = t - k->c0;
}

KERNEL_CLONES static void attn_softmax_rows(float *S, float *lse, const struct attn_head *a, int T,
                                            const struct attn_block *k) {
    for (int i = 0; i < k->rows; i++) {
        float *row = S + (size_t)i * T;
        int lo, hi;
        attn_row_span(a, k, i, &lo, &hi);
        float maxv = -INFINITY;
        for (int j = lo; j <= hi; j++) maxv = row[j] > maxv ? row[j] : maxv;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = lo; j <= hi; j++) {
            row[j] = exp_fast(row[j] - maxv);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int j = lo; j <= hi; j++) row[j] *= inv;
        for (int j = 0; j < lo; j++) row[j] = 0.0f;
        for (int j = hi + 1; j < k->cols; j++) row[j] = 0.0f;
        lse[k->r0 + i] = maxv + logf(sum);
    }
}

void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, float *scratch,
                       int slots, const struct attn_shape *s) {
    const int T = s->T, ldo = s->NH * s->hd, heads = s->B * s->NH;
    const int nt = omp_get_max_threads() < slots ? omp_get_max_threads() : slots;
#pragma omp parallel for schedule(dynamic) num_threads(nt) if (gemm_nests())
    for (int bh = 0; bh < heads; bh++) {
        float *S = scratch + (size_t)omp_get_thread_num() * 2 * ATTN_BLOCK * T;
        const struct attn_head a = attn_head(s, q, k, v, bh / s->NH, bh % s->NH);
        for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
            const struct attn_block blk = attn_block(&a, T, r0);
            attn_scores(S, &a, s, &blk);
            attn_softmax_rows(S, lse + a.lse, &a, T, &blk);
            gemm(0, 0, blk.rows, s->hd, blk.cols, 1.0f, S, T, a.v + (size_t)blk.c0 * s->kv_stride, s->kv_stride,
                 0.0f, out + a.out + (size_t)r0 * ldo, ldo);
        }
    }
}

/* P from the saved log-sum-exp, then dS = scale · P ∘ (dP − rowsum(P ∘ dP)) in place of dP. */
KERNEL_CLONES static void attn_softmax_backward(float *P, float *dP, const float *lse, float scale,
                                                const struct attn_head *a, int T, const struct attn_block *k) {
    for (int i = 0; i < k->rows; i++) {
        float *p = P + (size_t)i * T, *dp = dP + (size_t)i * T;
        const int t = k->r0 + i;
        int lo, hi;
        attn_row_span(a, k, i, &lo, &hi);
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = lo; j <= hi; j++) {
            p[j] = exp_fast(p[j] - lse[t]);
            dot += p[j] * dp[j];
        }
#pragma omp simd
        for (int j = lo; j <= hi; j++) dp[j] = scale * p[j] * (dp[j] - dot);
        for (int j = 0; j < lo; j++) p[j] = dp[j] = 0.0f;
        for (int j = hi + 1; j < k->cols; j++) p[j] = dp[j] = 0.0f;
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, int slots, const float *dout,
                        const float *q, const float *k, const float *v, const float *lse,
                        const struct attn_shape *s) {
    const int T = s->T, hd = s->hd, ldo = s->NH * hd, group = s->NH / s->NKV, kv_heads = s->B * s->NKV;
    const int qs = s->q_stride, kvs = s->kv_stride;
    const float scale = 1.0f / sqrtf((float)hd);
    const int nt = omp_get_max_threads() < slots ? omp_get_max_threads() : slots;
    /* one task per key/value head: the query heads of its group add to its dk, dv */
#pragma omp parallel for schedule(dynamic) num_threads(nt) if (gemm_nests())
    for (int bg = 0; bg < kv_heads; bg++) {
        float *P = scratch + (size_t)omp_get_thread_num() * 2 * ATTN_BLOCK * T, *dP = P + (size_t)ATTN_BLOCK * T;
        const int b = bg / s->NKV;
        for (int h = (bg % s->NKV) * group; h < (bg % s->NKV + 1) * group; h++) {
            const struct attn_head a = attn_head(s, q, k, v, b, h);
            const size_t qo = (size_t)(a.q - q), kvo = (size_t)(a.k - k);
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                const struct attn_block blk = attn_block(&a, T, r0);
                const int rows = blk.rows, cols = blk.cols;
                const size_t kc = kvo + (size_t)blk.c0 * kvs, qr = (size_t)r0 * qs;
                const float *d = dout + a.out + (size_t)r0 * ldo;
                attn_scores(P, &a, s, &blk);
                gemm(0, 1, rows, cols, hd, 1.0f, d, ldo, v + kc, kvs, 0.0f, dP, T); /* dP = dO·Vᵀ */
                attn_softmax_backward(P, dP, lse + a.lse, scale, &a, T, &blk);
                gemm(1, 0, cols, hd, rows, 1.0f, P, T, d, ldo, 1.0f, dv + kc, kvs);             /* dV += Pᵀ·dO */
                gemm(0, 0, rows, hd, cols, 1.0f, dP, T, k + kc, kvs, 1.0f, dq + qo + qr, qs);   /* dQ += dS·K */
                gemm(1, 0, cols, hd, rows, 1.0f, dP, T, a.q + qr, qs, 1.0f, dk + kc, kvs);      /* dK += dSᵀ·Q */
            }
        }
    }
}

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

KERNEL_CLONES void gelu_forward(float *out, const float *inp, int N) {
#pragma omp parallel for simd schedule(static)
    for (int i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_fast(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

KERNEL_CLONES void gelu_backward(float *dinp, const float *inp, const float *dout, int N) {
#pragma omp parallel for simd schedule(static)
    for (int i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanh_fast(GELU_SCALE * (x + 0.044715f * x * x * x));
        float sech2 = 1.0f - th * th;
        float local = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
}

KERNEL_CLONES void residual_forward(float *out, const float *inp1, const float *inp2, int N) {
#pragma omp parallel for simd schedule(static)
    for (int i = 0; i < N; i++) out[i] = inp1[i] + inp2[i];
}

/* One row p (V): returns the loss of TARGET; when SCALE is nonzero p becomes its gradient
 * SCALE · (softmax(p) − onehot(TARGET)), otherwise exp(p − max p). */
KERNEL_CLONES static float crossentropy_row(float *p, int32_t target, float scale, int V) {
    float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
    for (int i = 0; i < V; i++) maxv = p[i] > maxv ? p[i] : maxv;
    const float target_logit = p[target];
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; i++) {
        p[i] = exp_fast(p[i] - maxv);
        sum += p[i];
    }
    if (scale != 0.0f) {
        const float k = scale / sum;
#pragma omp simd
        for (int i = 0; i < V; i++) p[i] *= k;
        p[target] -= scale;
    }
    return logf(sum) + maxv - target_logit;
}

double crossentropy_forward(float *logits, float *losses, const int32_t *targets, const uint8_t *mask,
                            float grad_scale, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *row = logits + (size_t)n * V;
        losses[n] = crossentropy_row(row, targets[n], mask[n] ? grad_scale : 0.0f, V);
        if (grad_scale != 0.0f && !mask[n]) memset(row, 0, (size_t)V * sizeof *row);
    }
    double total = 0.0; /* in row order, whatever the threads */
    for (int n = 0; n < N; n++)
        if (mask[n]) total += losses[n];
    return total;
}
