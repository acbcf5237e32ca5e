/*
 * model.c: loading a model directory of any family into frozen or trainable weights,
 * attaching LoRA adapters, and sizing the activations (model.h). What differs between
 * the families comes from their struct arch (gpt2.c, llama.c).
 */
#include "model.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "error.h"
#include "fileio.h"
#include "kernels.h"
#include "lora.h"
#include "packed.h"
#include "peft.h"
#include "rng.h"

void weight_refs_alloc(const struct model *m, struct weight_refs *refs) {
    refs->cap = 4 + m->arch->max_refs_per_layer * m->cfg.n_layer;
    refs->r = xcalloc((size_t)refs->cap, sizeof *refs->r);
    refs->n = 0;
}

void weight_ref_add(struct weight_refs *refs, const char *name, int64_t d0, int64_t d1, const float **w, float **g) {
    CHECK(refs->n < refs->cap);
    struct weight_ref *r = &refs->r[refs->n++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->ndim = d1 ? 2 : 1;
    r->shape[0] = d0;
    r->shape[1] = d1;
    r->w = w;
    r->g = g;
    r->lin = NULL;
}

void weight_ref_linear(struct weight_refs *refs, const char *name, struct linear *lin, int32_t in, int32_t out,
                       enum gemm_layout layout, int bias) {
    char full[96];
    snprintf(full, sizeof full, "%s.weight", name);
    if (layout == GEMM_LAYOUT_IN_OUT)
        weight_ref_add(refs, full, in, out, &lin->w, &lin->dw);
    else
        weight_ref_add(refs, full, out, in, &lin->w, &lin->dw);
    if (bias) {
        snprintf(full, sizeof full, "%s.bias", name);
        weight_ref_add(refs, full, out, 0, &lin->b, &lin->db);
    }
    refs->r[refs->n - 1 - (bias != 0)].lin = lin;
    lin->in = in;
    lin->out = out;
    lin->layout = layout;
}

/* Finds every weight in the files ("transformer." names also without the prefix, as
 * GPT2Model saves them) and checks its shape and dtype. */
static int weights_find(struct model *m, const struct weight_ref *refs, int32_t n,
                        const struct st_tensor **found) {
    static const char prefix[] = "transformer.";
    for (int32_t i = 0; i < n; i++) {
        const char *name = refs[i].name;
        const struct safetensors *file;
        found[i] = st_set_find(&m->base->st, name, &file);
        if (!found[i] && !strncmp(name, prefix, sizeof prefix - 1))
            found[i] = st_set_find(&m->base->st, name + sizeof prefix - 1, &file);
        if (!found[i]) {
            err_set(m->base->st.path, "missing tensor %s", name);
            return err_hint("config.json and the weights must describe the same model");
        }
        enum st_dtype d = found[i]->dtype;
        if (d != ST_DTYPE_F32 && d != ST_DTYPE_F16 && d != ST_DTYPE_BF16)
            return err_set(file->path, "tensor %s has dtype %s, expected F32, F16 or BF16", name, st_dtype_name(d));
        if (st_tensor_expect_shape(file, found[i], refs[i].ndim, refs[i].shape)) return -1;
    }
    return 0;
}

static int tensor_mappable(const struct st_tensor *t) {
    return t->dtype == ST_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
}

/* Whether weight R is packed (packed.h): a frozen product weight of a model whose
 * --base-dtype is not f32. */
static int ref_packed(const struct weight_ref *r, int32_t entry, enum base_dtype dtype) {
    return dtype != BASE_DTYPE_F32 && entry < 0 && r->lin;
}

/* The f32 copies of the frozen weights that cannot be mapped, in REFS order: the
 * model's own when it must write them, else the base's, made once for every model that
 * borrows it (the frozen set is the same for every LoRA model of one base and dtype; a
 * model of the other dtype remakes it). */
struct f32_fill {
    const struct weight_ref *refs;
    const struct st_tensor **found;
    const int32_t *entry;
    int32_t n;
    enum base_dtype dtype;
};

static void f32_fill(void *ctx, float *block) {
    const struct f32_fill *f = ctx;
    uint64_t at = 0;
    for (int32_t i = 0; i < f->n; i++) {
        if (f->entry[i] >= 0 || ref_packed(&f->refs[i], f->entry[i], f->dtype) || tensor_mappable(f->found[i]))
            continue;
        CHECK(st_tensor_to_f32(f->found[i], block + at) == 0);
        st_tensor_drop_pages(f->found[i]); /* only the copy stays resident */
        at += (uint64_t)f->found[i]->numel;
    }
}

static float *frozen_block(struct model *m, const struct weight_ref *refs, const struct st_tensor **found,
                           const int32_t *entry, int32_t n, const struct model_options *o) {
    uint64_t count = 0;
    for (int32_t i = 0; i < n; i++)
        if (entry[i] < 0 && !ref_packed(&refs[i], entry[i], o->base_dtype) && (o->writable || !tensor_mappable(found[i])))
            count += (uint64_t)found[i]->numel;
    if (!count) return NULL;
    if (o->writable) return m->frozen = xalloc_aligned(count * sizeof(float));
    struct f32_fill f = {refs, found, entry, n, o->base_dtype};
    /* the f32 set is the same for every dtype but f32 */
    return base_f32_block(m->base, count, o->base_dtype != BASE_DTYPE_F32, f32_fill, &f);
}

/* The form of packed weight R: bf16 for the LM head, which stays as bf16 is for every
 * dtype but f32 (the embedding it is tied to, or its own weight), else the dtype's. */
static enum packed_form packed_form_of(const struct model *m, const struct weight_ref *r, enum base_dtype dtype) {
    if (dtype == BASE_DTYPE_BF16 || r->lin == &m->lm_head) return PACKED_BF16;
    return dtype == BASE_DTYPE_INT8 ? PACKED_INT8 : PACKED_NF4;
}

/* The packed weights of a model whose --base-dtype is not f32: its frozen product
 * weights and, with a tied head, the embedding the head multiplies by (in bf16). */
static void packed_weights(struct model *m, const struct weight_ref *refs, const struct st_tensor **found,
                           const int32_t *entry, int32_t n, enum base_dtype dtype) {
    struct packed_item *items = xcalloc((size_t)n + 1, sizeof *items);
    m->qw = xcalloc((size_t)n + 1, sizeof *m->qw);
    int32_t k = 0, nq = 0;
    for (int32_t i = 0; i < n; i++) {
        if (ref_packed(&refs[i], entry[i], dtype)) {
            struct linear *lin = refs[i].lin;
            items[k] = (struct packed_item){.t = found[i], .form = packed_form_of(m, &refs[i], dtype),
                                            .transpose = lin->layout == GEMM_LAYOUT_IN_OUT, .w16 = &lin->w16};
            if (items[k].form != PACKED_BF16) lin->wq = items[k].wq = &m->qw[nq++];
            k++;
        }
        if (m->cfg.tied && refs[i].w == &m->wte)
            items[k++] = (struct packed_item){.t = found[i], .form = PACKED_BF16, .w16 = &m->lm_head.w16};
    }
    packed_bind(m->base, dtype, items, k);
    free(items);
}

/* -1 with an error when a weight the dtype quantizes has in-features that are no
 * multiple of QUANT_BLOCK. */
static int packed_check(const struct model *m, const struct weight_ref *refs, int32_t n, const struct model_options *o) {
    for (int32_t i = 0; i < n && !o->full; i++) {
        const struct linear *lin = refs[i].lin;
        if (!ref_packed(&refs[i], -1, o->base_dtype) || packed_form_of(m, &refs[i], o->base_dtype) == PACKED_BF16 ||
            lin->in % QUANT_BLOCK == 0)
            continue;
        err_set(m->base->st.path, "tensor %s has %d input features, not a multiple of %d", refs[i].name, lin->in,
                QUANT_BLOCK);
        return err_hint("--base-dtype int8 and nf4 quantize blocks of %d inputs; use bf16 for this model", QUANT_BLOCK);
    }
    return 0;
}

/* Points every weight at its data: the trainable block (full mode), the mapping, or
 * the frozen blocks. */
static void weights_bind(struct model *m, const struct weight_ref *refs, int32_t n,
                         const struct st_tensor **found, const int32_t *entry, const struct model_options *o) {
    float *frozen = frozen_block(m, refs, found, entry, n, o);
    uint64_t at = 0;
    for (int32_t i = 0; i < n; i++) {
        if (entry[i] >= 0) {
            float *w = trainable_w(&m->tr, entry[i]);
            CHECK(st_tensor_to_f32(found[i], w) == 0);
            *refs[i].w = w;
            *refs[i].g = trainable_g(&m->tr, entry[i]);
        } else if (ref_packed(&refs[i], entry[i], o->base_dtype)) {
            *refs[i].w = NULL; /* packed_weights points w16 or wq */
        } else if (!o->writable && tensor_mappable(found[i])) {
            *refs[i].w = found[i]->data;
        } else {
            if (o->writable) CHECK(st_tensor_to_f32(found[i], frozen + at) == 0);
            *refs[i].w = frozen + at;
            at += (uint64_t)found[i]->numel;
        }
    }
    if (o->base_dtype != BASE_DTYPE_F32) packed_weights(m, refs, found, entry, n, o->base_dtype);
    for (int32_t i = 0; i < n; i++)
        if (refs[i].w == &m->wte && m->wte == found[i]->data && (!m->cfg.tied || o->base_dtype != BASE_DTYPE_F32))
            m->wte_lookup_only = found[i];
}

void model_lookup_done(const struct model *m) {
    if (m->wte_lookup_only) st_tensor_drop_pages(m->wte_lookup_only);
}

static void sites_list(struct model *m) {
    const int32_t per = m->arch->n_sites;
    m->n_sites = per * m->cfg.n_layer;
    m->sites = xcalloc((size_t)m->n_sites, sizeof *m->sites);
    for (int32_t s = 0; s < m->n_sites; s++) m->sites[s] = &m->layers[s / per].lin[s % per];
}

const char *model_site_name(const struct model *m, int32_t s) { return m->arch->site_names[s % m->arch->n_sites]; }

void model_site_path(const struct model *m, int32_t s, char *buf, size_t n) {
    snprintf(buf, n, m->arch->site_fmt, s / m->arch->n_sites, model_site_name(m, s));
}

struct linear *model_site_find(const struct model *m, const char *module) {
    static const char prefix[] = "transformer.";
    for (int32_t s = 0; s < m->n_sites; s++) {
        char path[96];
        model_site_path(m, s, path, sizeof path);
        const char *bare = strncmp(path, prefix, sizeof prefix - 1) ? path : path + sizeof prefix - 1;
        if (!strcmp(path, module) || !strcmp(bare, module)) return m->sites[s];
    }
    return NULL;
}

static void adapter_add(struct model *m, int32_t set, int32_t site, const char *module, int slice, int32_t out,
                        int32_t col0, int32_t id) {
    struct linear *lin = m->sites[site];
    const struct lora_spec *spec = &m->sets[set];
    struct lora_adapter *ad = &m->adapters[m->n_adapters++];
    memset(ad, 0, sizeof *ad);
    snprintf(ad->module, sizeof ad->module, "%s", module);
    ad->slice = slice;
    ad->id = id;
    ad->set = set;
    ad->site = site;
    /* the module's rank and alpha after the patterns, as PEFT decides them */
    struct peft_config rule = {.r = spec->rank, .lora_alpha = spec->alpha, .use_rslora = spec->rslora,
                               .patterns = (struct peft_pattern *)spec->patterns, .n_patterns = spec->n_patterns};
    double alpha;
    peft_module_rank_alpha(&rule, module, &ad->r, &alpha);
    ad->in = lin->in;
    ad->out = out;
    ad->col0 = col0;
    ad->scale = (float)peft_scale(alpha, ad->r, spec->rslora);
    CHECK(lin->n_lora < LINEAR_MAX_LORA);
    lin->lora[lin->n_lora++] = ad;
}

/* Matches set SET's targets against every site and creates its adapters. */
static int adapters_plan_set(struct model *m, int32_t set) {
    struct lora_spec *spec = &m->sets[set];
    if (!spec->n_targets) {
        spec->targets = m->arch->default_targets;
        spec->n_targets = m->arch->n_default_targets;
    }
    const char *what = spec->source ? spec->source : "--targets";
    int32_t *hits = xcalloc((size_t)spec->n_targets + 1, sizeof *hits);
    int32_t id = 0;
    int rc = 0;
    for (int s = 0; s < m->n_sites && rc == 0; s++) {
        char module[96];
        model_site_path(m, s, module, sizeof module);
        struct linear *lin = m->sites[s];
        int match = lora_match(spec->targets, spec->n_targets, module, s % m->arch->n_sites == m->arch->fused_qkv, hits);
        if ((match & LORA_MATCH_WHOLE) && (match & ~LORA_MATCH_WHOLE)) {
            rc = err_set(what, "%s is targeted both whole and as q/k/v slices", module);
            break;
        }
        if (match & LORA_MATCH_WHOLE) adapter_add(m, set, s, module, -1, lin->out, 0, id++);
        for (int k = 0; k < 3; k++)
            if (match & (1 << k)) adapter_add(m, set, s, module, k, lin->out / 3, k * (lin->out / 3), id++);
    }
    for (int32_t i = 0; i < spec->n_targets && rc == 0; i++)
        if (!hits[i]) {
            err_set(what, "'%s' matches no module of this model", spec->targets[i]);
            rc = err_hint(spec->source ? "the adapter was trained on another model" : "this model's modules: %s",
                          m->arch->targets_hint);
        }
    free(hits);
    return rc;
}

static int adapters_plan(struct model *m) {
    m->adapters = xcalloc((size_t)m->n_sites * 3 * m->n_sets, sizeof *m->adapters);
    int rc = 0;
    for (int32_t g = 0; g < m->n_sets && rc == 0; g++) rc = adapters_plan_set(m, g);
    return rc;
}

static void adapters_register(struct model *m, int32_t *entry_a) {
    for (int32_t i = 0; i < m->n_adapters; i++) {
        struct lora_adapter *ad = &m->adapters[i];
        static const char *const slice_tag[3] = {"[q]", "[k]", "[v]"};
        const char *tag = ad->slice >= 0 ? slice_tag[ad->slice] : "";
        char set[16] = "", name[176];
        if (m->n_sets > 1) snprintf(set, sizeof set, "%d/", ad->set);
        int64_t a_shape[2] = {ad->r, ad->in}, b_shape[2] = {ad->out, ad->r};
        snprintf(name, sizeof name, "%s%s%s.lora_A", set, ad->module, tag);
        entry_a[i] = trainable_add(&m->tr, name, 2, a_shape);
        snprintf(name, sizeof name, "%s%s%s.lora_B", set, ad->module, tag);
        trainable_add(&m->tr, name, 2, b_shape);
    }
}

/* Where each set's floats lie in the trainable block: from its first adapter's A on
 * (m->adapters is set by set, and every set has one); full mode: one span of them all. */
static void sets_span(struct model *m, const int32_t *entry_a) {
    const int32_t K = m->n_sets > 1 ? m->n_sets : 1;
    m->set_off[0] = 0;
    m->set_off[K] = m->tr.n;
    for (int32_t i = 1; i < m->n_adapters; i++)
        if (m->adapters[i].set != m->adapters[i - 1].set)
            m->set_off[m->adapters[i].set] = m->tr.entries[entry_a[i]].offset;
}

static void adapters_bind(struct model *m, const int32_t *entry_a) {
    for (int32_t i = 0; i < m->n_adapters; i++) {
        struct lora_adapter *ad = &m->adapters[i];
        ad->A = trainable_w(&m->tr, entry_a[i]);
        ad->dA = trainable_g(&m->tr, entry_a[i]);
        ad->B = trainable_w(&m->tr, entry_a[i] + 1);
        ad->dB = trainable_g(&m->tr, entry_a[i] + 1);
        lora_init(ad, m->sets[ad->set].init_gaussian, m->sets[ad->set].seed);
    }
}

/* Lays out every activation and scratch tensor in one allocation. */
static void acts_alloc(struct model *m) {
    const uint64_t N = (uint64_t)m->B * m->T;
    m->attn_slots = omp_get_max_threads();
    uint64_t u = 0, scratch = attention_scratch_size(m->T, m->attn_slots);
    for (int32_t i = 0; i < m->n_adapters; i++) u += N * (uint64_t)m->adapters[i].r;
    for (int32_t s = 0; s < m->n_sites; s++) {
        uint64_t need = linear_scratch_size(m->sites[s], (int)N);
        if (need > scratch) scratch = need;
    }
    struct act_slot slots[64];
    int32_t n = m->arch->acts_plan(m, slots);
    slots[n++] = (struct act_slot){&m->lora_u, u};
    slots[n++] = (struct act_slot){&m->scratch, scratch};
    uint64_t total = 0;
    for (int32_t i = 0; i < n; i++) total += (slots[i].n + 15) / 16 * 16;
    m->act_bytes = total * sizeof(float);
    m->act_block = xalloc_aligned(m->act_bytes);
    float *p = m->act_block;
    for (int32_t i = 0; i < n; i++) {
        *slots[i].p = p;
        p += (slots[i].n + 15) / 16 * 16;
    }
    float *at = m->lora_u;
    for (int32_t i = 0; i < m->n_adapters; i++) {
        m->adapters[i].u = at;
        at += N * (uint64_t)m->adapters[i].r;
    }
    if (m->arch->acts_init) m->arch->acts_init(m);
}

static int weights_load(struct model *m, const struct model_options *o, int32_t *entry_a) {
    struct weight_refs list;
    weight_refs_alloc(m, &list);
    m->arch->weights_plan(m, &list);
    struct weight_ref *refs = list.r;
    int32_t n = list.n;
    const struct st_tensor **found = xcalloc((size_t)n, sizeof *found);
    int32_t *entry = xmalloc((size_t)n * sizeof *entry);
    int rc = weights_find(m, refs, n, found);
    if (rc == 0) rc = packed_check(m, refs, n, o);
    if (rc == 0 && !o->full && m->n_sets) rc = adapters_plan(m);
    if (rc == 0) {
        for (int32_t i = 0; i < n; i++) {
            entry[i] = o->full ? trainable_add(&m->tr, refs[i].name, refs[i].ndim, refs[i].shape) : -1;
            m->n_params += found[i]->numel;
        }
        adapters_register(m, entry_a);
        trainable_alloc(&m->tr);
        sets_span(m, entry_a);
        weights_bind(m, refs, n, found, entry, o);
    }
    free(entry);
    free(found);
    free(refs);
    return rc;
}

/* M's base: O's, or DIR opened for M alone. */
static int base_take(struct model *m, const struct model_options *o) {
    if (o->base) {
        m->base = o->base;
        return 0;
    }
    m->base = &m->own_base;
    return base_open(m->base, o->dir);
}

int32_t model_seq_default(const struct model_config *cfg) {
    int32_t context = cfg->n_positions;
    if (cfg->sliding_window > 0 && cfg->sliding_window < context) context = cfg->sliding_window;
    return context < MODEL_SEQ_DEFAULT ? context : MODEL_SEQ_DEFAULT;
}

int model_seq_check(const struct model_config *cfg, int32_t seq) {
    if (seq > cfg->n_positions) {
        err_set("--seq", "%d exceeds the model's n_positions %d", seq, cfg->n_positions);
        return err_hint("use --seq %d or less", cfg->n_positions);
    }
    if (cfg->sliding_window && seq > cfg->sliding_window) {
        err_set("--seq", "%d exceeds the model's sliding_window %d", seq, cfg->sliding_window);
        return err_hint("lorad does not implement sliding-window attention; use --seq %d or less",
                        cfg->sliding_window);
    }
    return 0;
}

int model_init(struct model *m, const struct model_options *o) {
    memset(m, 0, sizeof *m);
    if (base_take(m, o)) {
        model_free(m);
        return -1;
    }
    m->cfg = m->base->cfg;
    const int32_t seq = o->seq ? o->seq : model_seq_default(&m->cfg);
    if (model_seq_check(&m->cfg, seq)) {
        model_free(m);
        return -1;
    }
    if ((int64_t)9 * m->cfg.n_layer > st_set_count(&m->base->st)) {
        err_set(m->base->st.path, "holds %lld tensors, too few for the %d layers config.json declares",
                (long long)st_set_count(&m->base->st), m->cfg.n_layer);
        model_free(m);
        return err_hint("config.json and model.safetensors must come from the same model");
    }
    m->arch = m->cfg.arch == MODEL_ARCH_GPT2 ? &arch_gpt2 : &arch_llama;
    m->B = o->max_batch;
    m->T = seq;
    m->inference = o->inference;
    m->all_logits = o->all_logits;
    CHECK(!o->all_logits || o->inference);
    m->recompute = o->recompute && !o->inference;
    m->head_rows = o->head_rows > 0 ? o->head_rows : MODEL_HEAD_ROWS;
    CHECK(o->full || o->inference || o->n_sets > 0);
    CHECK(o->n_sets <= LORA_MAX_SETS);
    m->n_sets = o->full ? 0 : o->n_sets;
    for (int32_t g = 0; g < m->n_sets; g++) m->sets[g] = o->sets[g];
    m->layers = xcalloc((size_t)m->cfg.n_layer, sizeof *m->layers);
    sites_list(m);
    int32_t *entry_a = xcalloc((size_t)m->n_sites * 3 * m->n_sets + 1, sizeof *entry_a);
    int rc = weights_load(m, o, entry_a);
    if (rc == 0) {
        adapters_bind(m, entry_a);
        if (m->cfg.tied) {
            m->lm_head.w = m->wte;
            m->lm_head.dw = m->dwte;
        }
        acts_alloc(m);
    }
    free(entry_a);
    if (rc) model_free(m);
    return rc;
}

void model_free(struct model *m) {
    trainable_free(&m->tr);
    base_close(&m->own_base);
    free(m->frozen);
    free(m->layers);
    free(m->sites);
    free(m->adapters);
    free(m->qw);
    free(m->act_block);
    memset(m, 0, sizeof *m);
}

int64_t model_n_trainable(const struct model *m) { return (int64_t)m->tr.n; }

struct trainable model_set_params(const struct model *m, int32_t set) {
    CHECK(set >= 0 && set < (m->n_sets > 1 ? m->n_sets : 1));
    return trainable_view(&m->tr, m->set_off[set], m->set_off[set + 1] - m->set_off[set]);
}

/* GPT-2's initial value of weight NAME: layernorm gains 1, biases 0, residual
 * projections N(0, 0.02/sqrt(2L)), position embeddings N(0, 0.01), the rest N(0, 0.02). */
static void random_fill(float *x, int64_t n, const char *name, int32_t n_layer, uint64_t key) {
    int ln = strstr(name, "ln_") != NULL, bias = strstr(name, ".bias") != NULL;
    float std = strstr(name, "c_proj.weight") ? 0.02f / sqrtf(2.0f * n_layer)
                : strstr(name, "wpe") ? 0.01f
                                      : 0.02f;
    for (int64_t i = 0; i < n; i++) x[i] = bias ? 0.0f : ln ? 1.0f : std * rng_normal(key, (uint64_t)i);
}

static int64_t ref_numel(const struct weight_ref *r) { return r->shape[0] * (r->ndim == 2 ? r->shape[1] : 1); }

int model_write_random(const struct model_config *cfg, uint64_t seed, const char *dir) {
    CHECK(cfg->arch == MODEL_ARCH_GPT2);
    struct model m = {.cfg = *cfg, .arch = &arch_gpt2};
    m.layers = xcalloc((size_t)cfg->n_layer, sizeof *m.layers);
    struct weight_refs list;
    weight_refs_alloc(&m, &list);
    m.arch->weights_plan(&m, &list);
    struct weight_ref *refs = list.r;
    int32_t n = list.n;
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++) total += ref_numel(&refs[i]);
    m.frozen = xmalloc((size_t)total * sizeof(float));
    float *at = m.frozen;
    for (int32_t i = 0; i < n; i++) {
        random_fill(at, ref_numel(&refs[i]), refs[i].name, cfg->n_layer, rng_key(RNG_STREAM_INIT, seed, (uint64_t)i, 1));
        *refs[i].w = at;
        at += ref_numel(&refs[i]);
    }
    struct st_write_entry *e = model_weights(&m, ST_DTYPE_F32, &n);
    int rc = dir_make(dir);
    if (rc == 0) rc = hf_config_write(cfg, dir);
    if (rc == 0) rc = st_set_write(dir, e, n, UINT64_MAX);
    free(e);
    free(refs);
    free(m.frozen);
    free(m.layers);
    return rc;
}

