/*
 * gpt2.c: the GPT-2 family (struct arch): weight names and shapes, activations, the
 * forward pass with its loss, the backward pass, and the KV-cache decoding step.
 * Each layer: ln_1 -> c_attn -> causal attention -> c_proj -> residual -> ln_2 -> c_fc
 * -> GELU -> c_proj -> residual; then ln_f and the LM head tied to wte.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "kernels.h"

static void gpt2_weights_plan(struct model *m, struct weight_refs *refs) {
    const struct model_config *c = &m->cfg;
    const int32_t C = c->n_embd, F = c->n_inner;
    weight_ref_add(refs, "transformer.wte.weight", c->vocab_size, C, &m->wte, &m->dwte);
    weight_ref_add(refs, "transformer.wpe.weight", c->n_positions, C, &m->wpe, &m->dwpe);
    for (int l = 0; l < c->n_layer; l++) {
        struct layer *L = &m->layers[l];
        char name[96];
#define NAME(suffix) (snprintf(name, sizeof name, "transformer.h.%d.%s", l, suffix), name)
        weight_ref_add(refs, NAME("ln_1.weight"), C, 0, &L->norm1_w, &L->dnorm1_w);
        weight_ref_add(refs, NAME("ln_1.bias"), C, 0, &L->norm1_b, &L->dnorm1_b);
        weight_ref_linear(refs, NAME("attn.c_attn"), &L->lin[GPT2_SITE_ATTN], C, 3 * C, GEMM_LAYOUT_IN_OUT, 1);
        weight_ref_linear(refs, NAME("attn.c_proj"), &L->lin[GPT2_SITE_PROJ], C, C, GEMM_LAYOUT_IN_OUT, 1);
        weight_ref_add(refs, NAME("ln_2.weight"), C, 0, &L->norm2_w, &L->dnorm2_w);
        weight_ref_add(refs, NAME("ln_2.bias"), C, 0, &L->norm2_b, &L->dnorm2_b);
        weight_ref_linear(refs, NAME("mlp.c_fc"), &L->lin[GPT2_SITE_FC], C, F, GEMM_LAYOUT_IN_OUT, 1);
        weight_ref_linear(refs, NAME("mlp.c_proj"), &L->lin[GPT2_SITE_FCPROJ], F, C, GEMM_LAYOUT_IN_OUT, 1);
#undef NAME
    }
    weight_ref_add(refs, "transformer.ln_f.weight", C, 0, &m->lnf_w, &m->dlnf_w);
    weight_ref_add(refs, "transformer.ln_f.bias", C, 0, &m->lnf_b, &m->dlnf_b);
    /* the head is wte; only its sizes are set here, its pointers may already be bound */
    m->lm_head.in = C;
    m->lm_head.out = c->vocab_size;
    m->lm_head.layout = GEMM_LAYOUT_OUT_IN;
}

static int32_t gpt2_acts_plan(struct model *m, struct act_slot *s) {
    struct gpt2_acts *a = &m->a.g;
    const uint64_t B = m->B, T = m->T, C = m->cfg.n_embd, F = m->cfg.n_inner, L = m->cfg.n_layer;
    const uint64_t NH = m->cfg.n_head, V = m->cfg.vocab_size, N = B * T;
    const uint64_t LP = model_input_layers(m, GPT2_SITE_PROJ), LK = model_kept_layers(m);
    const struct act_slot plan[] = {
        {&a->encoded, N * C},   {&a->ln1, N * C},       {&a->ln1_mean, LK * N},   {&a->ln1_rstd, LK * N},
        {&a->qkv, LK * N * 3 * C}, {&a->atty, LP * N * C},    {&a->lse, LK * B * NH * T},
        {&a->residual2, LK * N * C}, {&a->ln2, N * C},   {&a->ln2_mean, LK * N},   {&a->ln2_rstd, LK * N},
        {&a->fch, LK * N * F},   {&a->fch_gelu, N * F},      {&a->residual3, L * N * C},
        {&a->lnf, N * C},       {&a->lnf_mean, N},          {&a->lnf_rstd, N},
        {&m->logits, (uint64_t)model_logit_rows(m) * V},    {&a->losses, N},         {&a->dhead, N * C},        {&a->dresid, N * C},        {&a->dln, N * C},        {&a->datty, N * C},
        {&a->tmp, N * C},       {&a->dqkv, N * 3 * C},      {&a->dfch, N * F},       {&a->dfch_gelu, N * F},
    };
    memcpy(s, plan, sizeof plan);
    return (int32_t)(sizeof plan / sizeof plan[0]);
}

