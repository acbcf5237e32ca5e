/*
 * adapter.h: a model's LoRA adapters to and from a Hugging Face PEFT directory.
 *
 * A module with a whole-output adapter maps one-to-one onto PEFT's lora_A / lora_B.
 * A fused c_attn with q/k/v slice adapters exports as one c_attn adapter of rank n·r:
 * A stacks the slices' A in q, k, v order, B places each slice's B in its own rows and
 * columns (zeros elsewhere), and rank_pattern / alpha_pattern keep the scale, so PEFT
 * computes exactly the same function. Import is the inverse and refuses what the
 * model's adapters cannot represent.
 */
#ifndef LORAD_ADAPTER_H
#define LORAD_ADAPTER_H

#include "model.h"

/* Writes DIR/adapter_config.json and DIR/adapter_model.safetensors. TARGETS are the
 * user's targets; BASE names the base model; DROPOUT is recorded in the config. */
int adapter_export(const struct model *m, const char *dir, const char *const *targets, int32_t n_targets,
                   const char *base, float dropout);
/* Loads A and B of every adapter of M from the PEFT directory DIR. */
int adapter_import(struct model *m, const char *dir);

#endif
