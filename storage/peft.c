/*
 * peft.c: reads and writes the adapter_config.json of a PEFT LoRA adapter directory,
 * refusing what lorad cannot represent, resolves each module's rank and alpha through
 * rank_pattern / alpha_pattern as PEFT does, and names the adapter tensors.
 */
#include "peft.h"

#include "error.h"
#include "fileio.h"
#include "jsonio.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PEFT options that change what an adapter means; each must be absent, null, false or empty. */
static const struct {
    const char *key;
    const char *problem;
} peft_unsupported[] = {
    {"use_dora", "DoRA adapters are not supported"},
    {"lora_bias", "LoRA bias terms (lora_bias) are not supported"},
    {"modules_to_save", "modules_to_save is not supported: lorad trains LoRA adapters only"},
    {"layers_to_transform", "layers_to_transform is not supported"},
    {"exclude_modules", "exclude_modules is not supported"},
    {"layer_replication", "layer_replication is not supported"},
};

int peft_key_plain(const char *key) { return key[0] && !strpbrk(key, "*+?()[]{}|^$\\"); }

static int json_is_set(const json_t *v) {
    if (!v || json_is_null(v) || json_is_false(v)) return 0;
    if (json_is_array(v)) return json_array_size(v) > 0;
    if (json_is_object(v)) return json_object_size(v) > 0;
    return 1;
}

/* peft_type must be LORA, bias "none", and no option of peft_unsupported set. */
static int peft_check_kind(const json_t *root, const char *file) {
    const char *type = NULL, *bias = "none";
    if (jsonio_get_string(root, "peft_type", file, &type) < 0) return -1;
    if (!type) return err_set(file, "missing \"peft_type\"");
    if (strcmp(type, "LORA") != 0) {
        err_set(file, "peft_type \"%s\" is not supported", type);
        return err_hint("lorad reads LoRA adapters, peft_type \"LORA\"");
    }
    if (jsonio_get_string(root, "bias", file, &bias) < 0) return -1;
    if (strcmp(bias, "none") != 0) return err_set(file, "bias \"%s\" is not supported, only \"none\"", bias);
    for (size_t i = 0; i < sizeof peft_unsupported / sizeof peft_unsupported[0]; i++)
        if (json_is_set(json_object_get(root, peft_unsupported[i].key))) return err_set(file, "%s", peft_unsupported[i].problem);
    return 0;
}

/* r, lora_alpha, use_rslora, fan_in_fan_out and lora_dropout, with PEFT's defaults. */
static int peft_parse_numbers(struct peft_config *cfg, const json_t *root, const char *file) {
    cfg->r = 8;
    cfg->lora_alpha = 8;
    if (jsonio_get_i32(root, "r", file, &cfg->r) < 0 || jsonio_get_number(root, "lora_alpha", file, &cfg->lora_alpha) < 0 ||
        jsonio_get_bool(root, "use_rslora", file, &cfg->use_rslora) < 0 ||
        jsonio_get_bool(root, "fan_in_fan_out", file, &cfg->fan_in_fan_out) < 0 ||
        jsonio_get_number(root, "lora_dropout", file, &cfg->lora_dropout) < 0)
        return -1;
    if (cfg->r <= 0) return err_set(file, "\"r\" must be positive, not %d", cfg->r);
    if (!(cfg->lora_dropout >= 0 && cfg->lora_dropout < 1))
        return err_set(file, "\"lora_dropout\" must be in [0, 1), not %g", cfg->lora_dropout);
    return 0;
}

static int peft_parse_targets(struct peft_config *cfg, const json_t *root, const char *file) {
    const json_t *list = json_object_get(root, "target_modules");
    if (json_is_string(list)) {
        err_set(file, "target_modules is the string \"%s\", which PEFT treats as a regex", json_string_value(list));
        return err_hint("list the module names instead, e.g. [\"c_attn\", \"c_proj\"]");
    }
    if (!json_is_array(list) || json_array_size(list) == 0)
        return err_set(file, "\"target_modules\" must be a non-empty list of module names");
    cfg->target_modules = xcalloc(json_array_size(list), sizeof *cfg->target_modules);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        const char *name = json_string_value(v);
        if (!name || !name[0]) return err_set(file, "target_modules[%zu] is not a module name", i);
        cfg->target_modules[cfg->n_targets++] = xstrdup(name);
    }
    return 0;
}

/* Appends the entries of FIELD (rank_pattern when IS_RANK, else alpha_pattern) to
 * cfg->patterns in their dict order, which decides PEFT's first match. */
