/*
 * infer_cmd.h: the commands that use a trained model rather than train one:
 * `lorad eval` (loss, perplexity and token count, under mpirun too) and `lorad merge`
 * (base + adapter as one Hugging Face directory); `lorad generate` is generate_cmd.h.
 * One --adapter is merged into a private copy of the weights first; eval's several
 * adapters stay unmerged, each an adapter set of the model (linear.h) with its own rows.
 */
#ifndef LORAD_INFER_CMD_H
#define LORAD_INFER_CMD_H

#include "command.h"
#include "model.h"

/* Each takes its spec (EvalSpec, MergeSpec) in CALL->spec[0]. Returns 0, or -1 with an
 * error. */
command_fn eval_cmd;
command_fn merge_cmd;

/* Loads MODEL_DIR into M for inference with B sequences of T tokens (per adapter), with
 * N ADAPTERS: with MERGE one, merged into a private copy of the weights; else each an
 * adapter set of M, unmerged, in their order. ALL_LOGITS: M keeps every row's logits
 * (eval --logits); otherwise the head runs a chunk of rows at a time. -1 with an error. */
int infer_model_open(struct model *m, const char *model_dir, char *const *adapters, int32_t n, int merge, int32_t B,
                     int32_t T, int all_logits);

#endif
