/*
 * hf_config.h: the Hugging Face config.json of a model directory, reduced to the
 * numbers lorad's models need. Unknown keys are ignored; a missing required key, a
 * value of the wrong type or an unsupported architecture or activation is a user error
 * naming config.json and the key.
 */
#ifndef LORAD_HF_CONFIG_H
#define LORAD_HF_CONFIG_H

#include <stdint.h>

enum model_arch {
    MODEL_ARCH_GPT2,  /* GPT2LMHeadModel */
    MODEL_ARCH_LLAMA, /* LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM */
};

struct model_config {
    enum model_arch arch;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_kv_head;   /* key/value heads (grouped-query attention); n_head for GPT-2 */
    int32_t head_dim;    /* n_embd / n_head unless config.json says */
    int32_t n_embd;      /* C */
    int32_t n_inner;     /* MLP hidden width; 4*C when GPT-2's config.json has null */
    int32_t n_positions; /* maximum sequence length */
    int32_t vocab_size;
    float layer_norm_eps; /* layer_norm_epsilon (GPT-2) or rms_norm_eps (Llama) */
    int32_t tied;         /* the LM head is the token embedding */
    int32_t qkv_bias;     /* q, k and v projections have biases (Qwen2, attention_bias) */
    int32_t o_bias;       /* so does o_proj (Llama and Mistral with attention_bias) */
    int32_t sliding_window; /* Mistral's attention window; 0: none */
    double rope_theta;
    double rope_factor;   /* Llama 3 rope scaling; 0: none */
    double rope_low_freq_factor, rope_high_freq_factor;
    int32_t rope_original_max;
};

/* Reads DIR/config.json. Returns 0, or -1 with an error naming the file. */
int hf_config_read(struct model_config *cfg, const char *dir);
/* CFG as the text of a GPT-2 config.json; the caller frees. */
char *hf_config_text(const struct model_config *cfg);
/* Writes CFG as a GPT-2 config.json into DIR. */
int hf_config_write(const struct model_config *cfg, const char *dir);

#endif