static int peft_parse_patterns(struct peft_config *cfg, const json_t *root, const char *file, const char *field,
                               int is_rank) {
    json_t *obj = json_object_get(root, field);
    if (!obj || json_is_null(obj)) return 0;
    if (!json_is_object(obj)) return err_set(file, "\"%s\" must be an object", field);
    size_t n = (size_t)cfg->n_patterns + json_object_size(obj);
    cfg->patterns = xrealloc(cfg->patterns, n * sizeof *cfg->patterns);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!peft_key_plain(key)) {
            err_set(file, "%s key \"%s\" is a regex", field, key);
            return err_hint("lorad matches module names and dotted suffixes only");
        }
        struct peft_pattern p = {0};
        if (is_rank && (jsonio_get_i32(obj, key, file, &p.r) != 1 || p.r <= 0))
            return err_set(file, "%s[\"%s\"] must be a positive integer", field, key);
        if (!is_rank && (jsonio_get_number(obj, key, file, &p.alpha) != 1 || p.alpha == 0))
            return err_set(file, "%s[\"%s\"] must be a nonzero number", field, key);
        p.key = xstrdup(key);
        cfg->patterns[cfg->n_patterns++] = p;
    }
    return 0;
}

int peft_config_read(struct peft_config *cfg, const char *dir) {
    char *file = path_join(dir, "adapter_config.json");
    json_t *root = jsonio_read(file);
    const char *base = NULL;
    memset(cfg, 0, sizeof *cfg);
    int rc = -1;
    if (root && peft_check_kind(root, file) == 0 && peft_parse_numbers(cfg, root, file) == 0 &&
        peft_parse_targets(cfg, root, file) == 0 && peft_parse_patterns(cfg, root, file, "rank_pattern", 1) == 0 &&
        peft_parse_patterns(cfg, root, file, "alpha_pattern", 0) == 0 &&
        jsonio_get_string(root, "base_model_name_or_path", file, &base) >= 0)
        rc = 0;
    if (base) cfg->base_model = xstrdup(base);
    if (rc != 0) peft_config_free(cfg);
    json_decref(root);
    free(file);
    return rc;
}

/* An alpha as PEFT writes it: an integer when integral, else a real. */
static json_t *peft_alpha_json(double alpha) {
    json_t *v = alpha == floor(alpha) && fabs(alpha) < 0x1p53 ? json_integer((json_int_t)alpha) : json_real(alpha);
    CHECK(v);
    return v;
}

/* rank_pattern (IS_RANK) or alpha_pattern from cfg->patterns; the first entry of a key
 * wins. Sets *BAD when a key is not valid UTF-8. */
static json_t *peft_patterns_json(const struct peft_config *cfg, int is_rank, int *bad) {
    json_t *obj = json_object();
    CHECK(obj);
    for (int32_t i = 0; i < cfg->n_patterns; i++) {
        const struct peft_pattern *p = &cfg->patterns[i];
        if ((is_rank ? p->r == 0 : p->alpha == 0) || json_object_get(obj, p->key)) continue;
        *bad |= json_object_set_new(obj, p->key, is_rank ? json_integer(p->r) : peft_alpha_json(p->alpha)) != 0;
    }
    return obj;
}

/* CFG as PEFT's adapter_config.json, keys sorted as PEFT writes them; NULL when a
 * string is not valid UTF-8. */
static json_t *peft_config_json(const struct peft_config *cfg) {
    int bad = 0;
    json_t *targets = json_array();
    CHECK(targets);
    for (int32_t i = 0; i < cfg->n_targets; i++)
        bad |= json_array_append_new(targets, json_string(cfg->target_modules[i])) != 0;
    json_t *root = json_pack(
        "{s:o, s:s?, s:s, s:b, s:b, s:b, s:o, s:f, s:s, s:i, s:o, s:o, s:s, s:b, s:b}", "alpha_pattern",
        peft_patterns_json(cfg, 0, &bad), "base_model_name_or_path", cfg->base_model, "bias", "none",
        "fan_in_fan_out", cfg->fan_in_fan_out, "inference_mode", 1, "init_lora_weights", 1, "lora_alpha",
        peft_alpha_json(cfg->lora_alpha), "lora_dropout", cfg->lora_dropout, "peft_type", "LORA", "r", cfg->r,
        "rank_pattern", peft_patterns_json(cfg, 1, &bad), "target_modules", targets, "task_type", "CAUSAL_LM",
        "use_dora", 0, "use_rslora", cfg->use_rslora);
    if (root && !bad) return root;
    json_decref(root);
    return NULL;
}

char *peft_config_text(const struct peft_config *cfg) {
    json_t *root = peft_config_json(cfg);
    if (!root) {
        err_set("adapter_config.json", "base_model_name_or_path or a module name is not valid UTF-8");
        return NULL;
    }
    char *text = jsonio_text(root);
    json_decref(root);
    return text;
}

