/*
 * export.c: the export set of a model, written to a directory and restored (export.h).
 */
#include "export.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "peft.h"

/* The PEFT view of one linear a set adapts: rank R' over the set's adapters on it. */
struct peft_module {
    const struct linear *lin;
    struct lora_adapter *ad[3]; /* the whole output's, or the q/k/v slices' in order */
    int32_t n;
    int32_t r;     /* n·r for slices, r otherwise */
    int sliced;
    float *A, *B;  /* (r', in), (out, r') */
};

/* The modules adapter set SET adapts, in site order. */
static int32_t modules_collect(const struct model *m, int32_t set, struct peft_module *mods) {
    int32_t n = 0;
    for (int32_t s = 0; s < m->n_sites; s++) {
        const struct linear *lin = m->sites[s];
        struct peft_module pm = {.lin = lin};
        for (int32_t k = 0; k < lin->n_lora; k++)
            if (lin->lora[k]->set == set) pm.ad[pm.n++] = lin->lora[k];
        if (!pm.n) continue;
        pm.r = pm.n * pm.ad[0]->r;
        pm.sliced = pm.ad[0]->slice >= 0;
        mods[n++] = pm;
    }
    return n;
}

/* Points every module's A and B into one buffer; returns the buffer. */
static float *modules_place(struct peft_module *mods, int32_t n) {
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) total += (size_t)mods[i].r * (mods[i].lin->in + mods[i].lin->out);
    float *buf = xcalloc(total + 1, sizeof(float));
    float *p = buf;
    for (int32_t i = 0; i < n; i++) {
        mods[i].A = p;
        p += (size_t)mods[i].r * mods[i].lin->in;
        mods[i].B = p;
        p += (size_t)mods[i].lin->out * mods[i].r;
    }
    return buf;
}

/* Copies between a module's adapters and its PEFT A (r',in) and B (out,r'). */
static void module_copy(struct peft_module *pm, int to_peft) {
    for (int32_t k = 0; k < pm->n; k++) {
        struct lora_adapter *ad = pm->ad[k];
        size_t r = (size_t)ad->r, rp = (size_t)pm->r;
        float *pa = pm->A + k * r * ad->in;
        if (to_peft)
            memcpy(pa, ad->A, r * ad->in * sizeof(float));
        else
            memcpy(ad->A, pa, r * ad->in * sizeof(float));
        for (int32_t o = 0; o < ad->out; o++) {
            float *pb = pm->B + (size_t)(ad->col0 + o) * rp + k * r;
            float *b = ad->B + (size_t)o * r;
            if (to_peft)
                memcpy(pb, b, r * sizeof(float));
            else
                memcpy(b, pb, r * sizeof(float));
        }
    }
}

/* In a sliced module's PEFT B, every entry outside the slices' blocks must be zero. */
static int module_blocks_only(const struct peft_module *pm) {
    const struct linear *lin = pm->lin;
    const int32_t r = pm->ad[0]->r;
    for (int32_t row = 0; row < lin->out; row++)
        for (int32_t col = 0; col < pm->r; col++) {
            const struct lora_adapter *ad = pm->ad[col / r];
            int inside = row >= ad->col0 && row < ad->col0 + ad->out;
            if (!inside && pm->B[(size_t)row * pm->r + col] != 0.0f) return 0;
        }
    return 1;
}

static void target_add(struct peft_config *cfg, const char *t) {
    for (int32_t i = 0; i < cfg->n_targets; i++)
        if (strcmp(cfg->target_modules[i], t) == 0) return;
    cfg->target_modules[cfg->n_targets++] = xstrdup(t);
}

/* The rank n·r and the alpha that keep a sliced module's scale as one PEFT adapter. */
static struct peft_pattern sliced_pattern(const struct lora_spec *spec, const struct peft_module *pm) {
    const struct lora_adapter *ad = pm->ad[0];
    struct peft_config rule = {.r = spec->rank, .lora_alpha = spec->alpha, .use_rslora = spec->rslora,
                               .patterns = (struct peft_pattern *)spec->patterns, .n_patterns = spec->n_patterns};
    int32_t r;
    double alpha;
    peft_module_rank_alpha(&rule, ad->module, &r, &alpha);
    double scale = peft_scale(alpha, r, spec->rslora);
    /* keyed by the path without "transformer.", which PEFT's suffix rule matches */
    const char *key = strncmp(ad->module, "transformer.", 12) ? ad->module : ad->module + 12;
    return (struct peft_pattern){.key = (char *)key, .r = pm->r,
                                 .alpha = scale * (spec->rslora ? sqrt((double)pm->r) : (double)pm->r)};
}

