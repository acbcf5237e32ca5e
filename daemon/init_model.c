/*
 * init_model.c: GPT-2's initialisation (weights N(0, 0.02), residual projections
 * N(0, 0.02/sqrt(2L)), biases 0, layernorms 1 and 0) written as a model directory.
 */
#include "init_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "fileio.h"
#include "hf_config.h"
#include "rng.h"
#include "safetensors.h"

void init_model_defaults(Lorad__InitModelSpec *spec) {
    lorad__init_model_spec__init(spec);
    spec->layers = 4;
    spec->dim = 128;
    spec->heads = 4;
    spec->vocab = 256;
    spec->positions = 256;
    spec->seed = 42;
}

struct init_plan {
    struct st_write_entry e[4 + 12 * 64];
    char names[4 + 12 * 64][48];
    int n;
    uint64_t seed;
};

/* Adds tensor NAME of shape (d0[,d1]) filled with N(0, std), or CONST when std is 0. */
static void tensor_add(struct init_plan *p, const char *name, int64_t d0, int64_t d1, float std, float value) {
    int64_t numel = d0 * (d1 ? d1 : 1);
    float *x = xmalloc((size_t)numel * sizeof *x);
    uint64_t key = rng_key(RNG_STREAM_INIT, p->seed, (uint64_t)p->n, 1);
    for (int64_t i = 0; i < numel; i++) x[i] = std > 0 ? std * rng_normal(key, (uint64_t)i) : value;
    snprintf(p->names[p->n], sizeof p->names[0], "%s", name);
    p->e[p->n] = (struct st_write_entry){.name = p->names[p->n], .data = x, .ndim = d1 ? 2 : 1,
                                         .shape = {d0, d1}, .dtype = ST_DTYPE_F32};
    p->n++;
}

static void layer_add(struct init_plan *p, int l, int64_t C, float proj_std) {
    char name[48];
#define LAYER(suffix) (snprintf(name, sizeof name, "transformer.h.%d.%s", l, suffix), name)
    tensor_add(p, LAYER("ln_1.weight"), C, 0, 0, 1.0f);
    tensor_add(p, LAYER("ln_1.bias"), C, 0, 0, 0.0f);
    tensor_add(p, LAYER("attn.c_attn.weight"), C, 3 * C, 0.02f, 0);
    tensor_add(p, LAYER("attn.c_attn.bias"), 3 * C, 0, 0, 0.0f);
    tensor_add(p, LAYER("attn.c_proj.weight"), C, C, proj_std, 0);
    tensor_add(p, LAYER("attn.c_proj.bias"), C, 0, 0, 0.0f);
    tensor_add(p, LAYER("ln_2.weight"), C, 0, 0, 1.0f);
    tensor_add(p, LAYER("ln_2.bias"), C, 0, 0, 0.0f);
    tensor_add(p, LAYER("mlp.c_fc.weight"), C, 4 * C, 0.02f, 0);
    tensor_add(p, LAYER("mlp.c_fc.bias"), 4 * C, 0, 0, 0.0f);
    tensor_add(p, LAYER("mlp.c_proj.weight"), 4 * C, C, proj_std, 0);
    tensor_add(p, LAYER("mlp.c_proj.bias"), C, 0, 0, 0.0f);
#undef LAYER
}

static int spec_check(const Lorad__InitModelSpec *s) {
    if (!s->out[0]) return err_set("--out", "is required");
    if (s->layers < 1 || s->layers > 64) return err_set("--layers", "must be 1..64 (got %d)", s->layers);
    if (s->heads < 1) return err_set("--heads", "must be at least 1 (got %d)", s->heads);
    if (s->dim < 1 || s->dim % s->heads) return err_set("--dim", "must be a positive multiple of --heads (got %d)", s->dim);
    if (s->vocab < 1) return err_set("--vocab", "must be at least 1 (got %d)", s->vocab);
    if (s->positions < 1) return err_set("--positions", "must be at least 1 (got %d)", s->positions);
    return 0;
}

int init_model_run(const Lorad__InitModelSpec *s) {
    if (spec_check(s)) return -1;
    struct model_config cfg = {.arch = MODEL_ARCH_GPT2, .n_layer = s->layers, .n_head = s->heads,
                               .n_embd = s->dim, .n_inner = 4 * s->dim, .n_positions = s->positions,
                               .vocab_size = s->vocab, .layer_norm_eps = 1e-5f};
    struct init_plan *p = xcalloc(1, sizeof *p);
    p->seed = s->seed;
    const int64_t C = s->dim;
    tensor_add(p, "transformer.wte.weight", s->vocab, C, 0.02f, 0);
    tensor_add(p, "transformer.wpe.weight", s->positions, C, 0.01f, 0);
    for (int l = 0; l < s->layers; l++) layer_add(p, l, C, 0.02f / sqrtf(2.0f * s->layers));
    tensor_add(p, "transformer.ln_f.weight", C, 0, 0, 1.0f);
    tensor_add(p, "transformer.ln_f.bias", C, 0, 0, 0.0f);
    int rc = dir_make(s->out);
    if (rc == 0) rc = hf_config_write(&cfg, s->out);
    char *path = path_join(s->out, "model.safetensors");
    if (rc == 0) rc = safetensors_write(path, p->e, p->n, NULL, 0);
    free(path);
    for (int i = 0; i < p->n; i++) free((void *)p->e[i].data);
    free(p);
    return rc;
}