struct st_write_entry *model_weights(const struct model *m, enum st_dtype dtype, int32_t *n) {
    /* weights_plan records where each pointer lives; here the values are only read */
    struct model view = *m;
    struct weight_refs list;
    weight_refs_alloc(m, &list);
    m->arch->weights_plan(&view, &list);
    struct weight_ref *refs = list.r;
    *n = list.n;
    /* the entries and their names in one allocation, released with free() */
    struct st_write_entry *e = xcalloc((size_t)list.cap, sizeof *e + 96);
    char (*names)[96] = (char (*)[96])(e + list.cap);
    for (int32_t i = 0; i < *n; i++) {
        snprintf(names[i], sizeof names[0], "%s", refs[i].name);
        e[i] = (struct st_write_entry){.name = names[i], .data = *refs[i].w, .ndim = refs[i].ndim,
                                       .shape = {refs[i].shape[0], refs[i].shape[1]}, .dtype = dtype};
    }
    free(refs);
    return e;
}

double model_forward(struct model *m, const int32_t *inp, const int32_t *start, const int32_t *tgt,
                     const uint8_t *mask, int B, const struct lora_rows *rows, float grad_scale) {
    CHECK(tgt || m->all_logits);
    CHECK(rows ? rows->n_sets == m->n_sets : m->n_sets <= 1);
    m->start = start;
    return m->arch->forward(m, inp, tgt, mask, B, rows, grad_scale);
}

