/*
 * infer_cmd.h: the commands that use a trained model rather than train one:
 * `lorad eval` (loss, perplexity and token count, under mpirun too), `lorad merge`
 * (base + adapter as one Hugging Face directory) and `lorad generate` (decoding from a
 * byte-level prompt). An --adapter is merged into a private copy of the weights first.
 */
#ifndef LORAD_INFER_CMD_H
#define LORAD_INFER_CMD_H

#include "command.h"

/* Each takes its spec (EvalSpec, MergeSpec, GenerateSpec) in CALL->spec[0]. Returns 0,
 * or -1 with an error. */
command_fn eval_cmd;
command_fn merge_cmd;
command_fn generate_cmd;

#endif
