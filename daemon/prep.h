/*
 * prep.h: `lorad prep`: text and JSONL datasets (storage/dataset.h) to an HDF5 token
 * dataset (storage/tokens.h) with the model's tokenizer: the ids of every example, its
 * loss mask, where each example starts, and what made them (vocabulary, EOS ids, the
 * tokenizer's fingerprint, the sources); optionally a validation split. Or, with
 * --text, one byte-level token per byte of a text file (0..255).
 */
#ifndef LORAD_PREP_H
#define LORAD_PREP_H

#include "command.h"

/* CALL->spec[0]: a PrepSpec. Returns 0, or -1 with an error. */
command_fn prep_run;
/* What prep_run does for SPEC, in this process (train and eval prepare .jsonl and .txt
 * data with it); QUIET: without the progress line and the summary. */
int prep_dataset(const Lorad__PrepSpec *spec, int quiet);

#endif
