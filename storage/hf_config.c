/*
 * hf_config.c: reads the config.json of a GPT-2 or Llama-family (Llama, Mistral, Qwen2)
 * model directory into struct model_config, refusing architectures, activations and
 * attention or position variants lorad does not implement; writes GPT-2 configs.
 */
#include "hf_config.h"

#include "error.h"
#include "fileio.h"
#include "jsonio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT2Config switches that change the model's math, with the value lorad implements. */
static const struct {
    const char *key;
    int32_t value;
} hf_fixed_flags[] = {
    {"scale_attn_weights", 1},
    {"scale_attn_by_inverse_layer_idx", 0},
    {"tie_word_embeddings", 1},
};

/* The model types lorad implements and the class transformers saves with each. */
static const struct {
    const char *model_type, *class_name;
    enum model_arch arch;
} hf_types[] = {
    {"gpt2", "GPT2LMHeadModel", MODEL_ARCH_GPT2},
    {"llama", "LlamaForCausalLM", MODEL_ARCH_LLAMA},
    {"mistral", "MistralForCausalLM", MODEL_ARCH_LLAMA},
    {"qwen2", "Qwen2ForCausalLM", MODEL_ARCH_LLAMA},
};
#define HF_N_TYPES (sizeof hf_types / sizeof hf_types[0])

static int hf_unsupported_arch(const char *file, const char *arch) {
    err_set(file, "unsupported architecture %s", arch);
    return err_hint("lorad trains GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM");
}

/* model_type (gpt2 when absent) picks the type; architectures, when present, must
 * name its class. *TYPE gets the index into hf_types. */
static int hf_check_arch(const json_t *root, const char *file, size_t *type) {
    const char *model_type = "gpt2";
    if (jsonio_get_string(root, "model_type", file, &model_type) < 0) return -1;
    for (*type = 0; *type < HF_N_TYPES && strcmp(hf_types[*type].model_type, model_type); (*type)++) {
    }
    if (*type == HF_N_TYPES) return hf_unsupported_arch(file, model_type);
    const json_t *archs = json_object_get(root, "architectures");
    if (!archs || json_is_null(archs)) return 0;
    if (!json_is_array(archs)) return err_set(file, "\"architectures\" must be a list of strings");
    size_t i;
    json_t *arch;
    json_array_foreach(archs, i, arch) {
        if (!json_is_string(arch)) return err_set(file, "\"architectures\" must be a list of strings");
        if (strcmp(json_string_value(arch), hf_types[*type].class_name) != 0)
            return hf_unsupported_arch(file, json_string_value(arch));
    }
    return 0;
}

/* The activation must be the tanh GELU, and the switches of hf_fixed_flags at their values. */
static int hf_check_math(const json_t *root, const char *file) {
    const char *act = "gelu_new";
    if (jsonio_get_string(root, "activation_function", file, &act) < 0) return -1;
    if (strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0) {
        err_set(file, "unsupported activation_function \"%s\"", act);
        return err_hint("lorad implements the tanh GELU: gelu_new or gelu_pytorch_tanh");
    }
    for (size_t i = 0; i < sizeof hf_fixed_flags / sizeof hf_fixed_flags[0]; i++) {
        int32_t v = hf_fixed_flags[i].value;
        if (jsonio_get_bool(root, hf_fixed_flags[i].key, file, &v) < 0) return -1;
        if (v != hf_fixed_flags[i].value)
            return err_set(file, "\"%s\": %s is not supported", hf_fixed_flags[i].key, v ? "true" : "false");
    }
    return 0;
}

/* Positive integer KEY into *OUT; FALLBACK when it is absent or null, an error when
 * FALLBACK is 0. */
static int hf_get_size(const json_t *root, const char *file, const char *key, int32_t fallback, int32_t *out) {
    *out = fallback;
    int found = jsonio_get_i32(root, key, file, out);
    if (found < 0) return -1;
    if (!found && fallback == 0) return err_set(file, "missing \"%s\"", key);
    if (*out <= 0) return err_set(file, "\"%s\" must be positive, not %d", key, *out);
    return 0;
}

static int hf_parse_sizes(struct model_config *cfg, const json_t *root, const char *file) {
    if (hf_get_size(root, file, "n_embd", 0, &cfg->n_embd) != 0 ||
        hf_get_size(root, file, "n_head", 0, &cfg->n_head) != 0 ||
        hf_get_size(root, file, "n_layer", 0, &cfg->n_layer) != 0 ||
        hf_get_size(root, file, "n_positions", 0, &cfg->n_positions) != 0 ||
        hf_get_size(root, file, "vocab_size", 0, &cfg->vocab_size) != 0)
        return -1;
    if (cfg->n_embd % cfg->n_head != 0)
        return err_set(file, "n_embd %d is not a multiple of n_head %d", cfg->n_embd, cfg->n_head);
    if (cfg->n_embd > INT32_MAX / 4) return err_set(file, "n_embd %d is too large", cfg->n_embd);
    return hf_get_size(root, file, "n_inner", 4 * cfg->n_embd, &cfg->n_inner);
}

