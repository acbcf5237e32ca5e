/*
 * decode.c: the decoder's KV caches, its steps, and token picking (decode.h).
 */
#include "decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "error.h"
#include "kernels.h"
#include "rng.h"

void decoder_init(struct decoder *d, struct model *m, int32_t slots, int32_t max_t) {
    const struct model_config *c = &m->cfg;
    const size_t C = c->n_embd, F = c->n_inner, L = c->n_layer, V = c->vocab_size, S = (size_t)slots;
    const size_t Q = (size_t)c->n_head * c->head_dim, KV = (size_t)c->n_kv_head * c->head_dim;
    const size_t qn = c->arch == MODEL_ARCH_GPT2 ? 3 * C : Q, half = (size_t)c->head_dim / 2;
    size_t scratch = 1;
    for (int32_t s = 0; s < m->n_sites; s++) {
        size_t need = linear_scratch_size(m->sites[s], slots);
        if (need > scratch) scratch = need;
    }
    /* the adapters' rows (their u) hold the model's B·T rows: a step's rows must fit */
    CHECK(m->n_adapters == 0 || (int64_t)m->B * m->T >= slots);
    memset(d, 0, sizeof *d);
    d->m = m;
    d->slots = slots;
    d->max_t = max_t;
    d->kv = (int32_t)KV;
    d->qn = (int32_t)qn;
    d->pos = xcalloc(S, sizeof *d->pos);
    d->block = xalloc_aligned((S * (2 * L * max_t * KV + 3 * C + qn + 2 * KV + Q + 3 * F + V + 2) + max_t +
                               2 * max_t * half + scratch) * sizeof(float));
    float *p = d->block;
    d->k = p, p += S * L * max_t * KV;
    d->v = p, p += S * L * max_t * KV;
    d->x = p, p += S * C;
    d->ln = p, p += S * C;
    d->tmp = p, p += S * C;
    d->q = p, p += S * qn;
    d->kn = p, p += S * KV;
    d->vn = p, p += S * KV;
    d->att = p, p += S * Q;
    d->f1 = p, p += S * F;
    d->f2 = p, p += S * F;
    d->f3 = p, p += S * F;
    d->logits = p, p += S * V;
    d->mean = p, p += S;
    d->rstd = p, p += S;
    d->scores = p, p += max_t;
    d->cos = p, p += max_t * half;
    d->sin = p, p += max_t * half;
    d->scratch = p;
    struct rope_scaling sc = {c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max};
    if (c->arch == MODEL_ARCH_LLAMA) rope_tables(d->cos, d->sin, max_t, c->head_dim, c->rope_theta, &sc);
}

void decoder_free(struct decoder *d) {
    free(d->block);
    free(d->pos);
    memset(d, 0, sizeof *d);
}

void decoder_attend(struct decoder *d, int l, int r, const float *q, const float *k, const float *v, int NH, int NKV,
                    int hd) {
    const int32_t slot = d->slot[r], pos = d->pos[slot];
    const int T = pos + 1, group = NH / NKV, kv = d->kv;
    const size_t cache = ((size_t)slot * d->m->cfg.n_layer + (size_t)l) * d->max_t * kv;
    float *K = d->k + cache, *V = d->v + cache;
    memcpy(K + (size_t)pos * kv, k, (size_t)kv * sizeof(float));
    memcpy(V + (size_t)pos * kv, v, (size_t)kv * sizeof(float));
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < NH; h++) {
        const float *qh = q + (size_t)h * hd;
        const size_t ko = (size_t)(h / group) * hd;
        float maxv = -INFINITY, sum = 0.0f;
        for (int t = 0; t < T; t++) {
            float dot = 0.0f;
            for (int i = 0; i < hd; i++) dot += qh[i] * K[(size_t)t * kv + ko + i];
            d->scores[t] = dot * scale;
            if (d->scores[t] > maxv) maxv = d->scores[t];
        }
        for (int t = 0; t < T; t++) sum += d->scores[t] = expf(d->scores[t] - maxv);
        float *o = d->att + (size_t)r * NH * hd + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int t = 0; t < T; t++)
            for (int i = 0; i < hd; i++) o[i] += d->scores[t] / sum * V[(size_t)t * kv + ko + i];
    }
}

const float *decoder_step(struct decoder *d, const int32_t *tokens, const int32_t *slot, int32_t n,
                          const struct lora_rows *rows) {
    CHECK(n >= 1 && n <= d->slots);
    for (int32_t r = 0; r < n; r++)
        CHECK(slot[r] >= 0 && slot[r] < d->slots && d->pos[slot[r]] < d->max_t && tokens[r] >= 0 &&
              tokens[r] < d->m->cfg.vocab_size);
    d->n = n;
    d->slot = slot;
    d->rows = rows;
    d->m->arch->decode(d, tokens);
    for (int32_t r = 0; r < n; r++) d->pos[slot[r]]++;
    return d->logits;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int32_t decoder_pick(const float *logits, int32_t V, float temperature, int32_t top_k, uint64_t seed,
                     int64_t position) {
    if (temperature <= 0.0f) return argmax(logits, V);
    /* the k-th largest logit is the cut-off */
    float cut = -INFINITY;
    if (top_k > 0 && top_k < V) {
        float *sorted = xmalloc((size_t)V * sizeof *sorted);
        memcpy(sorted, logits, (size_t)V * sizeof *sorted);
        for (int32_t i = 0; i < top_k; i++) { /* partial selection: top_k is small */
            int32_t best = i;
            for (int32_t j = i + 1; j < V; j++)
                if (sorted[j] > sorted[best]) best = j;
            float t = sorted[i];
            sorted[i] = sorted[best];
            sorted[best] = t;
        }
        cut = sorted[top_k - 1];
        free(sorted);
    }
    const float maxv = logits[argmax(logits, V)];
    double sum = 0.0;
    for (int32_t i = 0; i < V; i++)
        if (logits[i] >= cut) sum += exp((logits[i] - maxv) / temperature);
    double u = rng_uniform(rng_key(RNG_STREAM_SAMPLE, seed, (uint64_t)position, 0), 0) * sum, acc = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < V; i++) {
        if (logits[i] < cut) continue;
        acc += exp((logits[i] - maxv) / temperature);
        last = i;
        if (acc > u) return i;
    }
    return last;
}
