/*
 * llama.c: the Llama family (Llama, Mistral, Qwen2) as a struct arch: weight names and
 * shapes, activations, the forward pass with its loss, the backward pass, and the
 * KV-cache decoding step. Each layer: RMSNorm -> q, k, v projections (Qwen2: biased) ->
 * rotary embedding of q and k -> causal grouped-query attention -> o_proj -> residual ->
 * RMSNorm -> down(silu(gate(x)) * up(x)) -> residual; then RMSNorm and the LM head
 * (its own weight, or tied to the token embedding).
 */
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "kernels.h"

static void llama_weights_plan(struct model *m, struct weight_refs *refs) {
    const struct model_config *c = &m->cfg;
    const int32_t C = c->n_embd, F = c->n_inner, Q = c->n_head * c->head_dim, KV = c->n_kv_head * c->head_dim;
    const enum gemm_layout lay = GEMM_LAYOUT_OUT_IN;
    weight_ref_add(refs, "model.embed_tokens.weight", c->vocab_size, C, &m->wte, &m->dwte);
    for (int l = 0; l < c->n_layer; l++) {
        struct layer *L = &m->layers[l];
        char name[96];
#define NAME(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
        weight_ref_add(refs, NAME("input_layernorm.weight"), C, 0, &L->norm1_w, &L->dnorm1_w);
        weight_ref_linear(refs, NAME("self_attn.q_proj"), &L->lin[LLAMA_SITE_Q], C, Q, lay, c->qkv_bias);
        weight_ref_linear(refs, NAME("self_attn.k_proj"), &L->lin[LLAMA_SITE_K], C, KV, lay, c->qkv_bias);
        weight_ref_linear(refs, NAME("self_attn.v_proj"), &L->lin[LLAMA_SITE_V], C, KV, lay, c->qkv_bias);
        weight_ref_linear(refs, NAME("self_attn.o_proj"), &L->lin[LLAMA_SITE_O], Q, C, lay, c->o_bias);
        weight_ref_add(refs, NAME("post_attention_layernorm.weight"), C, 0, &L->norm2_w, &L->dnorm2_w);
        weight_ref_linear(refs, NAME("mlp.gate_proj"), &L->lin[LLAMA_SITE_GATE], C, F, lay, 0);
        weight_ref_linear(refs, NAME("mlp.up_proj"), &L->lin[LLAMA_SITE_UP], C, F, lay, 0);
        weight_ref_linear(refs, NAME("mlp.down_proj"), &L->lin[LLAMA_SITE_DOWN], F, C, lay, 0);
#undef NAME
    }
    weight_ref_add(refs, "model.norm.weight", C, 0, &m->lnf_w, &m->dlnf_w);
    if (!c->tied) weight_ref_linear(refs, "lm_head", &m->lm_head, C, c->vocab_size, lay, 0);
    m->lm_head.in = C; /* tied: the sizes only, its pointers are wte's */
    m->lm_head.out = c->vocab_size;
    m->lm_head.layout = lay;
}

static int32_t llama_acts_plan(struct model *m, struct act_slot *s) {
    struct llama_acts *a = &m->a.l;
    const struct model_config *c = &m->cfg;
    const uint64_t B = m->B, T = m->T, C = c->n_embd, F = c->n_inner, L = c->n_layer, NH = c->n_head;
    const uint64_t Q = NH * c->head_dim, KV = (uint64_t)c->n_kv_head * c->head_dim, V = c->vocab_size, N = B * T;
    const uint64_t half = (uint64_t)c->head_dim / 2, LO = model_input_layers(m, LLAMA_SITE_O), LK = model_kept_layers(m);
    const struct act_slot plan[] = {
        {&a->encoded, N * C},     {&a->n1, N * C},    {&a->r1, LK * N},        {&a->q, LK * N * Q},
        {&a->k, LK * N * KV},      {&a->v, LK * N * KV},    {&a->lse, LK * B * NH * T},
        {&a->atty, LO * N * Q},   {&a->residual2, LK * N * C}, {&a->n2, N * C},    {&a->r2, LK * N},
        {&a->gate, LK * N * F},    {&a->up, LK * N * F},    {&a->h, N * F},         {&a->residual3, L * N * C},
        {&a->nf, N * C},          {&a->rf, N},            {&m->logits, (uint64_t)model_logit_rows(m) * V},
        {&a->losses, N},          {&a->dhead, N * C},
        {&a->cos, T * half},      {&a->sin, T * half},    {&a->dresid, N * C},    {&a->dln, N * C},
        {&a->tmp, N * C},         {&a->datty, N * Q},     {&a->dq, N * Q},        {&a->dk, N * KV},
        {&a->dv, N * KV},         {&a->dgate, N * F},     {&a->dup, N * F},       {&a->dh, N * F},
    };
    memcpy(s, plan, sizeof plan);
    return (int32_t)(sizeof plan / sizeof plan[0]);
}