/* The patterns of CFG: first the sliced modules' (one "c_attn" entry when they all
 * agree, one per module otherwise), then the user's, so PEFT's first match is right. */
static void patterns_build(const struct lora_spec *spec, const struct peft_module *mods, int32_t n_mods,
                           struct peft_config *cfg) {
    cfg->patterns = xcalloc((size_t)(n_mods + spec->n_patterns) + 1, sizeof *cfg->patterns);
    int32_t first = -1, uniform = 1;
    for (int32_t i = 0; i < n_mods; i++) {
        if (!mods[i].sliced) continue;
        struct peft_pattern p = sliced_pattern(spec, &mods[i]);
        if (first < 0) first = i;
        uniform &= p.r == sliced_pattern(spec, &mods[first]).r && p.alpha == sliced_pattern(spec, &mods[first]).alpha;
    }
    for (int32_t i = 0; i < n_mods && first >= 0; i++) {
        if (!mods[i].sliced || (uniform && i != first)) continue;
        struct peft_pattern p = sliced_pattern(spec, &mods[i]);
        p.key = xstrdup(uniform ? "c_attn" : p.key);
        cfg->patterns[cfg->n_patterns++] = p;
    }
    for (int32_t i = 0; i < spec->n_patterns; i++) {
        cfg->patterns[cfg->n_patterns] = spec->patterns[i];
        cfg->patterns[cfg->n_patterns++].key = xstrdup(spec->patterns[i].key);
    }
}

/* PEFT's config for M's set META->set: q/k/v become c_attn with its own rank and alpha. */
static void config_build(const struct model *m, const struct export_meta *meta, const struct peft_module *mods,
                         int32_t n_mods, struct peft_config *cfg) {
    const struct lora_spec *spec = &m->sets[meta->set];
    memset(cfg, 0, sizeof *cfg);
    cfg->r = spec->rank;
    cfg->lora_alpha = spec->alpha;
    cfg->use_rslora = spec->rslora;
    cfg->fan_in_fan_out = m->cfg.arch == MODEL_ARCH_GPT2; /* Conv1D weights are [in, out] */
    cfg->lora_dropout = meta->dropout;
    cfg->base_model = meta->base ? xstrdup(meta->base) : NULL;
    cfg->target_modules = xcalloc((size_t)spec->n_targets + 8, sizeof(char *));
    int sliced = 0;
    for (int32_t i = 0; i < n_mods; i++) sliced |= mods[i].sliced;
    for (int32_t i = 0; i < spec->n_targets; i++) {
        const char *t = spec->targets[i];
        if (!strcmp(t, "q") || !strcmp(t, "k") || !strcmp(t, "v")) continue;
        if (strcmp(t, "all-linear") == 0) {
            /* PEFT reads "all-linear" only as the whole value: name the modules */
            for (int32_t s = 0; s < m->n_sites / m->cfg.n_layer; s++) target_add(cfg, model_site_name(m, s));
            continue;
        }
        target_add(cfg, t);
    }
    if (sliced) target_add(cfg, "c_attn");
    patterns_build(spec, mods, n_mods, cfg);
}

