/*
 * decode.c: single-row GPT-2 passes over a KV cache, and token picking (decode.h).
 */
#include "decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels.h"
#include "rng.h"

void decoder_init(struct decoder *d, struct model *m, int32_t max_t) {
    const size_t C = m->cfg.n_embd, F = m->cfg.n_inner, L = m->cfg.n_layer, V = m->cfg.vocab_size;
    size_t scratch = 1;
    for (int32_t s = 0; s < m->n_sites; s++) {
        size_t need = linear_scratch_size(m->sites[s], 1);
        if (need > scratch) scratch = need;
    }
    memset(d, 0, sizeof *d);
    d->m = m;
    d->max_t = max_t;
    d->block = xalloc_aligned((2 * L * max_t * C + 4 * C + 3 * C + 2 * F + max_t + V + scratch) * sizeof(float));
    float *p = d->block;
    d->k = p, p += L * max_t * C;
    d->v = p, p += L * max_t * C;
    d->x = p, p += C;
    d->ln = p, p += C;
    d->att = p, p += C;
    d->tmp = p, p += C;
    d->qkv = p, p += 3 * C;
    d->fch = p, p += F;
    d->fch_gelu = p, p += F;
    d->scores = p, p += max_t;
    d->logits = p, p += V;
    d->scratch = p;
}

void decoder_free(struct decoder *d) {
    free(d->block);
    memset(d, 0, sizeof *d);
}

/* Causal attention of the newest position over the cache of layer L. */
static void attend(struct decoder *d, int l) {
    const int C = d->m->cfg.n_embd, NH = d->m->cfg.n_head, hs = C / NH, T = d->pos + 1;
    const float *K = d->k + (size_t)l * d->max_t * C, *V = d->v + (size_t)l * d->max_t * C;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int h = 0; h < NH; h++) {
        const float *q = d->qkv + h * hs;
        float maxv = -INFINITY, sum = 0.0f;
        for (int t = 0; t < T; t++) {
            float dot = 0.0f;
            for (int i = 0; i < hs; i++) dot += q[i] * K[(size_t)t * C + h * hs + i];
            d->scores[t] = dot * scale;
            if (d->scores[t] > maxv) maxv = d->scores[t];
        }
        for (int t = 0; t < T; t++) sum += d->scores[t] = expf(d->scores[t] - maxv);
        float *o = d->att + h * hs;
        memset(o, 0, (size_t)hs * sizeof(float));
        for (int t = 0; t < T; t++)
            for (int i = 0; i < hs; i++) o[i] += d->scores[t] / sum * V[(size_t)t * C + h * hs + i];
    }
}

const float *decoder_step(struct decoder *d, int32_t token) {
    struct model *m = d->m;
    const int C = m->cfg.n_embd, F = m->cfg.n_inner;
    const float eps = m->cfg.layer_norm_eps;
    CHECK(d->pos < d->max_t && token >= 0 && token < m->cfg.vocab_size);
    for (int i = 0; i < C; i++) d->x[i] = m->wte[(size_t)token * C + i] + m->wpe[(size_t)d->pos * C + i];
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const struct gpt2_layer *L = &m->layers[l];
        layernorm_forward(d->ln, &d->mean, &d->rstd, d->x, L->ln1_w, L->ln1_b, 1, C, eps);
        linear_forward(&L->attn, d->qkv, d->ln, d->scratch, NULL, 1);
        size_t at = ((size_t)l * d->max_t + d->pos) * C;
        memcpy(d->k + at, d->qkv + C, (size_t)C * sizeof(float));
        memcpy(d->v + at, d->qkv + 2 * C, (size_t)C * sizeof(float));
        attend(d, l);
        linear_forward(&L->proj, d->tmp, d->att, d->scratch, NULL, 1);
        residual_forward(d->x, d->x, d->tmp, C);
        layernorm_forward(d->ln, &d->mean, &d->rstd, d->x, L->ln2_w, L->ln2_b, 1, C, eps);
        linear_forward(&L->fc, d->fch, d->ln, d->scratch, NULL, 1);
        gelu_forward(d->fch_gelu, d->fch, F);
        linear_forward(&L->fcproj, d->tmp, d->fch_gelu, d->scratch, NULL, 1);
        residual_forward(d->x, d->x, d->tmp, C);
    }
    layernorm_forward(d->ln, &d->mean, &d->rstd, d->x, m->lnf_w, m->lnf_b, 1, C, eps);
    linear_forward(&m->lm_head, d->logits, d->ln, d->scratch, NULL, 1);
    d->pos++;
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