static struct rope_scaling llama_scaling(const struct model_config *c) {
    return (struct rope_scaling){c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor,
                                 c->rope_original_max};
}

static void llama_acts_init(struct model *m) {
    struct rope_scaling sc = llama_scaling(&m->cfg);
    rope_tables(m->a.l.cos, m->a.l.sin, m->T, m->cfg.head_dim, m->cfg.rope_theta, &sc);
}

/* The per-layer slices of the stacked activations. */
struct layer_acts {
    float *n1, *r1, *q, *k, *v, *lse, *atty, *residual2, *n2, *r2, *gate, *up, *h, *residual3;
    const float *residual; /* the layer's input */
};

static struct layer_acts layer_acts(const struct model *m, int l) {
    const struct llama_acts *a = &m->a.l;
    const struct model_config *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, C = c->n_embd, F = c->n_inner, T = m->T;
    const size_t Q = (size_t)c->n_head * c->head_dim, KV = (size_t)c->n_kv_head * c->head_dim;
    const size_t k = model_kept_slot(m, l);
    struct layer_acts s = {
        .n1 = a->n1, /* n1, n2, h: one layer's; the backward recomputes them */
        .r1 = a->r1 + k * N,
        .q = a->q + k * N * Q,
        .k = a->k + k * N * KV,
        .v = a->v + k * N * KV,
        .lse = a->lse + k * (size_t)m->B * c->n_head * T,
        .atty = a->atty + (model_input_layers(m, LLAMA_SITE_O) > 1 ? l * N * Q : 0),
        .residual2 = a->residual2 + k * N * C,
        .n2 = a->n2,
        .r2 = a->r2 + k * N,
        .gate = a->gate + k * N * F,
        .up = a->up + k * N * F,
        .h = a->h,
        .residual3 = a->residual3 + l * N * C,
    };
    s.residual = l == 0 ? a->encoded : a->residual3 + (l - 1) * N * C;
    return s;
}

static struct attn_shape llama_shape(const struct model *m, int B) {
    const struct model_config *c = &m->cfg;
    return (struct attn_shape){B, m->T, c->n_head, c->n_kv_head, c->head_dim, c->n_head * c->head_dim,
                               c->n_kv_head * c->head_dim, m->start};
}

/* Forward through layer L, from its input (the previous layer's residual3) to its
 * residual3; RECOMPUTE (the backward's second pass) stops at what the backward reads,
 * before SwiGLU, the down projection and the residual, whose output is kept. */
static void layer_forward(struct model *m, int l, int B, const struct lora_rows *rows, int recompute) {
    struct llama_acts *a = &m->a.l;
    const struct model_config *c = &m->cfg;
    const int T = m->T, C = c->n_embd, F = c->n_inner, N = B * T, hd = c->head_dim;
    const struct attn_shape as = llama_shape(m, B);
    const struct layer *L = &m->layers[l];
    struct layer_acts s = layer_acts(m, l);
    rmsnorm_forward(s.n1, s.r1, s.residual, L->norm1_w, N, C, c->layer_norm_eps);
    linear_forward(&L->lin[LLAMA_SITE_Q], s.q, s.n1, m->scratch, rows, N);
    linear_forward(&L->lin[LLAMA_SITE_K], s.k, s.n1, m->scratch, rows, N);
    linear_forward(&L->lin[LLAMA_SITE_V], s.v, s.n1, m->scratch, rows, N);
    rope_forward(s.q, m->start, a->cos, a->sin, B, T, as.q_stride, c->n_head, hd);
    rope_forward(s.k, m->start, a->cos, a->sin, B, T, as.kv_stride, c->n_kv_head, hd);
    attention_forward(s.atty, s.lse, s.q, s.k, s.v, m->scratch, m->attn_slots, &as);
    linear_forward(&L->lin[LLAMA_SITE_O], a->tmp, s.atty, m->scratch, rows, N);
    residual_forward(s.residual2, s.residual, a->tmp, N * C);
    rmsnorm_forward(s.n2, s.r2, s.residual2, L->norm2_w, N, C, c->layer_norm_eps);
    linear_forward(&L->lin[LLAMA_SITE_GATE], s.gate, s.n2, m->scratch, rows, N);
    linear_forward(&L->lin[LLAMA_SITE_UP], s.up, s.n2, m->scratch, rows, N);
    if (recompute) return;
    swiglu_forward(s.h, s.gate, s.up, N * F);
    linear_forward(&L->lin[LLAMA_SITE_DOWN], a->tmp, s.h, m->scratch, rows, N);
    residual_forward(s.residual3, s.residual2, a->tmp, N * C);
}

