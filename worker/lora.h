/*
 * lora.h: which linear modules get adapters, and their initial values.
 *
 * Targets use PEFT's names and matching: a target matches a module path when it equals
 * it or is a suffix after a dot ("c_attn", "attn.c_proj", "h.0.mlp.c_fc"). "all-linear"
 * matches every linear module but the LM head. "q", "k" and "v" are slices of a fused
 * qkv module (GPT-2's c_attn), each its own adapter, as loralib's MergedLinear.
 */
#ifndef LORAD_LORA_H
#define LORAD_LORA_H

#include <stdint.h>

#include "linear.h"
#include "peft.h"

/* One adapter set: which modules it adapts and how, PEFT's target_modules, r,
 * lora_alpha, use_rslora and rank/alpha patterns, and its initial values. */
struct lora_spec {
    const char *const *targets; /* none: the family's default */
    int32_t n_targets;
    int32_t rank;
    float alpha;
    int rslora;
    const struct peft_pattern *patterns; /* per-module rank and alpha, PEFT's rules */
    int32_t n_patterns;
    int init_gaussian;
    uint64_t seed;
    const char *source; /* what errors about it name: NULL for "--targets", or the adapter's directory */
};

/* Bits of a match: the whole module, or the q/k/v slices of a fused one. */
enum lora_match {
    LORA_MATCH_NONE = 0,
    LORA_MATCH_Q = 1,
    LORA_MATCH_K = 2,
    LORA_MATCH_V = 4,
    LORA_MATCH_WHOLE = 8,
};

/* Which adapters MODULE (a full path) gets. FUSED_QKV says whether the module is a
 * fused q/k/v projection, where the q, k, v targets apply. HITS (n_targets) counts the
 * modules each target matched, so the caller can refuse targets that match nothing. */
int lora_match(const char *const *targets, int32_t n_targets, const char *module, int fused_qkv,
               int32_t *hits);

/* Fills an adapter's A with PEFT's default Kaiming-uniform (bound 1/sqrt(in)), or with
 * N(0, (1/r)^2) when GAUSSIAN, from the counter RNG keyed by SEED and the adapter id;
 * B = 0. */
void lora_init(struct lora_adapter *ad, int gaussian, uint64_t seed);

#endif