static int collect_lora(const struct model *m, const struct export_meta *meta, struct export_set *x) {
    struct peft_module *mods = xcalloc((size_t)m->n_sites + 1, sizeof *mods);
    int32_t n = modules_collect(m, meta->set, mods);
    x->owned = modules_place(mods, n);
    x->e = xcalloc(2 * (size_t)n + 1, sizeof *x->e);
    x->names = xcalloc(2 * (size_t)n + 1, sizeof *x->names);
    for (int32_t i = 0; i < n; i++) {
        module_copy(&mods[i], 1);
        const char *module = mods[i].ad[0]->module;
        peft_key(x->names[2 * i], sizeof x->names[0], module, 'A');
        peft_key(x->names[2 * i + 1], sizeof x->names[0], module, 'B');
        x->e[2 * i] = (struct st_write_entry){.name = x->names[2 * i], .data = mods[i].A, .ndim = 2,
                                              .shape = {mods[i].r, mods[i].lin->in}, .dtype = ST_DTYPE_F32};
        x->e[2 * i + 1] = (struct st_write_entry){.name = x->names[2 * i + 1], .data = mods[i].B, .ndim = 2,
                                                  .shape = {mods[i].lin->out, mods[i].r}, .dtype = ST_DTYPE_F32};
    }
    x->n = 2 * n;
    struct peft_config cfg;
    config_build(m, meta, mods, n, &cfg);
    x->config = peft_config_text(&cfg);
    peft_config_free(&cfg);
    free(mods);
    return x->config ? 0 : -1;
}

static void collect_full(const struct model *m, struct export_set *x) {
    x->e = xcalloc((size_t)m->tr.n_entries + 1, sizeof *x->e);
    for (int32_t i = 0; i < m->tr.n_entries; i++) {
        const struct trainable_entry *t = &m->tr.entries[i];
        x->e[i] = (struct st_write_entry){.name = t->name, .data = trainable_w(&m->tr, i), .ndim = t->ndim,
                                          .shape = {t->shape[0], t->shape[1]}, .dtype = ST_DTYPE_F32};
    }
    x->n = m->tr.n_entries;
    x->config = xstrdup(m->base->config_text); /* training changed the weights, not the config */
}

int export_collect(const struct model *m, const struct export_meta *meta, struct export_set *x) {
    memset(x, 0, sizeof *x);
    x->full = m->n_adapters == 0;
    if (!x->full) return collect_lora(m, meta, x);
    collect_full(m, x);
    return 0;
}

void export_free(struct export_set *x) {
    free(x->e);
    free(x->config);
    free(x->owned);
    free(x->names);
    memset(x, 0, sizeof *x);
}

void export_files(int full, const char **config_file, const char **weights_file) {
    *config_file = full ? "config.json" : "adapter_config.json";
    *weights_file = full ? "model.safetensors" : "adapter_model.safetensors";
}

int export_write_dir(const char *dir, int full, const char *config, const struct st_write_entry *e, int32_t n) {
    const char *config_file, *weights_file;
    export_files(full, &config_file, &weights_file);
    if (dir_make(dir)) return -1;
    char *wpath = path_join(dir, weights_file), *cpath = path_join(dir, config_file);
    static const char *const meta[2] = {"format", "pt"};
    int rc = safetensors_write(wpath, e, n, meta, 1);
    if (rc == 0) rc = file_write_atomic(cpath, config, strlen(config));
    free(wpath);
    free(cpath);
    return rc;
}

static int restore_full(struct model *m, export_get_fn get, void *ctx) {
    for (int32_t i = 0; i < m->tr.n_entries; i++) {
        const struct trainable_entry *t = &m->tr.entries[i];
        if (get(ctx, t->name, t->ndim, t->shape, trainable_w(&m->tr, i))) return -1;
    }
    return 0;
}

/* Reads every module's PEFT A and B through GET and copies them into set SET's adapters. */
static int restore_lora(struct model *m, int32_t set, export_get_fn get, void *ctx) {
    struct peft_module *mods = xcalloc((size_t)m->n_sites + 1, sizeof *mods);
    int32_t n = modules_collect(m, set, mods);
    float *buf = modules_place(mods, n);
    int rc = 0;
    for (int32_t i = 0; i < n && rc == 0; i++) {
        struct peft_module *pm = &mods[i];
        const char *module = pm->ad[0]->module;
        char key[160];
        const int64_t a_shape[2] = {pm->r, pm->lin->in}, b_shape[2] = {pm->lin->out, pm->r};
        peft_key(key, sizeof key, module, 'A');
        rc = get(ctx, key, 2, a_shape, pm->A);
        peft_key(key, sizeof key, module, 'B');
        if (rc == 0) rc = get(ctx, key, 2, b_shape, pm->B);
        if (rc == 0 && pm->sliced && !module_blocks_only(pm)) {
            err_set(key, "is not block-structured");
            rc = err_hint("this c_attn adapter cannot be represented as q/k/v slices; use --targets c_attn");
        }
        if (rc == 0) module_copy(pm, 0);
    }
    free(buf);
    free(mods);
    return rc;
}

