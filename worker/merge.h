/*
 * merge.h: folding a PEFT LoRA adapter into a model's weights, W = W0 + s·B·A, as PEFT's
 * merge_and_unload does (transposed for GPT-2's Conv1D, whose weights are [in, out]),
 * with safe_merge's check that every merged weight is finite. The model must have been
 * loaded with writable weights. Afterwards the model computes base + adapter with no
 * adapter in the loop: what `lorad merge` writes, and what eval and generate run.
 */
#ifndef LORAD_MERGE_H
#define LORAD_MERGE_H

#include "model.h"

/* Merges the adapter in DIR into M. -1 with an error naming the adapter file and the
 * problem (a module M lacks, a rank or shape mismatch, a non-finite result). */
int model_merge_adapter(struct model *m, const char *dir);

#endif
