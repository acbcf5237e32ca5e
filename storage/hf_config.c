/*
 * hf_config.c: reads and writes the config.json of a GPT-2 model directory (the fields
 * of struct model_config), refusing architectures, activations and attention variants
 * that lorad's GPT-2 does not implement.
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

static int hf_unsupported_arch(const char *file, const char *arch) {
    err_set(file, "unsupported architecture %s", arch);
    return err_hint("lorad trains GPT-2 models: GPT2LMHeadModel, model_type \"gpt2\"");
}

/* model_type and architectures, when present, must name GPT-2. */
static int hf_check_arch(const json_t *root, const char *file) {
    const char *model_type = "gpt2";
    if (jsonio_get_string(root, "model_type", file, &model_type) < 0) return -1;
    if (strcmp(model_type, "gpt2") != 0) return hf_unsupported_arch(file, model_type);
    const json_t *archs = json_object_get(root, "architectures");
    if (!archs || json_is_null(archs)) return 0;
    if (!json_is_array(archs)) return err_set(file, "\"architectures\" must be a list of strings");
    size_t i;
    json_t *arch;
    json_array_foreach(archs, i, arch) {
        if (!json_is_string(arch)) return err_set(file, "\"architectures\" must be a list of strings");
        if (strcmp(json_string_value(arch), "GPT2LMHeadModel") != 0)
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

static int hf_parse_eps(struct model_config *cfg, const json_t *root, const char *file) {
    double eps = 1e-5;
    if (jsonio_get_number(root, "layer_norm_epsilon", file, &eps) < 0) return -1;
    if (!(eps > 0 && eps < 1) || (float)eps == 0)
        return err_set(file, "\"layer_norm_epsilon\" must be in (0, 1), not %g", eps);
    cfg->layer_norm_eps = (float)eps;
    return 0;
}

int hf_config_read(struct model_config *cfg, const char *dir) {
    char *file = path_join(dir, "config.json");
    json_t *root = jsonio_read(file);
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = MODEL_ARCH_GPT2;
    int rc = -1;
    if (root && hf_check_arch(root, file) == 0 && hf_check_math(root, file) == 0 &&
        hf_parse_sizes(cfg, root, file) == 0 && hf_parse_eps(cfg, root, file) == 0)
        rc = 0;
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