int export_restore(struct model *m, int32_t set, export_get_fn get, void *ctx) {
    return m->n_adapters ? restore_lora(m, set, get, ctx) : restore_full(m, get, ctx);
}

/* export_get_fn over a safetensors file. */
static int safetensors_get(void *ctx, const char *name, int32_t ndim, const int64_t *shape, float *out) {
    const struct safetensors *st = ctx;
    const struct st_tensor *t = safetensors_find(st, name);
    if (!t) {
        err_set(st->path, "missing tensor %s", name);
        return err_hint("the adapter must target the same modules as --targets");
    }
    if (st_tensor_expect_shape(st, t, ndim, shape)) return err_hint("--rank and --targets must match the adapter");
    return st_tensor_to_f32(t, out);
}

/* The adapter's scales must be set SET's, and each of its tensors one of the set's. */
static int adapter_matches(const struct model *m, int32_t set, const struct peft_config *cfg,
                           const struct safetensors *st) {
    for (int32_t i = 0; i < m->n_adapters; i++) {
        const struct lora_adapter *ad = &m->adapters[i];
        if (ad->set != set) continue;
        /* a sliced module's PEFT scale is its slices' scale */
        double want = ad->scale, got = peft_module_scale(cfg, ad->module);
        if (fabs(want - got) > 1e-6 * fabs(want)) {
            err_set(st->path, "%s has scale %g, the flags give %g", ad->module, got, want);
            return err_hint("--alpha, --rank, --rslora and the patterns must match adapter_config.json");
        }
    }
    for (int32_t t = 0; t < st->n_tensors; t++) {
        int used = 0;
        for (int32_t i = 0; i < m->n_adapters && !used; i++) {
            if (m->adapters[i].set != set) continue;
            char a[160], b[160];
            peft_key(a, sizeof a, m->adapters[i].module, 'A');
            peft_key(b, sizeof b, m->adapters[i].module, 'B');
            used = !strcmp(st->tensors[t].name, a) || !strcmp(st->tensors[t].name, b);
        }
        if (!used) {
            err_set(st->path, "tensor %s is not an adapter of the targeted modules", st->tensors[t].name);
            return err_hint("add its module to --targets");
        }
    }
    return 0;
}

int adapter_import(struct model *m, int32_t set, const char *dir) {
    struct peft_config cfg;
    struct safetensors st;
    if (peft_adapter_open(dir, &cfg, &st)) return -1;
    int rc = adapter_matches(m, set, &cfg, &st);
    if (rc == 0) rc = restore_lora(m, set, safetensors_get, &st);
    safetensors_close(&st);
    peft_config_free(&cfg);
    return rc;
}

int adapter_dir_open(struct adapter_dir *a, const char *dir) {
    memset(a, 0, sizeof *a);
    struct safetensors st;
    if (peft_adapter_open(dir, &a->cfg, &st)) return -1;
    int rc = peft_modules_list(&st, &a->mods);
    if (rc) {
        safetensors_close(&st);
        peft_config_free(&a->cfg);
        return -1;
    }
    a->dir = dir;
    a->file = xstrdup(st.path);
    a->targets = xcalloc((size_t)a->mods.n + 1, sizeof *a->targets);
    for (int32_t i = 0; i < a->mods.n; i++) a->targets[i] = a->mods.name[i];
    a->spec = (struct lora_spec){.targets = a->targets, .n_targets = a->mods.n, .rank = a->cfg.r,
                                 .alpha = (float)a->cfg.lora_alpha, .rslora = a->cfg.use_rslora,
                                 .patterns = a->cfg.patterns, .n_patterns = a->cfg.n_patterns, .source = a->file};
    safetensors_close(&st);
    return 0;
}

void adapter_dir_free(struct adapter_dir *a) {
    peft_config_free(&a->cfg);
    peft_modules_free(&a->mods);
    free(a->targets);
    free(a->file);
    memset(a, 0, sizeof *a);
}