/* The normalisation epsilon KEY, FALLBACK when absent. */
static int hf_parse_eps(struct model_config *cfg, const json_t *root, const char *file, const char *key,
                        double fallback) {
    double eps = fallback;
    if (jsonio_get_number(root, key, file, &eps) < 0) return -1;
    if (!(eps > 0 && eps < 1) || (float)eps == 0) return err_set(file, "\"%s\" must be in (0, 1), not %g", key, eps);
    cfg->layer_norm_eps = (float)eps;
    return 0;
}

static int gpt2_parse(struct model_config *cfg, const json_t *root, const char *file) {
    cfg->arch = MODEL_ARCH_GPT2;
    if (hf_check_math(root, file) || hf_parse_sizes(cfg, root, file) ||
        hf_parse_eps(cfg, root, file, "layer_norm_epsilon", 1e-5))
        return -1;
    cfg->n_kv_head = cfg->n_head;
    cfg->head_dim = cfg->n_embd / cfg->n_head;
    cfg->tied = 1;
    return 0;
}

static int llama_sizes(struct model_config *cfg, const json_t *root, const char *file) {
    if (hf_get_size(root, file, "hidden_size", 0, &cfg->n_embd) || hf_get_size(root, file, "intermediate_size", 0, &cfg->n_inner) ||
        hf_get_size(root, file, "num_hidden_layers", 0, &cfg->n_layer) ||
        hf_get_size(root, file, "num_attention_heads", 0, &cfg->n_head) ||
        hf_get_size(root, file, "max_position_embeddings", 0, &cfg->n_positions) ||
        hf_get_size(root, file, "vocab_size", 0, &cfg->vocab_size) ||
        hf_get_size(root, file, "num_key_value_heads", cfg->n_head, &cfg->n_kv_head) ||
        hf_get_size(root, file, "head_dim", cfg->n_embd / cfg->n_head ? cfg->n_embd / cfg->n_head : 1, &cfg->head_dim))
        return -1;
    if (cfg->n_head % cfg->n_kv_head)
        return err_set(file, "num_attention_heads %d is not a multiple of num_key_value_heads %d", cfg->n_head,
                       cfg->n_kv_head);
    if (cfg->head_dim % 2) return err_set(file, "head_dim %d must be even for rotary embeddings", cfg->head_dim);
    if ((int64_t)cfg->n_head * cfg->head_dim > INT32_MAX / 4 || cfg->n_embd > INT32_MAX / 4 || cfg->n_inner > INT32_MAX / 4)
        return err_set(file, "the layer sizes are too large");
    return 0;
}

/* rope_theta and Llama 3 scaling, from rope_scaling or rope_parameters. */
static int llama_rope(struct model_config *cfg, const json_t *root, const char *file) {
    const json_t *params = json_object_get(root, "rope_parameters");
    const json_t *scaling = json_object_get(root, "rope_scaling");
    if (params && !json_is_null(params) && !json_is_object(params))
        return err_set(file, "\"rope_parameters\" must be an object");
    cfg->rope_theta = 10000.0;
    if (jsonio_get_number(root, "rope_theta", file, &cfg->rope_theta) < 0) return -1;
    if (json_is_object(params)) {
        if (jsonio_get_number(params, "rope_theta", file, &cfg->rope_theta) < 0) return -1;
        if (!scaling || json_is_null(scaling)) scaling = params;
    }
    if (!(cfg->rope_theta > 1)) return err_set(file, "\"rope_theta\" must be above 1, not %g", cfg->rope_theta);
    if (!scaling || json_is_null(scaling)) return 0;
    if (!json_is_object(scaling)) return err_set(file, "\"rope_scaling\" must be an object or null");
    const char *type = "default";
    if (jsonio_get_string(scaling, "rope_type", file, &type) < 0 || jsonio_get_string(scaling, "type", file, &type) < 0)
        return -1;
    if (!strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3")) {
        err_set(file, "unsupported rope scaling \"%s\"", type);
        return err_hint("lorad implements the default rotary embedding and Llama 3's scaling");
    }
    if (jsonio_get_number(scaling, "factor", file, &cfg->rope_factor) != 1 ||
        jsonio_get_number(scaling, "low_freq_factor", file, &cfg->rope_low_freq_factor) != 1 ||
        jsonio_get_number(scaling, "high_freq_factor", file, &cfg->rope_high_freq_factor) != 1 ||
        jsonio_get_i32(scaling, "original_max_position_embeddings", file, &cfg->rope_original_max) != 1)
        return err_set(file, "llama3 rope scaling needs factor, low_freq_factor, high_freq_factor and "
                             "original_max_position_embeddings");
    if (!(cfg->rope_factor >= 1) || !(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor) ||
        !(cfg->rope_low_freq_factor > 0) || cfg->rope_original_max <= 0)
        return err_set(file, "llama3 rope scaling has out-of-range values");
    return 0;
}

