/*
 * tok_config.c: tokenizer_config.json, special_tokens_map.json, chat_template.jinja
 * and generation_config.json of a model directory (tok_config.h).
 */
#include "tok_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "jsonio.h"

static const char *const tok_special_keys[TOK_N_SPECIAL] = {"bos_token", "eos_token", "pad_token", "unk_token"};

/* DIR/NAME as a JSON object, or NULL (no error) when the file does not exist. */
static json_t *tok_config_file(const char *dir, const char *name, char **path, int *failed) {
    *path = path_join(dir, name);
    *failed = 0;
    if (access(*path, F_OK) != 0) return NULL;
    json_t *root = jsonio_read_flags(*path, JSON_DECODE_INT_AS_REAL);
    *failed = !root;
    return root;
}

/* A token given as a string or as an AddedToken object {"content": ...}; 0 when absent or null. */
static int tok_config_token(const json_t *obj, const char *key, const char *file, char **out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v))
        return err_set(file, "\"%s\" must be a string or an object with a \"content\" string", key);
    free(*out);
    *out = xstrdup(json_string_value(v));
    return 1;
}

static int tok_config_tokens(struct tok_config *c, const json_t *root, const char *file) {
    for (int k = 0; k < TOK_N_SPECIAL; k++)
        if (tok_config_token(root, tok_special_keys[k], file, &c->token[k]) < 0) return -1;
    const json_t *extra = json_object_get(root, "additional_special_tokens");
    if (!extra || json_is_null(extra)) return 0;
    if (!json_is_array(extra)) return err_set(file, "\"additional_special_tokens\" must be a list");
    for (int i = 0; i < c->n_additional; i++) free(c->additional[i]);
    free(c->additional);
    c->n_additional = 0;
    c->additional = xcalloc(json_array_size(extra) + 1, sizeof *c->additional);
    for (size_t i = 0; i < json_array_size(extra); i++) {
        json_t *holder = json_pack("{sO}", "t", json_array_get(extra, i));
        char *tok = NULL;
        int rc = tok_config_token(holder, "t", file, &tok);
        json_decref(holder);
        if (rc <= 0) {
            free(tok);
            return err_set(file, "\"additional_special_tokens\" item %zu must be a string or a {\"content\"} object", i);
        }
        c->additional[c->n_additional++] = tok;
    }
    return 0;
}

/* chat_template: a string, or a list of {"name", "template"} from which NAME (or "default") is taken. */
static int tok_config_template(struct tok_config *c, const json_t *v, const char *file, const char *name) {
    const char *want = name && name[0] ? name : "default";
    if (json_is_string(v)) {
        if (name && name[0])
            return err_set(file, "the model has a single chat template, not one named \"%s\"", name), err_hint("drop --template");
        c->chat_template = xstrdup(json_string_value(v));
        return 0;
    }
    if (!json_is_array(v)) return err_set(file, "\"chat_template\" must be a string or a list of {\"name\", \"template\"}");
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t) {
        const json_t *n = json_object_get(t, "name"), *body = json_object_get(t, "template");
        if (!json_is_string(n) || !json_is_string(body))
            return err_set(file, "\"chat_template\" item %zu must be {\"name\": string, \"template\": string}", i);
        if (strcmp(json_string_value(n), want)) continue;
        c->chat_template = xstrdup(json_string_value(body));
        return 0;
    }
    err_set(file, "no chat template named \"%s\"", want);
    return err_hint("the names are in tokenizer_config.json's \"chat_template\" list; pick one with --template");
}

static int tok_config_main(struct tok_config *c, const json_t *root, const char *file, const char *name) {
    if (tok_config_tokens(c, root, file)) return -1;
    int32_t b;
    int rc = jsonio_get_bool(root, "add_bos_token", file, &b);
    if (rc < 0) return -1;
    if (rc) c->add_bos = b;
    if ((rc = jsonio_get_bool(root, "add_eos_token", file, &b)) < 0) return -1;
    if (rc) c->add_eos = b;
    if (jsonio_get_number(root, "model_max_length", file, &c->model_max_length) < 0) return -1;
    const json_t *t = json_object_get(root, "chat_template");
    if (!t || json_is_null(t)) {
        if (name && name[0]) return err_set(file, "the model has no chat template named \"%s\"", name);
        return 0;
    }
    if (tok_config_template(c, t, file, name)) return -1;
    c->template_source = xmalloc(strlen(file) + 20);
    sprintf(c->template_source, "%s: chat_template", file);
    return 0;
}