static double llama_forward(struct model *m, const int32_t *inp, const int32_t *tgt, const uint8_t *mask, int B,
                            const struct lora_rows *rows, float grad_scale) {
    struct llama_acts *a = &m->a.l;
    const struct model_config *c = &m->cfg;
    const int C = c->n_embd, N = B * m->T;
    for (int n = 0; n < N; n++) memcpy(a->encoded + (size_t)n * C, m->wte + (size_t)inp[n] * C, (size_t)C * sizeof(float));
    model_lookup_done(m);
    for (int l = 0; l < c->n_layer; l++) layer_forward(m, l, B, rows, 0);
    const float *last = layer_acts(m, c->n_layer - 1).residual3;
    rmsnorm_forward(a->nf, a->rf, last, m->lnf_w, N, C, c->layer_norm_eps);
    return model_head(m, a->nf, a->dhead, tgt, mask, N, grad_scale, a->losses);
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

/* Backward through one layer; a->dresid holds the gradient of its output, then of its input. */
static void layer_backward(struct model *m, int l, int B, const struct lora_rows *rows) {
    struct llama_acts *a = &m->a.l;
    const struct model_config *c = &m->cfg;
    const int T = m->T, C = c->n_embd, F = c->n_inner, N = B * T, hd = c->head_dim;
    const struct attn_shape as = llama_shape(m, B);
    const struct layer *L = &m->layers[l];
    struct layer_acts s = layer_acts(m, l);
    /* residual3 = residual2 + down(silu(gate(n2)) * up(n2)) */
    if (linear_needs_input(&L->lin[LLAMA_SITE_DOWN])) swiglu_forward(s.h, s.gate, s.up, N * F);
    zero(a->dh, (size_t)N * F);
    linear_backward(&L->lin[LLAMA_SITE_DOWN], a->dh, a->dresid, s.h, m->scratch, rows, N);
    zero(a->dgate, (size_t)N * F);
    zero(a->dup, (size_t)N * F);
    swiglu_backward(a->dgate, a->dup, a->dh, s.gate, s.up, N * F);
    zero(a->dln, (size_t)N * C);
    if (linear_needs_input(&L->lin[LLAMA_SITE_GATE]) || linear_needs_input(&L->lin[LLAMA_SITE_UP]))
        rmsnorm_forward(s.n2, s.r2, s.residual2, L->norm2_w, N, C, c->layer_norm_eps);
    linear_backward(&L->lin[LLAMA_SITE_GATE], a->dln, a->dgate, s.n2, m->scratch, rows, N);
    linear_backward(&L->lin[LLAMA_SITE_UP], a->dln, a->dup, s.n2, m->scratch, rows, N);
    rmsnorm_backward(a->dresid, L->dnorm2_w, a->dln, s.residual2, L->norm2_w, s.r2, N, C);
    /* residual2 = residual + o(attention(rope(q(n1)), rope(k(n1)), v(n1))) */
    zero(a->datty, (size_t)N * as.q_stride);
    linear_backward(&L->lin[LLAMA_SITE_O], a->datty, a->dresid, s.atty, m->scratch, rows, N);
    zero(a->dq, (size_t)N * as.q_stride);
    zero(a->dk, (size_t)N * as.kv_stride);
    zero(a->dv, (size_t)N * as.kv_stride);
    attention_backward(a->dq, a->dk, a->dv, m->scratch, m->attn_slots, a->datty, s.q, s.k, s.v, s.lse, &as);
    rope_backward(a->dq, m->start, a->cos, a->sin, B, T, as.q_stride, c->n_head, hd);
    rope_backward(a->dk, m->start, a->cos, a->sin, B, T, as.kv_stride, c->n_kv_head, hd);
    zero(a->dln, (size_t)N * C);
    if (linear_needs_input(&L->lin[LLAMA_SITE_Q]) || linear_needs_input(&L->lin[LLAMA_SITE_K]) ||
        linear_needs_input(&L->lin[LLAMA_SITE_V]))
        rmsnorm_forward(s.n1, s.r1, s.residual, L->norm1_w, N, C, c->layer_norm_eps);
    linear_backward(&L->lin[LLAMA_SITE_Q], a->dln, a->dq, s.n1, m->scratch, rows, N);
    linear_backward(&L->lin[LLAMA_SITE_K], a->dln, a->dk, s.n1, m->scratch, rows, N);
    linear_backward(&L->lin[LLAMA_SITE_V], a->dln, a->dv, s.n1, m->scratch, rows, N);
    rmsnorm_backward(a->dresid, L->dnorm1_w, a->dln, s.residual, L->norm1_w, s.r1, N, C);
}

static void llama_backward(struct model *m, const int32_t *inp, int B, const struct lora_rows *rows) {
    struct llama_acts *a = &m->a.l;
    const struct model_config *c = &m->cfg;
    const int N = B * m->T, C = c->n_embd;
    zero(a->dresid, (size_t)N * C);
    const float *last = layer_acts(m, c->n_layer - 1).residual3;
    rmsnorm_backward(a->dresid, m->dlnf_w, a->dhead, last, m->lnf_w, a->rf, N, C);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        if (m->recompute && l < c->n_layer - 1) layer_forward(m, l, B, rows, 1); /* the last layer's are still kept */
        layer_backward(m, l, B, rows);
    }
    if (m->dwte) encoder_backward(m->dwte, NULL, a->dresid, inp, NULL, B, m->T, C);
}