static int llama_switches(struct model_config *cfg, const json_t *root, const char *file, const char *type) {
    const char *act = "silu";
    int32_t mlp_bias = 0, tied = 0, bias = !strcmp(type, "qwen2"), sliding = 0;
    if (jsonio_get_string(root, "hidden_act", file, &act) < 0 || jsonio_get_bool(root, "mlp_bias", file, &mlp_bias) < 0 ||
        jsonio_get_bool(root, "tie_word_embeddings", file, &tied) < 0 ||
        jsonio_get_bool(root, "attention_bias", file, &bias) < 0)
        return -1;
    if (strcmp(act, "silu")) return err_set(file, "unsupported hidden_act \"%s\" (lorad implements silu)", act);
    if (mlp_bias) return err_set(file, "\"mlp_bias\": true is not supported");
    cfg->tied = tied;
    cfg->qkv_bias = bias;
    cfg->o_bias = bias && strcmp(type, "qwen2") != 0; /* Qwen2 biases q, k and v only */
    int32_t use_sliding = strcmp(type, "qwen2") != 0; /* Qwen2 enables its window explicitly */
    if (jsonio_get_bool(root, "use_sliding_window", file, &use_sliding) < 0) return -1;
    if (use_sliding && jsonio_get_i32(root, "sliding_window", file, &sliding) < 0) return -1;
    cfg->sliding_window = use_sliding && sliding > 0 ? sliding : 0;
    return 0;
}

static int llama_parse(struct model_config *cfg, const json_t *root, const char *file, const char *type) {
    cfg->arch = MODEL_ARCH_LLAMA;
    if (llama_sizes(cfg, root, file) || hf_parse_eps(cfg, root, file, "rms_norm_eps", 1e-6) ||
        llama_rope(cfg, root, file) || llama_switches(cfg, root, file, type))
        return -1;
    return 0;
}

int hf_config_read(struct model_config *cfg, const char *dir) {
    char *file = path_join(dir, "config.json");
    json_t *root = jsonio_read(file);
    memset(cfg, 0, sizeof *cfg);
    size_t type;
    int rc = -1;
    if (root && hf_check_arch(root, file, &type) == 0)
        rc = hf_types[type].arch == MODEL_ARCH_GPT2 ? gpt2_parse(cfg, root, file)
                                                     : llama_parse(cfg, root, file, hf_types[type].model_type);
    json_decref(root);
    free(file);
    return rc;
}

/* The double nearest the shortest decimal that reads back as F, so that 1e-5f is
 * written as 1e-05 rather than 9.99999974737875e-06. */
static double float_as_decimal(float f) {
    char buf[32];
    for (int digits = 1;; digits++) { /* 9 digits always suffice for a float */
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        if (digits == 9 || strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
}

char *hf_config_text(const struct model_config *cfg) {
    CHECK(cfg->arch == MODEL_ARCH_GPT2);
    json_t *root = json_pack("{s:s, s:[s], s:f, s:s, s:i, s:i, s:i, s:i, s:i, s:b, s:i}",
                             "activation_function", "gelu_new", "architectures", "GPT2LMHeadModel",
                             "layer_norm_epsilon", float_as_decimal(cfg->layer_norm_eps), "model_type", "gpt2",
                             "n_embd", cfg->n_embd, "n_head", cfg->n_head, "n_inner", cfg->n_inner,
                             "n_layer", cfg->n_layer, "n_positions", cfg->n_positions,
                             "tie_word_embeddings", 1, "vocab_size", cfg->vocab_size);
    CHECK(root);
    char *text = jsonio_text(root);
    json_decref(root);
    return text;
}

int hf_config_write(const struct model_config *cfg, const char *dir) {
    char *file = path_join(dir, "config.json");
    char *text = hf_config_text(cfg);
    int rc = file_write_atomic(file, text, strlen(text));
    free(text);
    free(file);
    return rc;
}
