/*
 * init_model.c: `lorad init-model`: writes a randomly initialised GPT-2 of the shape
 * its flags give (init_model.h).
 */
#include "init_model.h"

#include "error.h"
#include "hf_config.h"
#include "model.h"

int init_model_run(const struct command_call *call) {
    const Lorad__InitModelSpec *s = (const Lorad__InitModelSpec *)call->spec[0];
    if (s->dim % s->heads) return err_set("--dim", "%d is not a multiple of --heads %d", s->dim, s->heads);
    struct model_config cfg = {.arch = MODEL_ARCH_GPT2, .n_layer = s->layers, .n_head = s->heads,
                               .n_embd = s->dim, .n_inner = 4 * s->dim, .n_positions = s->positions,
                               .vocab_size = s->vocab, .layer_norm_eps = 1e-5f};
    return model_write_random(&cfg, s->seed, s->out);
}
