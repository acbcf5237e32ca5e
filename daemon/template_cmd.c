/*
 * template_cmd.c: `lorad template` (template_cmd.h).
 */
#include "template_cmd.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "error.h"
#include "fileio.h"
#include "tok_config.h"
#include "tokenizer.h"

/* PATH: a JSON list of message objects, each with a "role" string. */
static json_t *messages_read(const char *path) {
    size_t n;
    char *text = file_read_all(path, &n);
    if (!text) return NULL;
    json_error_t jerr;
    json_t *list = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!list) return err_set(path, "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column), NULL;
    const char *problem = json_is_array(list) ? NULL : "must be a JSON list of {\"role\", \"content\"} messages";
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m) {
        if (problem) break;
        if (!json_is_object(m)) problem = "is not an object";
        else if (!json_is_string(json_object_get(m, "role"))) problem = "has no \"role\" string";
        if (problem) err_set(path, "message %zu %s", i + 1, problem);
    }
    if (problem && json_is_array(list) == 0) err_set(path, "%s", problem);
    if (problem) json_decref(list), list = NULL;
    return list;
}

/* With --json and a tokenizer in DIR: the special tokens with their ids, and the ids
 * generation stops at. */
static int tokens_json(struct tok_config *c, const char *dir, json_t *o) {
    char *files[2] = {path_join(dir, "tokenizer.json"), path_join(dir, "vocab.json")};
    int present = access(files[0], F_OK) == 0 || access(files[1], F_OK) == 0;
    free(files[0]);
    free(files[1]);
    if (!present) return 0;
    struct tokenizer t;
    if (tokenizer_open(&t, dir)) return -1;
    int rc = tok_config_resolve(c, &t, dir);
    tokenizer_free(&t);
    if (rc) return -1;
    static const char *const keys[TOK_N_SPECIAL] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    json_t *tokens = json_object(), *stop = json_array();
    for (int k = 0; k < TOK_N_SPECIAL; k++)
        if (c->token[k]) json_object_set_new(tokens, keys[k], json_pack("{sssi}", "content", c->token[k], "id", c->id[k]));
    int32_t ids[64];
    int n = tok_config_stop_ids(c, ids, 64);
    for (int i = 0; i < n && i < 64; i++) json_array_append_new(stop, json_integer(ids[i]));
    json_object_set_new(o, "tokens", tokens);
    json_object_set_new(o, "stop_ids", stop);
    return 0;
}

static int output_print(const struct jinja_output *out, struct tok_config *c, const char *dir, int as_json) {
    if (!as_json) {
        fwrite(out->text.p ? out->text.p : "", 1, out->text.n, stdout);
        return 0;
    }
    json_t *o = json_object(), *spans = json_array();
    json_object_set_new(o, "text", json_stringn(out->text.p ? out->text.p : "", out->text.n));
    for (size_t i = 0; i < out->n_spans; i++)
        json_array_append_new(spans, json_pack("[II]", (json_int_t)out->spans[i].start, (json_int_t)out->spans[i].end));
    json_object_set_new(o, "generation", spans);
    int rc = tokens_json(c, dir, o);
    char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (rc == 0) puts(line);
    free(line);
    json_decref(o);
    return rc;
}

int template_cmd(const struct command_call *call) {
    const Lorad__TemplateSpec *spec = (const Lorad__TemplateSpec *)call->spec[0];
    struct tok_config c;
    if (tok_config_read(&c, spec->model, spec->template_)) return -1;
    json_t *messages = NULL;
    struct chat_template t;
    struct jinja_output out = {0};
    int rc = chat_template_open(&t, &c, spec->model);
    if (rc == 0 && !(messages = messages_read(spec->messages))) rc = -1;
    if (rc == 0) rc = chat_template_render(&t, messages, spec->generation_prompt, &out);
    if (rc == 0) rc = output_print(&out, &c, spec->model, spec->json);
    chat_template_free(&t);
    jinja_output_free(&out);
    json_decref(messages);
    tok_config_free(&c);
    return rc;
}
