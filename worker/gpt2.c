/*
 * gpt2.c: the GPT-2 forward pass with its loss, and the backward pass (model.h).
 * Each layer: ln_1 -> c_attn -> causal attention -> c_proj -> residual -> ln_2 -> c_fc
 * -> GELU -> c_proj -> residual; then ln_f and the LM head tied to wte.
 */
#include <string.h>

#include "kernels.h"
#include "model.h"

/* The per-layer slices of the stacked activations. */
struct layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *residual2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *residual3;
    const float *residual; /* the layer's input */
};

static struct layer_acts layer_acts(const struct model *m, int l) {
    const struct gpt2_acts *a = &m->a;
    const size_t T = m->T, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head;
    /* strides use the allocated batch m->B so a smaller B reuses the same slots */
    const size_t N = (size_t)m->B * T;
    struct layer_acts s = {
        .ln1 = a->ln1 + l * N * C,
        .ln1_mean = a->ln1_mean + l * N,
        .ln1_rstd = a->ln1_rstd + l * N,
        .qkv = a->qkv + l * N * 3 * C,
        .atty = a->atty + l * N * C,
        .att = a->att + l * (size_t)m->B * NH * T * T,
        .residual2 = a->residual2 + l * N * C,
        .ln2 = a->ln2 + l * N * C,
        .ln2_mean = a->ln2_mean + l * N,
        .ln2_rstd = a->ln2_rstd + l * N,
        .fch = a->fch + l * N * F,
        .fch_gelu = a->fch_gelu + l * N * F,
        .residual3 = a->residual3 + l * N * C,
    };
    s.residual = l == 0 ? a->encoded : a->residual3 + (l - 1) * N * C;
    return s;
}

double model_forward(struct model *m, const int32_t *inp, const int32_t *tgt, const uint8_t *mask, int B,
                     const struct dropout *dp) {
    struct gpt2_acts *a = &m->a;
    const int T = m->T, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, N = B * T;
    const float eps = m->cfg.layer_norm_eps;
    encoder_forward(a->encoded, inp, m->wte, m->wpe, B, T, C);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const struct gpt2_layer *L = &m->layers[l];
        struct layer_acts s = layer_acts(m, l);
        layernorm_forward(s.ln1, s.ln1_mean, s.ln1_rstd, s.residual, L->ln1_w, L->ln1_b, N, C, eps);
        linear_forward(&L->attn, s.qkv, s.ln1, a->scratch, dp, N);
        struct attn_shape as = {B, T, NH, NH, C / NH, 3 * C, 3 * C};
        attention_forward(s.atty, s.att, s.qkv, s.qkv + C, s.qkv + 2 * C, &as);
        linear_forward(&L->proj, a->tmp, s.atty, a->scratch, dp, N);
        residual_forward(s.residual2, s.residual, a->tmp, N * C);
        layernorm_forward(s.ln2, s.ln2_mean, s.ln2_rstd, s.residual2, L->ln2_w, L->ln2_b, N, C, eps);
        linear_forward(&L->fc, s.fch, s.ln2, a->scratch, dp, N);
        gelu_forward(s.fch_gelu, s.fch, N * F);
        linear_forward(&L->fcproj, a->tmp, s.fch_gelu, a->scratch, dp, N);
        residual_forward(s.residual3, s.residual2, a->tmp, N * C);
    }
    const float *last = layer_acts(m, m->cfg.n_layer - 1).residual3;
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, last, m->lnf_w, m->lnf_b, N, C, eps);
    linear_forward(&m->lm_head, a->logits, a->lnf, a->scratch, NULL, N);
    return crossentropy_forward(a->logits, a->losses, tgt, mask, N, m->cfg.vocab_size);
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

void model_backward(struct model *m, const int32_t *inp, const int32_t *tgt, const uint8_t *mask, float scale,
                    int B, const struct dropout *dp) {
    struct gpt2_acts *a = &m->a;
    const int T = m->T, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, N = B * T;
    crossentropy_backward(a->logits, tgt, mask, scale, N, m->cfg.vocab_size);
    zero(a->dln, (size_t)N * C);
    linear_backward(&m->lm_head, a->dln, a->logits, a->lnf, a->scratch, NULL, N);
    zero(a->dresid, (size_t)N * C);
    const float *last = layer_acts(m, m->cfg.n_layer - 1).residual3;
    layernorm_backward(a->dresid, m->dlnf_w, m->dlnf_b, a->dln, last, m->lnf_w, a->lnf_mean, a->lnf_rstd, N, C);
    for (int l = m->cfg.n_layer - 1; l >= 0; l--) {
        const struct gpt2_layer *L = &m->layers[l];
        struct layer_acts s = layer_acts(m, l);
        /* residual3 = residual2 + c_proj(gelu(c_fc(ln_2(residual2)))) */
        zero(a->dfch_gelu, (size_t)N * F);
        linear_backward(&L->fcproj, a->dfch_gelu, a->dresid, s.fch_gelu, a->scratch, dp, N);
        zero(a->dfch, (size_t)N * F);
        gelu_backward(a->dfch, s.fch, a->dfch_gelu, N * F);
        zero(a->dln, (size_t)N * C);
        linear_backward(&L->fc, a->dln, a->dfch, s.ln2, a->scratch, dp, N);
        layernorm_backward(a->dresid, L->dln2_w, L->dln2_b, a->dln, s.residual2, L->ln2_w, s.ln2_mean, s.ln2_rstd,
                           N, C);
        /* residual2 = residual + c_proj(attention(c_attn(ln_1(residual)))) */
        zero(a->datty, (size_t)N * C);
        linear_backward(&L->proj, a->datty, a->dresid, s.atty, a->scratch, dp, N);
        zero(a->dqkv, (size_t)N * 3 * C);
        struct attn_shape as = {B, T, NH, NH, C / NH, 3 * C, 3 * C};
        attention_backward(a->dqkv, a->dqkv + C, a->dqkv + 2 * C, a->scratch, a->datty, s.qkv, s.qkv + C, s.qkv + 2 * C,
                           s.att, &as);
        zero(a->dln, (size_t)N * C);
        linear_backward(&L->attn, a->dln, a->dqkv, s.ln1, a->scratch, dp, N);
        layernorm_backward(a->dresid, L->dln1_w, L->dln1_b, a->dln, s.residual, L->ln1_w, s.ln1_mean, s.ln1_rstd,
                           N, C);
    }
    if (m->dwte || m->dwpe) encoder_backward(m->dwte, m->dwpe, a->dresid, inp, B, T, C);
}