void model_backward(struct model *m, const int32_t *inp, int B, const struct lora_rows *rows) {
    m->arch->backward(m, inp, B, rows);
}

const float *model_losses(const struct model *m) {
    return m->cfg.arch == MODEL_ARCH_GPT2 ? m->a.g.losses : m->a.l.losses;
}

/* Whether the activations of one layer at a time suffice: no backward reads them (an
 * inference model), or it recomputes them. */
static int one_layer_kept(const struct model *m) { return m->recompute || m->inference; }

uint64_t model_kept_layers(const struct model *m) { return one_layer_kept(m) ? 1 : (uint64_t)m->cfg.n_layer; }

uint64_t model_kept_slot(const struct model *m, int l) { return one_layer_kept(m) ? 0 : (uint64_t)l; }

uint64_t model_input_layers(const struct model *m, int32_t site) {
    if (one_layer_kept(m)) return 1;
    for (int32_t l = 0; l < m->cfg.n_layer; l++)
        if (linear_needs_input(&m->layers[l].lin[site])) return (uint64_t)m->cfg.n_layer;
    return 1;
}

int32_t model_logit_rows(const struct model *m) {
    const int32_t N = m->B * m->T;
    return m->all_logits || N < m->head_rows ? N : m->head_rows;
}

double model_head(struct model *m, const float *x, float *dx, const int32_t *tgt, const uint8_t *mask, int N,
                  float grad_scale, float *losses) {
    const int C = m->cfg.n_embd, V = m->cfg.vocab_size, R = model_logit_rows(m);
    if (!tgt) {
        linear_forward(&m->lm_head, m->logits, x, m->scratch, NULL, N);
        return 0.0;
    }
    if (grad_scale != 0.0f) memset(dx, 0, (size_t)N * C * sizeof *dx);
    double loss = 0.0;
    for (int r0 = 0; r0 < N; r0 += R) {
        const int rows = N - r0 < R ? N - r0 : R;
        const float *xr = x + (size_t)r0 * C;
        linear_forward(&m->lm_head, m->logits, xr, m->scratch, NULL, rows);
        loss += crossentropy_forward(m->logits, losses + r0, tgt + r0, mask + r0, grad_scale, rows, V);
        if (grad_scale == 0.0f) continue;
        linear_backward(&m->lm_head, dx + (size_t)r0 * C, m->logits, xr, m->scratch, NULL, rows);
    }
    return loss;
}