int peft_adapter_open(const char *dir, struct peft_config *cfg, struct safetensors *st) {
    memset(st, 0, sizeof *st);
    if (peft_config_read(cfg, dir)) return -1;
    char *path = path_join(dir, "adapter_model.safetensors");
    int rc = safetensors_open(st, path);
    free(path);
    if (rc) peft_config_free(cfg);
    return rc;
}

void peft_config_free(struct peft_config *cfg) {
    for (int32_t i = 0; i < cfg->n_targets; i++) free(cfg->target_modules[i]);
    for (int32_t i = 0; i < cfg->n_patterns; i++) free(cfg->patterns[i].key);
    free(cfg->target_modules);
    free(cfg->patterns);
    free(cfg->base_model);
    memset(cfg, 0, sizeof *cfg);
}

int peft_module_matches(const char *module, const char *key) {
    size_t m = strlen(module), k = strlen(key);
    if (k > m || strcmp(module + m - k, key) != 0) return 0;
    return k == m || module[m - k - 1] == '.';
}

/* The first pattern matching MODULE that overrides r (IS_RANK) or alpha, or NULL. */
static const struct peft_pattern *peft_pattern_find(const struct peft_config *cfg, const char *module, int is_rank) {
    for (int32_t i = 0; i < cfg->n_patterns; i++) {
        const struct peft_pattern *p = &cfg->patterns[i];
        if ((is_rank ? p->r != 0 : p->alpha != 0) && peft_module_matches(module, p->key)) return p;
    }
    return NULL;
}

void peft_module_rank_alpha(const struct peft_config *cfg, const char *module, int32_t *r, double *alpha) {
    const struct peft_pattern *pr = peft_pattern_find(cfg, module, 1), *pa = peft_pattern_find(cfg, module, 0);
    *r = pr ? pr->r : cfg->r;
    *alpha = pa ? pa->alpha : cfg->lora_alpha;
}

double peft_module_scale(const struct peft_config *cfg, const char *module) {
    int32_t r;
    double alpha;
    peft_module_rank_alpha(cfg, module, &r, &alpha);
    return peft_scale(alpha, r, cfg->use_rslora);
}

double peft_scale(double alpha, int32_t r, int rslora) { return rslora ? alpha / sqrt((double)r) : alpha / r; }

void peft_key(char *buf, int32_t n, const char *module, char which) {
    CHECK(which == 'A' || which == 'B');
    int k = snprintf(buf, (size_t)n, "base_model.model.%s.lora_%c.weight", module, which);
    CHECK(k >= 0 && k < n);
}

/* The module of KEY "base_model.model.<module>.lora_<WHICH>.weight" into MODULE (N
 * bytes); 0 when KEY is no such key. */
static int peft_key_module(const char *key, char which, char *module, size_t n) {
    const char *pre = "base_model.model.";
    char post[32];
    snprintf(post, sizeof post, ".lora_%c.weight", which);
    size_t k = strlen(key), lp = strlen(pre), ls = strlen(post);
    if (k <= lp + ls || strncmp(key, pre, lp) || strcmp(key + k - ls, post)) return 0;
    snprintf(module, n, "%.*s", (int)(k - lp - ls), key + lp);
    return 1;
}

int peft_modules_list(const struct safetensors *st, struct peft_modules *mods) {
    mods->name = xcalloc((size_t)st->n_tensors + 1, sizeof *mods->name);
    mods->n = 0;
    int rc = 0;
    for (int32_t i = 0; i < st->n_tensors && rc == 0; i++) {
        const char *name = st->tensors[i].name;
        char module[160], other[160];
        if (strlen(name) >= sizeof other) { /* so that the module's other key fits too */
            rc = err_set(st->path, "tensor name %.60s... is longer than %zu bytes", name, sizeof other - 1);
        } else if (peft_key_module(name, 'A', module, sizeof module)) {
            peft_key(other, sizeof other, module, 'B');
            if (!safetensors_find(st, other)) rc = err_set(st->path, "missing tensor %s", other);
            else snprintf(mods->name[mods->n++], sizeof mods->name[0], "%s", module);
        } else if (!peft_key_module(name, 'B', module, sizeof module)) {
            rc = err_set(st->path, "tensor %s is not a LoRA A or B", name);
        } else if (peft_key(other, sizeof other, module, 'A'), !safetensors_find(st, other)) {
            rc = err_set(st->path, "has %s but no lora_A for %s", name, module);
        }
    }
    if (rc == 0 && mods->n == 0) rc = err_set(st->path, "holds no lora_A tensors");
    if (rc) peft_modules_free(mods);
    return rc;
}

void peft_modules_free(struct peft_modules *mods) {
    free(mods->name);
    memset(mods, 0, sizeof *mods);
}
