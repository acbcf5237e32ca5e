/*
 * peft.h: Hugging Face PEFT LoRA adapter directories.
 *
 * A directory holds adapter_config.json and adapter_model.safetensors. Tensor keys are
 * "base_model.model.<module>.lora_A.weight" with shape [r, in] and
 * "base_model.model.<module>.lora_B.weight" with shape [out, r], where <module> is the
 * full module path of the base model (e.g. "transformer.h.0.attn.c_attn").
 * The scale applied to B·A is lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA,
 * where rank_pattern / alpha_pattern may override r and alpha per module.
 */
#ifndef LORAD_PEFT_H
#define LORAD_PEFT_H

#include <stdint.h>

#include "safetensors.h"

struct peft_pattern {
    char *key;   /* a module name or suffix, as PEFT matches it */
    int32_t r;   /* 0 when only alpha is overridden */
    double alpha; /* 0 when only r is overridden */
};

struct peft_config {
    int32_t r;
    double lora_alpha;
    int32_t use_rslora;
    int32_t fan_in_fan_out;
    double lora_dropout;
    char **target_modules;
    int32_t n_targets;
    char *base_model; /* base_model_name_or_path; may be NULL */
    struct peft_pattern *patterns;
    int32_t n_patterns;
};

/* Reads DIR/adapter_config.json. Refuses (error naming the file and the key) anything
 * lorad cannot represent: peft_type other than LORA, use_dora, bias other than "none",
 * target_modules given as a regex string. */
int peft_config_read(struct peft_config *cfg, const char *dir);
/* CFG as the text of an adapter_config.json, with PEFT's keys (peft_type "LORA",
 * task_type "CAUSAL_LM", bias "none", rank_pattern and alpha_pattern); the caller frees.
 * NULL with an error when a string is not valid UTF-8. */
char *peft_config_text(const struct peft_config *cfg);
void peft_config_free(struct peft_config *cfg);
/* Reads DIR/adapter_config.json into CFG and opens DIR/adapter_model.safetensors as ST;
 * on failure releases both and returns -1 with the error. */
int peft_adapter_open(const char *dir, struct peft_config *cfg, struct safetensors *st);
/* Rank and alpha that apply to MODULE (full path), after rank/alpha patterns. */
void peft_module_rank_alpha(const struct peft_config *cfg, const char *module, int32_t *r,
                            double *alpha);
/* Whether KEY names a module or a dotted suffix: not empty, and none of the characters
 * that make PEFT read a pattern key as a regex. */
int peft_key_plain(const char *key);
/* LoRA's scale: ALPHA/R, or ALPHA/sqrt(R) with rsLoRA. */
double peft_scale(double alpha, int32_t r, int rslora);
/* PEFT's matching rule: KEY names MODULE itself or a dotted suffix of it. */
int peft_module_matches(const char *module, const char *key);
/* The scale s of MODULE: alpha/r, or alpha/sqrt(r) with rsLoRA. */
double peft_module_scale(const struct peft_config *cfg, const char *module);
/* Writes the key of MODULE's A ("A") or B ("B") into BUF. */
void peft_key(char *buf, int32_t n, const char *module, char which);
/* The modules an adapter file adapts, in the file order of their lora_A tensors. */
struct peft_modules {
    char (*name)[160];
    int32_t n;
};
/* Lists the modules of ST: every tensor must be a lora_A or a lora_B, each lora_A must
 * have its lora_B and each lora_B its lora_A, and there must be at least one. -1 with an
 * error naming ST's file and the tensor. */
int peft_modules_list(const struct safetensors *st, struct peft_modules *mods);
void peft_modules_free(struct peft_modules *mods);

#endif
