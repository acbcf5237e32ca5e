/*
 * infer_cmd.h: the commands that use a trained model rather than train one:
 * `lorad eval` (loss, perplexity and token count, under mpirun too), `lorad merge`
 * (base + adapter as one Hugging Face directory) and `lorad generate` (decoding from a
 * byte-level prompt). An --adapter is merged into a private copy of the weights first.
 */
#ifndef LORAD_INFER_CMD_H
#define LORAD_INFER_CMD_H

#include "comm.h"
#include "lorad.pb-c.h"

void eval_defaults(Lorad__EvalSpec *spec);
int eval_cmd(const Lorad__EvalSpec *spec, struct comm *comm);
void merge_defaults(Lorad__MergeSpec *spec);
int merge_cmd(const Lorad__MergeSpec *spec);
void generate_defaults(Lorad__GenerateSpec *spec);
int generate_cmd(const Lorad__GenerateSpec *spec);

#endif
