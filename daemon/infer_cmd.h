/*
 * infer_cmd.h: the commands that use a trained model rather than train one:
 * `lorad eval` (loss, perplexity and token count, under mpirun too) and `lorad merge`
 * (base + adapter as one Hugging Face directory); `lorad generate` is generate_cmd.h.
 * An --adapter is merged into a private copy of the weights first.
 */
#ifndef LORAD_INFER_CMD_H
#define LORAD_INFER_CMD_H

#include "command.h"
#include "model.h"

/* Each takes its spec (EvalSpec, MergeSpec) in CALL->spec[0]. Returns 0, or -1 with an
 * error. */
command_fn eval_cmd;
command_fn merge_cmd;

/* Loads MODEL_DIR into M for inference with B sequences of T tokens, merging ADAPTER
 * ("" for none) into a private copy of the weights. -1 with an error. */
int infer_model_open(struct model *m, const char *model_dir, const char *adapter, int32_t B, int32_t T);

#endif
