/*
 * merge.c: W0 + s·B·A for every module of a PEFT adapter (merge.h).
 */
#include "merge.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "gemm.h"
#include "peft.h"

static int weights_finite(const float *w, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i])) return 0;
    return 1;
}

/* W += s·B·A for one module; A (r,in), B (out,r) already converted to float. */
static int module_merge(const struct safetensors *st, struct linear *lin, const char *module, const float *A,
                        const float *B, int32_t r, double s) {
    float *w = (float *)lin->w; /* the model was loaded writable: W is our copy */
    if (lin->layout == GEMM_LAYOUT_IN_OUT) /* Conv1D: W (in,out) += s·Aᵀ·Bᵀ */
        gemm(1, 1, lin->in, lin->out, r, (float)s, A, lin->in, B, r, 1.0f, w, lin->out);
    else /* Linear: W (out,in) += s·B·A */
        gemm(0, 0, lin->out, lin->in, r, (float)s, B, r, A, lin->in, 1.0f, w, lin->in);
    if (weights_finite(w, (size_t)lin->in * lin->out)) return 0;
    err_set(st->path, "merging %s gives non-finite weights", module);
    return err_hint("the adapter holds NaN or Inf values, or overflows the base weights");
}

/* Reads MODULE's A and B, checks them against the linear and the config, merges. */
static int adapter_module(struct model *m, const struct peft_config *cfg, const struct safetensors *st,
                          const char *module) {
    struct linear *lin = model_site_find(m, module);
    if (!lin) return err_set(st->path, "adapts %s, which the model does not have", module);
    char key[160];
    peft_key(key, sizeof key, module, 'A');
    const struct st_tensor *a = safetensors_find(st, key);
    peft_key(key, sizeof key, module, 'B');
    const struct st_tensor *b = safetensors_find(st, key);
    if (!b) return err_set(st->path, "missing tensor %s", key);
    int32_t r;
    double alpha;
    peft_module_rank_alpha(cfg, module, &r, &alpha);
    const int64_t a_shape[2] = {r, lin->in}, b_shape[2] = {lin->out, r};
    if (st_tensor_expect_shape(st, a, 2, a_shape) || st_tensor_expect_shape(st, b, 2, b_shape)) return -1;
    float *A = xmalloc((size_t)(a->numel + b->numel) * sizeof(float)), *B = A + a->numel;
    int rc = st_tensor_to_f32(a, A);
    if (rc == 0) rc = st_tensor_to_f32(b, B);
    if (rc == 0) rc = module_merge(st, lin, module, A, B, r, peft_scale(alpha, r, cfg->use_rslora));
    free(A);
    return rc;
}

int model_merge_adapter(struct model *m, const char *dir) {
    CHECK(m->n_adapters == 0 && m->frozen != NULL);
    struct peft_config cfg;
    struct safetensors st;
    if (peft_adapter_open(dir, &cfg, &st)) return -1;
    struct peft_modules mods;
    int rc = peft_modules_list(&st, &mods);
    for (int32_t i = 0; i < mods.n && rc == 0; i++) rc = adapter_module(m, &cfg, &st, mods.name[i]);
    peft_modules_free(&mods);
    safetensors_close(&st);
    peft_config_free(&cfg);
    return rc;
}