/* The per-layer slices of the stacked activations. */
struct layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *lse, *residual2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *residual3;
    const float *residual; /* the layer's input */
};

static struct layer_acts layer_acts(const struct model *m, int l) {
    const struct gpt2_acts *a = &m->a.g;
    const size_t T = m->T, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head;
    /* strides use the allocated batch m->B so a smaller B reuses the same slots */
    const size_t N = (size_t)m->B * T, k = model_kept_slot(m, l);
    struct layer_acts s = {
        .ln1 = a->ln1, /* ln1, ln2, fch_gelu: one layer's; the backward recomputes them */
        .ln1_mean = a->ln1_mean + k * N,
        .ln1_rstd = a->ln1_rstd + k * N,
        .qkv = a->qkv + k * N * 3 * C,
        .atty = a->atty + (model_input_layers(m, GPT2_SITE_PROJ) > 1 ? l * N * C : 0),
        .lse = a->lse + k * (size_t)m->B * NH * T,
        .residual2 = a->residual2 + k * N * C,
        .ln2 = a->ln2,
        .ln2_mean = a->ln2_mean + k * N,
        .ln2_rstd = a->ln2_rstd + k * N,
        .fch = a->fch + k * N * F,
        .fch_gelu = a->fch_gelu,
        .residual3 = a->residual3 + l * N * C,
    };
    s.residual = l == 0 ? a->encoded : a->residual3 + (l - 1) * N * C;
    return s;
}

/* Forward through layer L, from its input (the previous layer's residual3) to its
 * residual3; RECOMPUTE (the backward's second pass) stops at what the backward reads,
 * before GELU, the MLP's c_proj and the residual, whose output is kept. */
static void layer_forward(struct model *m, int l, int B, const struct lora_rows *rows, int recompute) {
    struct gpt2_acts *a = &m->a.g;
    const int T = m->T, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, N = B * T;
    const float eps = m->cfg.layer_norm_eps;
    const struct attn_shape as = {B, T, NH, NH, C / NH, 3 * C, 3 * C, m->start};
    const struct layer *L = &m->layers[l];
    struct layer_acts s = layer_acts(m, l);
    layernorm_forward(s.ln1, s.ln1_mean, s.ln1_rstd, s.residual, L->norm1_w, L->norm1_b, N, C, eps);
    linear_forward(&L->lin[GPT2_SITE_ATTN], s.qkv, s.ln1, m->scratch, rows, N);
    attention_forward(s.atty, s.lse, s.qkv, s.qkv + C, s.qkv + 2 * C, m->scratch, m->attn_slots, &as);
    linear_forward(&L->lin[GPT2_SITE_PROJ], a->tmp, s.atty, m->scratch, rows, N);
    residual_forward(s.residual2, s.residual, a->tmp, N * C);
    layernorm_forward(s.ln2, s.ln2_mean, s.ln2_rstd, s.residual2, L->norm2_w, L->norm2_b, N, C, eps);
    linear_forward(&L->lin[GPT2_SITE_FC], s.fch, s.ln2, m->scratch, rows, N);
    if (recompute) return;
    gelu_forward(s.fch_gelu, s.fch, N * F);
    linear_forward(&L->lin[GPT2_SITE_FCPROJ], a->tmp, s.fch_gelu, m->scratch, rows, N);
    residual_forward(s.residual3, s.residual2, a->tmp, N * C);
}

