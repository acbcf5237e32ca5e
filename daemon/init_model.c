/*
 * init_model.c: `lorad init-model` and `lorad init-tokenizer`: new model directories,
 * and the tokenizer files of byte-level ones (init_model.h).
 */
#include "init_model.h"

#include <stdio.h>

#include "byte_tokenizer.h"
#include "error.h"
#include "hf_config.h"
#include "model.h"

static void tokenizer_said(const char *dir) {
    fprintf(stderr, "lorad: wrote %s/tokenizer.json and tokenizer_config.json: ids 0-252 the bytes, <|im_start|> 253, "
                    "<|im_end|> 254, <|endoftext|> 255, a ChatML chat template\n", dir);
}

int init_model_run(const struct command_call *call) {
    const Lorad__InitModelSpec *s = (const Lorad__InitModelSpec *)call->spec[0];
    if (s->dim % s->heads) return err_set("--dim", "%d is not a multiple of --heads %d", s->dim, s->heads);
    struct model_config cfg = {.arch = MODEL_ARCH_GPT2, .n_layer = s->layers, .n_head = s->heads,
                               .n_embd = s->dim, .n_inner = 4 * s->dim, .n_positions = s->positions,
                               .vocab_size = s->vocab, .layer_norm_eps = 1e-5f};
    if (model_write_random(&cfg, s->seed, s->out)) return -1;
    if (s->vocab != BYTE_TOKENIZER_VOCAB) return 0;
    if (byte_tokenizer_write(s->out, 1)) return -1; /* the model's files were replaced as well */
    tokenizer_said(s->out);
    return 0;
}

int init_tokenizer_run(const struct command_call *call) {
    const Lorad__InitTokenizerSpec *s = (const Lorad__InitTokenizerSpec *)call->spec[0];
    struct model_config cfg;
    if (hf_config_read(&cfg, s->model)) return -1;
    if (cfg.vocab_size != BYTE_TOKENIZER_VOCAB) {
        err_set(s->model, "is not a byte-level model: its config.json has vocab_size %d, not %d", cfg.vocab_size,
                BYTE_TOKENIZER_VOCAB);
        return err_hint("a model of another vocabulary needs its own tokenizer files");
    }
    if (byte_tokenizer_write(s->model, s->overwrite)) return -1;
    tokenizer_said(s->model);
    return 0;
}
