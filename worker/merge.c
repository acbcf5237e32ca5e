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

/* The linear whose module path is MODULE (GPT-2 paths also without "transformer."). */
static struct linear *site_find(struct model *m, const char *module) {
    static const char prefix[] = "transformer.";
    for (int32_t s = 0; s < m->n_sites; s++) {
        char path[96];
        model_site_path(m, s, path, sizeof path);
        const char *bare = strncmp(path, prefix, sizeof prefix - 1) ? path : path + sizeof prefix - 1;
        if (!strcmp(path, module) || !strcmp(bare, module)) return m->sites[s];
    }
    return NULL;
}

/* The module of a key "base_model.model.<module>.lora_<WHICH>.weight" into MODULE; 0
 * when KEY is no such key. */
static int key_module(const char *key, char which, char *module, size_t n) {
    const char *pre = "base_model.model.";
    char post[32];
    snprintf(post, sizeof post, ".lora_%c.weight", which);
    size_t k = strlen(key), lp = strlen(pre), ls = strlen(post);
    if (k <= lp + ls || strncmp(key, pre, lp) || strcmp(key + k - ls, post)) return 0;
    snprintf(module, n, "%.*s", (int)(k - lp - ls), key + lp);
    return 1;
}

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
    struct linear *lin = site_find(m, module);
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
    int rc = 0, merged = 0;
    for (int32_t i = 0; i < st.n_tensors && rc == 0; i++) {
        char module[160];
        const char *name = st.tensors[i].name;
        char a_key[160];
        if (key_module(name, 'A', module, sizeof module)) {
            rc = adapter_module(m, &cfg, &st, module);
            merged++;
        } else if (!key_module(name, 'B', module, sizeof module)) {
            rc = err_set(st.path, "tensor %s is not a LoRA A or B", name);
        } else if (peft_key(a_key, sizeof a_key, module, 'A'), !safetensors_find(&st, a_key)) {
            rc = err_set(st.path, "has %s but no lora_A for %s", name, module);
        }
    }
    if (rc == 0 && merged == 0) rc = err_set(st.path, "holds no lora_A tensors");
    safetensors_close(&st);
    peft_config_free(&cfg);
    return rc;
}
