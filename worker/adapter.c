/*
 * adapter.c: PEFT export and import of a model's adapters (adapter.h).
 */
#include "adapter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "peft.h"

/* The PEFT view of one adapted module: rank R' over all its adapters. */
struct peft_module {
    const struct linear *lin;
    int32_t r;     /* n·r for slices, r otherwise */
    int sliced;
    float *A, *B;  /* (r', in), (out, r'): export buffers */
};

static int32_t modules_collect(const struct model *m, struct peft_module *mods) {
    int32_t n = 0;
    for (int32_t s = 0; s < m->n_sites; s++) {
        const struct linear *lin = m->sites[s];
        if (!lin->n_lora) continue;
        mods[n] = (struct peft_module){.lin = lin, .r = lin->n_lora * m->rank, .sliced = lin->lora[0]->slice >= 0};
        n++;
    }
    return n;
}

/* Copies between a module's adapters and its PEFT A (r',in) and B (out,r'). TO_PEFT
 * chooses the direction. */
static void module_copy(struct peft_module *pm, int to_peft) {
    const struct linear *lin = pm->lin;
    for (int32_t k = 0; k < lin->n_lora; k++) {
        struct lora_adapter *ad = lin->lora[k];
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
    const int32_t r = lin->lora[0]->r;
    for (int32_t row = 0; row < lin->out; row++)
        for (int32_t col = 0; col < pm->r; col++) {
            const struct lora_adapter *ad = lin->lora[col / r];
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

static double module_scale(const struct model *m) {
    return m->rslora ? m->alpha / sqrt((double)m->rank) : (double)m->alpha / m->rank;
}

/* PEFT's config for M: q/k/v become c_attn with its own rank and alpha. */
static void config_build(const struct model *m, struct peft_config *cfg, const char *const *targets,
                         int32_t n_targets, const char *base, float dropout, const struct peft_module *mods,
                         int32_t n_mods) {
    memset(cfg, 0, sizeof *cfg);
    cfg->r = m->rank;
    cfg->lora_alpha = m->alpha;
    cfg->use_rslora = m->rslora;
    cfg->fan_in_fan_out = 1;
    cfg->lora_dropout = dropout;
    cfg->base_model = base ? xstrdup(base) : NULL;
    cfg->target_modules = xcalloc((size_t)n_targets + 5, sizeof(char *));
    int sliced = 0;
    for (int32_t i = 0; i < n_mods; i++) sliced |= mods[i].sliced;
    for (int32_t i = 0; i < n_targets; i++) {
        const char *t = targets[i];
        if (!strcmp(t, "q") || !strcmp(t, "k") || !strcmp(t, "v")) continue;
        if (strcmp(t, "all-linear") == 0) {
            /* PEFT reads "all-linear" only as the whole value: name the modules */
            for (int s = 0; s < 4; s++) target_add(cfg, model_site_name(s));
            continue;
        }
        target_add(cfg, t);
    }
    if (!sliced) return;
    target_add(cfg, "c_attn");
    int32_t rp = 0;
    for (int32_t i = 0; i < n_mods; i++)
        if (mods[i].sliced) rp = mods[i].r;
    cfg->patterns = xcalloc(1, sizeof *cfg->patterns);
    cfg->n_patterns = 1;
    cfg->patterns[0].key = xstrdup("c_attn");
    cfg->patterns[0].r = rp;
    cfg->patterns[0].alpha = module_scale(m) * (m->rslora ? sqrt((double)rp) : (double)rp);
}

static void modules_alloc(struct peft_module *mods, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        mods[i].A = xcalloc((size_t)mods[i].r * mods[i].lin->in, sizeof(float));
        mods[i].B = xcalloc((size_t)mods[i].lin->out * mods[i].r, sizeof(float));
    }
}

static void modules_free(struct peft_module *mods, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        free(mods[i].A);
        free(mods[i].B);
    }
    free(mods);
}

int adapter_export(const struct model *m, const char *dir, const char *const *targets, int32_t n_targets,
                   const char *base, float dropout) {
    if (dir_make(dir)) return -1;
    struct peft_module *mods = xcalloc((size_t)m->n_sites + 1, sizeof *mods);
    int32_t n = modules_collect(m, mods);
    modules_alloc(mods, n);
    struct st_write_entry *e = xcalloc(2 * (size_t)n + 1, sizeof *e);
    char (*keys)[160] = xcalloc(2 * (size_t)n + 1, sizeof *keys);
    for (int32_t i = 0; i < n; i++) {
        module_copy(&mods[i], 1);
        const char *module = mods[i].lin->lora[0]->module;
        peft_key(keys[2 * i], sizeof keys[0], module, 'A');
        peft_key(keys[2 * i + 1], sizeof keys[0], module, 'B');
        e[2 * i] = (struct st_write_entry){.name = keys[2 * i], .data = mods[i].A, .ndim = 2,
                                           .shape = {mods[i].r, mods[i].lin->in}, .dtype = ST_DTYPE_F32};
        e[2 * i + 1] = (struct st_write_entry){.name = keys[2 * i + 1], .data = mods[i].B, .ndim = 2,
                                               .shape = {mods[i].lin->out, mods[i].r}, .dtype = ST_DTYPE_F32};
    }
    struct peft_config cfg;
    config_build(m, &cfg, targets, n_targets, base, dropout, mods, n);
    char *path = path_join(dir, "adapter_model.safetensors");
    static const char *const meta[2] = {"format", "pt"};
    int rc = safetensors_write(path, e, 2 * n, meta, 1);
    if (rc == 0) rc = peft_config_write(&cfg, dir);
    free(path);
    peft_config_free(&cfg);
    free(keys);
    free(e);
    modules_free(mods, n);
    return rc;
}

/* Reads one PEFT tensor of the expected shape into OUT. */
static int tensor_load(const struct safetensors *st, const char *module, char which, int64_t d0, int64_t d1,
                       float *out) {
    char key[160];
    peft_key(key, sizeof key, module, which);
    const struct st_tensor *t = safetensors_find(st, key);
    if (!t) {
        err_set(st->path, "missing tensor %s", key);
        return err_hint("the adapter must target the same modules as --targets");
    }
    const int64_t shape[2] = {d0, d1};
    if (st_tensor_expect_shape(st, t, 2, shape)) return err_hint("--rank and --targets must match the adapter");
    return st_tensor_to_f32(t, out);
}

static int module_import(const struct model *m, const struct peft_config *cfg, const struct safetensors *st,
                         struct peft_module *pm) {
    const char *module = pm->lin->lora[0]->module;
    double want = module_scale(m), got = peft_module_scale(cfg, module);
    if (fabs(want - got) > 1e-6 * fabs(want)) {
        err_set(st->path, "%s has scale %g, the flags give %g", module, got, want);
        return err_hint("--alpha, --rank and --rslora must match adapter_config.json");
    }
    if (tensor_load(st, module, 'A', pm->r, pm->lin->in, pm->A)) return -1;
    if (tensor_load(st, module, 'B', pm->lin->out, pm->r, pm->B)) return -1;
    if (pm->sliced && !module_blocks_only(pm)) {
        err_set(st->path, "%s lora_B is not block-structured", module);
        return err_hint("this c_attn adapter cannot be represented as q/k/v slices; use --targets c_attn");
    }
    module_copy(pm, 0);
    return 0;
}

/* Every tensor in the file must belong to an adapter of the model. */
static int keys_all_used(const struct safetensors *st, const struct peft_module *mods, int32_t n) {
    for (int32_t t = 0; t < st->n_tensors; t++) {
        int used = 0;
        for (int32_t i = 0; i < n && !used; i++) {
            char a[160], b[160];
            peft_key(a, sizeof a, mods[i].lin->lora[0]->module, 'A');
            peft_key(b, sizeof b, mods[i].lin->lora[0]->module, 'B');
            used = !strcmp(st->tensors[t].name, a) || !strcmp(st->tensors[t].name, b);
        }
        if (!used) {
            err_set(st->path, "tensor %s is not an adapter of the targeted modules", st->tensors[t].name);
            return err_hint("add its module to --targets");
        }
    }
    return 0;
}

int adapter_import(struct model *m, const char *dir) {
    struct peft_config cfg;
    if (peft_config_read(&cfg, dir)) return -1;
    struct safetensors st = {0};
    char *path = path_join(dir, "adapter_model.safetensors");
    int rc = safetensors_open(&st, path);
    free(path);
    struct peft_module *mods = xcalloc((size_t)m->n_sites + 1, sizeof *mods);
    int32_t n = modules_collect(m, mods);
    modules_alloc(mods, n);
    if (rc == 0) rc = keys_all_used(&st, mods, n);
    for (int32_t i = 0; i < n && rc == 0; i++) rc = module_import(m, &cfg, &st, &mods[i]);
    modules_free(mods, n);
    safetensors_close(&st);
    peft_config_free(&cfg);
    return rc;
}