/* generation_config.json: eos_token_id (an int or a list of ints) and bos_token_id. */
static int tok_config_generation(struct tok_config *c, const json_t *root, const char *file) {
    const json_t *eos = json_object_get(root, "eos_token_id");
    if (eos && !json_is_null(eos)) {
        size_t n = json_is_array(eos) ? json_array_size(eos) : 1;
        c->gen_eos = xcalloc(n + 1, sizeof *c->gen_eos);
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_is_array(eos) ? json_array_get(eos, i) : eos;
            double d = json_is_number(v) ? json_number_value(v) : -1;
            if (d < 0 || d > INT32_MAX || d != (double)(int32_t)d)
                return err_set(file, "\"eos_token_id\" must be a token id or a list of token ids");
            c->gen_eos[c->n_gen_eos++] = (int32_t)d;
        }
    }
    double bos = -1;
    if (jsonio_get_number(root, "bos_token_id", file, &bos) < 0) return -1;
    if (bos != -1 && (bos < 0 || bos > INT32_MAX || bos != (double)(int32_t)bos))
        return err_set(file, "\"bos_token_id\" must be a token id");
    c->gen_bos = (int32_t)bos;
    return 0;
}

/* chat_template.jinja, the default template of newer model directories. */
static int tok_config_jinja_file(struct tok_config *c, const char *dir, const char *name) {
    char *path = path_join(dir, "chat_template.jinja");
    int rc = 0;
    if (access(path, F_OK) == 0 && !(name && name[0])) {
        size_t n;
        char *text = file_read_all(path, &n);
        if (!text) rc = -1;
        else if (strlen(text) != n) rc = err_set(path, "holds a NUL byte");
        else {
            free(c->chat_template);
            free(c->template_source);
            c->chat_template = text, text = NULL;
            c->template_source = xstrdup(path);
        }
        free(text);
    }
    free(path);
    return rc;
}

int tok_config_read(struct tok_config *c, const char *dir, const char *template_name) {
    memset(c, 0, sizeof *c);
    c->add_bos = c->add_eos = -1;
    c->gen_bos = -1;
    for (int k = 0; k < TOK_N_SPECIAL; k++) c->id[k] = -1;
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};
    int rc = 0;
    for (int f = 0; f < 3 && rc == 0; f++) {
        char *path;
        int failed;
        json_t *root = tok_config_file(dir, files[f], &path, &failed);
        if (failed) rc = -1;
        else if (root && f == 0) rc = tok_config_main(c, root, path, template_name);
        else if (root && f == 1) rc = tok_config_tokens(c, root, path);
        else if (root) rc = tok_config_generation(c, root, path);
        else if (f == 0 && template_name && template_name[0])
            rc = err_set(path, "missing, so there is no chat template named \"%s\"", template_name);
        json_decref(root);
        free(path);
    }
    if (rc == 0) rc = tok_config_jinja_file(c, dir, template_name);
    if (rc) tok_config_free(c);
    return rc;
}

/* The id of the token string S in T: an added token's, else the vocabulary's; -1 when none. */
static int32_t tok_config_find(const struct tokenizer *t, const char *s) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, s)) return t->added[i].id;
    for (int32_t id = 0; id < t->n_tokens; id++)
        if (t->token[id] && !strcmp(t->token[id], s)) return id;
    return -1;
}

int tok_config_resolve(struct tok_config *c, const struct tokenizer *t, const char *dir) {
    for (int k = 0; k < TOK_N_SPECIAL; k++) {
        if (!c->token[k]) continue;
        c->id[k] = tok_config_find(t, c->token[k]);
        if (c->id[k] < 0) {
            err_set(dir, "%s \"%s\" is not a token of the tokenizer", tok_special_keys[k], c->token[k]);
            return err_hint("tokenizer_config.json or special_tokens_map.json names it; tokenizer.json lacks it");
        }
    }
    return 0;
}

int tok_config_stop_ids(const struct tok_config *c, int32_t *ids, int max) {
    int n = 0;
    for (int i = 0; i <= c->n_gen_eos; i++) {
        int32_t id = i < c->n_gen_eos ? c->gen_eos[i] : c->id[TOK_EOS];
        int seen = id < 0;
        for (int k = 0; k < n && k < max; k++) seen |= ids[k] == id;
        if (seen) continue;
        if (n < max) ids[n] = id;
        n++;
    }
    return n;
}

void tok_config_template_vars(const struct tok_config *c, json_t *vars) {
    for (int k = 0; k < TOK_N_SPECIAL; k++)
        if (c->token[k]) json_object_set_new(vars, tok_special_keys[k], json_string(c->token[k]));
    if (!c->additional) return;
    json_t *extra = json_array();
    for (int i = 0; i < c->n_additional; i++) json_array_append_new(extra, json_string(c->additional[i]));
    json_object_set_new(vars, "additional_special_tokens", extra);
}

void tok_config_free(struct tok_config *c) {
    for (int k = 0; k < TOK_N_SPECIAL; k++) free(c->token[k]);
    for (int i = 0; i < c->n_additional; i++) free(c->additional[i]);
    free(c->additional);
    free(c->chat_template);
    free(c->template_source);
    free(c->gen_eos);
    memset(c, 0, sizeof *c);
}