static double gpt2_forward(struct model *m, const int32_t *inp, const int32_t *tgt, const uint8_t *mask, int B,
                           const struct lora_rows *rows, float grad_scale) {
    struct gpt2_acts *a = &m->a.g;
    const int T = m->T, C = m->cfg.n_embd, N = B * T;
    const float eps = m->cfg.layer_norm_eps;
    encoder_forward(a->encoded, inp, m->start, m->wte, m->wpe, B, T, C);
    model_lookup_done(m);
    for (int l = 0; l < m->cfg.n_layer; l++) layer_forward(m, l, B, rows, 0);
    const float *last = layer_acts(m, m->cfg.n_layer - 1).residual3;
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, last, m->lnf_w, m->lnf_b, N, C, eps);
    return model_head(m, a->lnf, a->dhead, tgt, mask, N, grad_scale, a->losses);
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

/* A layer's LayerNorm as its backward needs it: weights (C) and their gradients (NULL
 * when frozen), input and output (N,C), and the kept mean and rstd (N). */
struct ln_site {
    const float *w, *b;
    float *dw, *db;
    const float *in;
    float *out, *mean, *rstd;
};

/* Backward through LN and the linear map L that reads its output: recomputes that output
 * when L needs its input, takes L's input gradient from DOUT (N,out) into dln, and adds
 * the norm's input gradient to dresid. */
static void ln_linear_backward(struct model *m, const struct linear *l, const struct ln_site *ln, const float *dout,
                               const struct lora_rows *rows, int N) {
    struct gpt2_acts *a = &m->a.g;
    const int C = m->cfg.n_embd;
    zero(a->dln, (size_t)N * C);
    if (linear_needs_input(l))
        layernorm_forward(ln->out, ln->mean, ln->rstd, ln->in, ln->w, ln->b, N, C, m->cfg.layer_norm_eps);
    linear_backward(l, a->dln, dout, ln->out, m->scratch, rows, N);
    layernorm_backward(a->dresid, ln->dw, ln->db, a->dln, ln->in, ln->w, ln->mean, ln->rstd, N, C);
}

/* Backward through layer L; a->dresid holds the gradient of its output, then of its input. */
static void layer_backward(struct model *m, int l, int B, const struct lora_rows *rows) {
    struct gpt2_acts *a = &m->a.g;
    const int T = m->T, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, N = B * T;
    const struct attn_shape as = {B, T, NH, NH, C / NH, 3 * C, 3 * C, m->start};
    const struct layer *L = &m->layers[l];
    struct layer_acts s = layer_acts(m, l);
    /* residual3 = residual2 + c_proj(gelu(c_fc(ln_2(residual2)))) */
    if (linear_needs_input(&L->lin[GPT2_SITE_FCPROJ])) gelu_forward(s.fch_gelu, s.fch, N * F);
    zero(a->dfch_gelu, (size_t)N * F);
    linear_backward(&L->lin[GPT2_SITE_FCPROJ], a->dfch_gelu, a->dresid, s.fch_gelu, m->scratch, rows, N);
    zero(a->dfch, (size_t)N * F);
    gelu_backward(a->dfch, s.fch, a->dfch_gelu, N * F);
    const struct ln_site ln2 = {.w = L->norm2_w, .b = L->norm2_b, .dw = L->dnorm2_w, .db = L->dnorm2_b,
                                .in = s.residual2, .out = s.ln2, .mean = s.ln2_mean, .rstd = s.ln2_rstd};
    ln_linear_backward(m, &L->lin[GPT2_SITE_FC], &ln2, a->dfch, rows, N);
    /* residual2 = residual + c_proj(attention(c_attn(ln_1(residual)))) */
    zero(a->datty, (size_t)N * C);
    linear_backward(&L->lin[GPT2_SITE_PROJ], a->datty, a->dresid, s.atty, m->scratch, rows, N);
    zero(a->dqkv, (size_t)N * 3 * C);
    attention_backward(a->dqkv, a->dqkv + C, a->dqkv + 2 * C, m->scratch, m->attn_slots, a->datty, s.qkv,
                       s.qkv + C, s.qkv + 2 * C, s.lse, &as);
    const struct ln_site ln1 = {.w = L->norm1_w, .b = L->norm1_b, .dw = L->dnorm1_w, .db = L->dnorm1_b,
                                .in = s.residual, .out = s.ln1, .mean = s.ln1_mean, .rstd = s.ln1_rstd};
    ln_linear_backward(m, &L->lin[GPT2_SITE_ATTN], &ln1, a->dqkv, rows, N);
}

