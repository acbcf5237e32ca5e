/*
 * kernels.c: the transformer-layer kernels declared in kernels.h. Plain loops; the
 * matrix products live in linear.c on top of gemm().
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

void encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = wte + (size_t)inp[b * T + t] * C;
            const float *pe = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = te[i] + pe[i];
        }
    }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            if (dwte) {
                float *g = dwte + (size_t)inp[b * T + t] * C;
                for (int i = 0; i < C; i++) g[i] += d[i];
            }
            if (dwpe) {
                float *g = dwpe + (size_t)t * C;
                for (int i = 0; i < C; i++) g[i] += d[i];
            }
        }
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double m = 0.0;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        double v = 0.0;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= C;
        float s = (float)(1.0 / sqrt(v + eps));
        for (int i = 0; i < C; i++) o[i] = (float)((x[i] - m) * s) * weight[i] + bias[i];
        mean[n] = (float)m;
        rstd[n] = s;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        double dnorm_mean = 0.0, dnorm_norm_mean = 0.0;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            if (dbias) dbias[i] += d[i];
            if (dweight) dweight[i] += norm * d[i];
            dx[i] += (float)((dnorm - dnorm_mean - norm * dnorm_norm_mean) * s);
        }
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
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
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        const float r = rstd[n];
        double dot = 0.0; /* sum of (w·dy)·x */
        for (int i = 0; i < C; i++) dot += (double)weight[i] * d[i] * x[i];
        const float k = (float)(dot / C) * r * r * r;
        for (int i = 0; i < C; i++) {
            dx[i] += weight[i] * d[i] * r - k * x[i];
            if (dweight) dweight[i] += d[i] * x[i] * r;
        }
    }
}

/* Turns every head's pairs by the angle of its position; SIGN -1 turns back. */
static void rope_turn(float *x, const float *cos, const float *sin, int B, int T, int stride, int nheads, int hd,
                      float sign) {
    const int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos + (size_t)t * half, *s = sin + (size_t)t * half;
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

void rope_forward(float *x, const float *cos, const float *sin, int B, int T, int stride, int nheads, int hd) {
    rope_turn(x, cos, sin, B, T, stride, nheads, hd, 1.0f);
}

void rope_backward(float *dx, const float *cos, const float *sin, int B, int T, int stride, int nheads, int hd) {
    rope_turn(dx, cos, sin, B, T, stride, nheads, hd, -1.0f);
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

void swiglu_forward(float *out, const float *gate, const float *up, int N) {
    for (int i = 0; i < N; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int N) {
    for (int i = 0; i < N; i++) {
        float sig = 1.0f / (1.0f + expf(-gate[i])), silu = gate[i] * sig;
        dgate[i] += dout[i] * up[i] * sig * (1.0f + gate[i] * (1.0f - sig));
        dup[i] += dout[i] * silu;
    }
}

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       const struct attn_shape *s) {
    const int T = s->T, NH = s->NH, hd = s->hd, group = s->NH / s->NKV;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < s->B; b++) {
        for (int h = 0; h < NH; h++) {
            const size_t qo = (size_t)h * hd, kvo = (size_t)(h / group) * hd;
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * s->q_stride + qo;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *kt = k + ((size_t)b * T + t2) * s->kv_stride + kvo;
                    float dot = 0.0f;
                    for (int i = 0; i < hd; i++) dot += qt[i] * kt[i];
                    a[t2] = dot * scale;
                    if (a[t2] > maxv) maxv = a[t2];
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    a[t2] = expf(a[t2] - maxv);
                    sum += a[t2];
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 < T; t2++) a[t2] = t2 <= t ? a[t2] * inv : 0.0f;
                float *o = out + ((size_t)b * T + t) * NH * hd + qo;
                memset(o, 0, (size_t)hd * sizeof(float));
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *vt = v + ((size_t)b * T + t2) * s->kv_stride + kvo;
                    for (int i = 0; i < hd; i++) o[i] += a[t2] * vt[i];
                }
            }
        }
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *q,
                        const float *k, const float *v, const float *att, const struct attn_shape *s) {
    const int T = s->T, NH = s->NH, hd = s->hd, group = s->NH / s->NKV;
    const float scale = 1.0f / sqrtf((float)hd);
    float *datt = scratch;
    for (int b = 0; b < s->B; b++) {
        for (int h = 0; h < NH; h++) {
            const size_t qo = (size_t)h * hd, kvo = (size_t)(h / group) * hd;
            for (int t = 0; t < T; t++) {
                const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                const float *d = dout + ((size_t)b * T + t) * NH * hd + qo;
                /* through out = att · v */
                float weighted = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const size_t kv = ((size_t)b * T + t2) * s->kv_stride + kvo;
                    float g = 0.0f;
                    for (int i = 0; i < hd; i++) {
                        g += v[kv + i] * d[i];
                        dv[kv + i] += a[t2] * d[i];
                    }
                    datt[t2] = g;
                    weighted += a[t2] * g;
                }
                /* through the softmax: dpre = att * (datt - sum(att * datt)), then q·k */
                const size_t qi = ((size_t)b * T + t) * s->q_stride + qo;
                for (int t2 = 0; t2 <= t; t2++) {
                    float dpre = a[t2] * (datt[t2] - weighted) * scale;
                    const size_t kv = ((size_t)b * T + t2) * s->kv_stride + kvo;
                    for (int i = 0; i < hd; i++) {
                        dq[qi + i] += k[kv + i] * dpre;
                        dk[kv + i] += q[qi + i] * dpre;
                    }
                }
            }
        }
    }
}

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

void gelu_forward(float *out, const float *inp, int N) {
    for (int i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, int N) {
    for (int i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
        float sech2 = 1.0f - th * th;
        float local = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
}

void residual_forward(float *out, const float *inp1, const float *inp2, int N) {
    for (int i = 0; i < N; i++) out[i] = inp1[i] + inp2[i];
}

double crossentropy_forward(float *probs, float *losses, const int32_t *targets, const uint8_t *mask, int N,
                            int V) {
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        float *p = probs + (size_t)n * V;
        float maxv = -INFINITY;
        for (int i = 0; i < V; i++)
            if (p[i] > maxv) maxv = p[i];
        double sum = 0.0;
        for (int i = 0; i < V; i++) sum += exp((double)p[i] - maxv);
        float target_logit = p[targets[n]];
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < V; i++) p[i] = expf(p[i] - maxv) * inv;
        losses[n] = (float)(log(sum) + maxv - target_logit);
        if (mask[n]) total += losses[n];
    }
    return total;
}

void crossentropy_backward(float *dlogits, const int32_t *targets, const uint8_t *mask, float scale, int N,
                           int V) {
    for (int n = 0; n < N; n++) {
        float *d = dlogits + (size_t)n * V;
        if (!mask[n]) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int i = 0; i < V; i++) d[i] *= scale;
        d[targets[n]] -= scale;
    }
}