static void llama_decode(struct decoder *d, const int32_t *tokens) {
    struct model *m = d->m;
    const struct model_config *c = &m->cfg;
    const int C = c->n_embd, F = c->n_inner, hd = c->head_dim, Q = c->n_head * hd, KV = c->n_kv_head * hd, n = d->n;
    for (int r = 0; r < n; r++) memcpy(d->x + (size_t)r * C, m->wte + (size_t)tokens[r] * C, (size_t)C * sizeof(float));
    for (int l = 0; l < c->n_layer; l++) {
        const struct layer *L = &m->layers[l];
        rmsnorm_forward(d->ln, d->rstd, d->x, L->norm1_w, n, C, c->layer_norm_eps);
        linear_forward(&L->lin[LLAMA_SITE_Q], d->q, d->ln, d->scratch, d->rows, n);
        linear_forward(&L->lin[LLAMA_SITE_K], d->kn, d->ln, d->scratch, d->rows, n);
        linear_forward(&L->lin[LLAMA_SITE_V], d->vn, d->ln, d->scratch, d->rows, n);
        for (int r = 0; r < n; r++) {
            const size_t at = (size_t)d->pos[d->slot[r]] * (hd / 2);
            float *q = d->q + (size_t)r * Q, *k = d->kn + (size_t)r * KV;
            rope_forward(q, NULL, d->cos + at, d->sin + at, 1, 1, Q, c->n_head, hd);
            rope_forward(k, NULL, d->cos + at, d->sin + at, 1, 1, KV, c->n_kv_head, hd);
            decoder_attend(d, l, r, q, k, d->vn + (size_t)r * KV, c->n_head, c->n_kv_head, hd);
        }
        linear_forward(&L->lin[LLAMA_SITE_O], d->tmp, d->att, d->scratch, d->rows, n);
        residual_forward(d->x, d->x, d->tmp, n * C);
        rmsnorm_forward(d->ln, d->rstd, d->x, L->norm2_w, n, C, c->layer_norm_eps);
        linear_forward(&L->lin[LLAMA_SITE_GATE], d->f1, d->ln, d->scratch, d->rows, n);
        linear_forward(&L->lin[LLAMA_SITE_UP], d->f2, d->ln, d->scratch, d->rows, n);
        swiglu_forward(d->f3, d->f1, d->f2, n * F);
        linear_forward(&L->lin[LLAMA_SITE_DOWN], d->tmp, d->f3, d->scratch, d->rows, n);
        residual_forward(d->x, d->x, d->tmp, n * C);
    }
    rmsnorm_forward(d->ln, d->rstd, d->x, m->lnf_w, n, C, c->layer_norm_eps);
    linear_forward(&m->lm_head, d->logits, d->ln, d->scratch, NULL, n);
}

static const char *const llama_sites[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                          "mlp.down_proj"};

static const char *const llama_default_targets[] = {"q_proj", "v_proj"};

const struct arch arch_llama = {
    .site_fmt = "model.layers.%d.%s",
    .n_sites = 7,
    .site_names = llama_sites,
    .fused_qkv = -1,
    .targets_hint = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear",
    .default_targets = llama_default_targets,
    .n_default_targets = 2,
    .max_refs_per_layer = 14,
    .weights_plan = llama_weights_plan,
    .acts_plan = llama_acts_plan,
    .acts_init = llama_acts_init,
    .forward = llama_forward,
    .backward = llama_backward,
    .decode = llama_decode,
};
