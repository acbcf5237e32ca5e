/*
 * analyze_cmd.h: `lorad analyze`: for every module of a PEFT adapter, the spectrum of its
 * update ΔW = s·B·A, with --against the subspace similarity of its factors to a second
 * adapter's, and with --model how ΔW relates to the base weight W (worker/analysis.h);
 * as tables on stdout (or JSON with --json), and with --out as analysis.json and PNG
 * plots: spectrum/MODULE.png (bars of the singular values) and, with --against,
 * phi/MODULE.png (heatmaps of φ for A and B, as the paper's Figure 3).
 */
#ifndef LORAD_ANALYZE_CMD_H
#define LORAD_ANALYZE_CMD_H

#include "command.h"

/* CALL->spec[0]: an AnalyzeSpec. Returns 0, or -1 with an error. */
command_fn analyze_cmd;

#endif
