/*
 * kernels.h: the forward and backward kernels of a transformer layer, on raw float
 * arrays in the style of llm.c. Each pair is checked against finite differences in
 * tests/test_kernels.c. Backward kernels ACCUMULATE (+=) into their gradient outputs;
 * a gradient output that is NULL is not computed (frozen weights).
 * Shapes: B batch, T time, C channels, NH heads, V vocabulary, N = B*T rows.
 *
 * Packed samples hold several examples a row. START (B,T) gives, for each position t of
 * a row, the position its example starts at: start[t] <= t, non-decreasing along the
 * row. Position t then has the position id t - start[t] (wpe, rotary angle) and attends
 * to positions start[t]..t only. START NULL: every row is one example from position 0.
 */
#ifndef LORAD_KERNELS_H
#define LORAD_KERNELS_H

#include <stdint.h>

/* out (B,T,C) = wte[inp] + wpe[position id]; inp, start (B,T), wte (V,C), wpe (maxT,C) */
void encoder_forward(float *out, const int32_t *inp, const int32_t *start, const float *wte, const float *wpe, int B,
                     int T, int C);
/* dwte (V,C), dwpe (maxT,C) may be NULL; dout (B,T,C); inp, start (B,T) */
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, const int32_t *start, int B,
                      int T, int C);

/* out, inp (N,C); mean, rstd (N) saved for backward; weight, bias (C) */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps);
/* dinp, dout, inp (N,C); dweight, dbias (C) may be NULL */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);

/* RMSNorm (Llama): out = inp / sqrt(mean(inp²) + eps) * weight. out, inp (N,C);
 * rstd (N) saved for backward; weight (C) */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
/* dinp, dout, inp (N,C); dweight (C) may be NULL */
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C);

/* Rotary position embedding in Hugging Face's rotate_half form: in every head of HD
 * floats, the pair (i, i + HD/2) turns by the angle of the position id and frequency i.
 * x (B,T,stride) holds NHEADS heads from offset 0 of each row, rotated in place;
 * start (B,T); cos, sin (T, HD/2) from rope_tables. */
void rope_forward(float *x, const int32_t *start, const float *cos, const float *sin, int B, int T, int stride,
                  int nheads, int hd);
/* The transpose rotation, in place on a gradient laid out as x. */
void rope_backward(float *dx, const int32_t *start, const float *cos, const float *sin, int B, int T, int stride,
                   int nheads, int hd);

/* Llama 3's frequency scaling (rope_type "llama3"); factor 0 means none. */
struct rope_scaling {
    double factor, low_freq_factor, high_freq_factor;
    int32_t original_max_position;
};
/* cos, sin (T, HD/2) of t · inv_freq[i], inv_freq[i] = THETA^(-2i/HD), scaled by S. */
void rope_tables(float *cos, float *sin, int T, int hd, double theta, const struct rope_scaling *s);

/* SwiGLU: out = silu(gate) * up, all (N) */
void swiglu_forward(float *out, const float *gate, const float *up, int N);
/* dgate, dup (N) accumulate */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int N);

/* The layout of attention's inputs: B sequences of T positions; q has NH heads of HD
 * floats per row of Q_STRIDE floats, k and v have NKV heads per row of KV_STRIDE floats
 * (grouped-query attention: query head h reads key/value head h / (NH / NKV)); START
 * (B,T) the examples of packed rows, or NULL. */
struct attn_shape {
    int B, T, NH, NKV, hd;
    int q_stride, kv_stride;
    const int32_t *start;
};

/* Floats of scratch attention_forward/backward need for SLOTS threads at length T. */
uint64_t attention_scratch_size(int T, int slots);

/* Causal self-attention with scale 1/sqrt(hd), block-diagonal over the examples of packed
 * rows, one block of query rows at a time, so no (T,T) matrix is kept: q (B,T,q_stride), k, v (B,T,kv_stride); out (B,T,NH*hd);
 * lse (B,NH,T) each row's log-sum-exp of the scores, saved for backward. Heads run on
 * up to SLOTS threads (scratch per attention_scratch_size). */
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, float *scratch,
                       int slots, const struct attn_shape *s);
/* dq, dk, dv laid out as q, k, v (accumulated); dout (B,T,NH*hd); q, k, v, lse as in
 * the forward, whose probabilities it recomputes. */
void attention_backward(float *dq, float *dk, float *dv, float *scratch, int slots, const float *dout,
                        const float *q, const float *k, const float *v, const float *lse,
                        const struct attn_shape *s);

/* GELU, tanh form. out, inp (N) */
void gelu_forward(float *out, const float *inp, int N);
/* dinp, inp, dout (N) */
void gelu_backward(float *dinp, const float *inp, const float *dout, int N);

/* out = inp1 + inp2, all (N) */
void residual_forward(float *out, const float *inp1, const float *inp2, int N);

/* Softmax cross-entropy and, in the same pass, its gradient. logits (N,V); losses (N);
 * targets (N); mask (N) bytes, 0 = not counted. Returns the sum of the counted losses
 * (double). With GRAD_SCALE nonzero the logits become (in place) the gradient of
 * GRAD_SCALE * that sum, uncounted rows zero; otherwise they are left clobbered. */
double crossentropy_forward(float *logits, float *losses, const int32_t *targets, const uint8_t *mask,
                            float grad_scale, int N, int V);

#endif
