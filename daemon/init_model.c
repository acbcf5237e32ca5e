/*
 * init_model.c: `lorad init-model`: checks the shape flags and writes a randomly
 * initialised GPT-2 (init_model.h).
 */
#include "init_model.h"

#include "error.h"
#include "hf_config.h"
#include "model.h"

void init_model_defaults(Lorad__InitModelSpec *spec) {
    lorad__init_model_spec__init(spec);
    spec->layers = 4;
    spec->dim = 128;
    spec->heads = 4;
    spec->vocab = 256;
    spec->positions = 256;
    spec->seed = 42;
}

static int spec_check(const Lorad__InitModelSpec *s) {
    if (!s->out[0]) return err_set("--out", "is required");
    if (s->layers < 1 || s->layers > 256) return err_set("--layers", "must be 1..256 (got %d)", s->layers);
    if (s->heads < 1 || s->heads > 256) return err_set("--heads", "must be 1..256 (got %d)", s->heads);
    if (s->dim < 1 || s->dim > 16384 || s->dim % s->heads)
        return err_set("--dim", "must be a multiple of --heads up to 16384 (got %d)", s->dim);
    if (s->vocab < 1 || s->vocab > (1 << 20)) return err_set("--vocab", "must be 1..1048576 (got %d)", s->vocab);
    if (s->positions < 1 || s->positions > (1 << 16))
        return err_set("--positions", "must be 1..65536 (got %d)", s->positions);
    return 0;
}

int init_model_run(const Lorad__InitModelSpec *s) {
    if (spec_check(s)) return -1;
    struct model_config cfg = {.arch = MODEL_ARCH_GPT2, .n_layer = s->layers, .n_head = s->heads,
                               .n_embd = s->dim, .n_inner = 4 * s->dim, .n_positions = s->positions,
                               .vocab_size = s->vocab, .layer_norm_eps = 1e-5f};
    return model_write_random(&cfg, s->seed, s->out);
}