static void gpt2_backward(struct model *m, const int32_t *inp, int B, const struct lora_rows *rows) {
    struct gpt2_acts *a = &m->a.g;
    const int T = m->T, C = m->cfg.n_embd, N = B * T;
    zero(a->dresid, (size_t)N * C);
    const float *last = layer_acts(m, m->cfg.n_layer - 1).residual3;
    layernorm_backward(a->dresid, m->dlnf_w, m->dlnf_b, a->dhead, last, m->lnf_w, a->lnf_mean, a->lnf_rstd, N, C);
    for (int l = m->cfg.n_layer - 1; l >= 0; l--) {
        if (m->recompute && l < m->cfg.n_layer - 1) layer_forward(m, l, B, rows, 1); /* the last layer's are still kept */
        layer_backward(m, l, B, rows);
    }
    if (m->dwte || m->dwpe) encoder_backward(m->dwte, m->dwpe, a->dresid, inp, m->start, B, T, C);
}

static void gpt2_decode(struct decoder *d, const int32_t *tokens) {
    struct model *m = d->m;
    const int C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, n = d->n, qn = d->qn;
    const float eps = m->cfg.layer_norm_eps;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < C; i++)
            d->x[(size_t)r * C + i] = m->wte[(size_t)tokens[r] * C + i] + m->wpe[(size_t)d->pos[d->slot[r]] * C + i];
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const struct layer *L = &m->layers[l];
        layernorm_forward(d->ln, d->mean, d->rstd, d->x, L->norm1_w, L->norm1_b, n, C, eps);
        linear_forward(&L->lin[GPT2_SITE_ATTN], d->q, d->ln, d->scratch, d->rows, n);
        for (int r = 0; r < n; r++) {
            const float *q = d->q + (size_t)r * qn;
            decoder_attend(d, l, r, q, q + C, q + 2 * C, NH, NH, C / NH);
        }
        linear_forward(&L->lin[GPT2_SITE_PROJ], d->tmp, d->att, d->scratch, d->rows, n);
        residual_forward(d->x, d->x, d->tmp, n * C);
        layernorm_forward(d->ln, d->mean, d->rstd, d->x, L->norm2_w, L->norm2_b, n, C, eps);
        linear_forward(&L->lin[GPT2_SITE_FC], d->f1, d->ln, d->scratch, d->rows, n);
        gelu_forward(d->f2, d->f1, n * F);
        linear_forward(&L->lin[GPT2_SITE_FCPROJ], d->tmp, d->f2, d->scratch, d->rows, n);
        residual_forward(d->x, d->x, d->tmp, n * C);
    }
    layernorm_forward(d->ln, d->mean, d->rstd, d->x, m->lnf_w, m->lnf_b, n, C, eps);
    linear_forward(&m->lm_head, d->logits, d->ln, d->scratch, NULL, n);
}

static const char *const gpt2_sites[] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
static const char *const gpt2_default_targets[] = {"c_attn"};

const struct arch arch_gpt2 = {
    .site_fmt = "transformer.h.%d.%s",
    .n_sites = 4,
    .site_names = gpt2_sites,
    .fused_qkv = GPT2_SITE_ATTN,
    .targets_hint = "c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj, c_proj, q, k, v, all-linear",
    .default_targets = gpt2_default_targets,
    .n_default_targets = 1,
    .max_refs_per_layer = 12,
    .weights_plan = gpt2_weights_plan,
    .acts_plan = gpt2_acts_plan,
    .forward = gpt2_forward,
    .backward = gpt2_backward,
    .decode = gpt2_decode,
};
