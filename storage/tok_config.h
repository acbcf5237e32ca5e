/*
 * tok_config.h: what a model directory says about its tokenizer beyond tokenizer.json:
 * tokenizer_config.json (the special tokens bos/eos/pad/unk, each a string or a
 * {"content": ...} object; add_bos_token, add_eos_token, model_max_length,
 * additional_special_tokens, and chat_template: a string, or a list of {"name",
 * "template"}), special_tokens_map.json (whose tokens override tokenizer_config.json's,
 * as transformers' from_pretrained does), chat_template.jinja (which, when present, is
 * the default template, as in newer transformers) and generation_config.json
 * (eos_token_id, an int or a list, and bos_token_id). Every file is optional.
 */
#ifndef LORAD_TOK_CONFIG_H
#define LORAD_TOK_CONFIG_H

#include <jansson.h>
#include <stdint.h>

#include "tokenizer.h"

enum tok_special { TOK_BOS, TOK_EOS, TOK_PAD, TOK_UNK, TOK_N_SPECIAL };

struct tok_config {
    char *token[TOK_N_SPECIAL]; /* the special tokens' strings, NULL when not given */
    int32_t id[TOK_N_SPECIAL];  /* their ids (tok_config_resolve), -1 when unknown */
    char **additional;          /* additional_special_tokens */
    int n_additional;
    int add_bos, add_eos;      /* -1 when not given */
    double model_max_length;   /* 0 when not given */
    char *chat_template;       /* the template chosen, NULL when the model has none */
    char *template_source;     /* where it came from, for errors ("DIR/tokenizer_config.json: chat_template") */
    int32_t *gen_eos;          /* generation_config.json's eos_token_id(s) */
    int n_gen_eos;
    int32_t gen_bos;           /* -1 when not given */
};

/* Reads DIR's files. TEMPLATE names the chat template to take from a list of named
 * ones (NULL or "": "default"); naming one when the model has a single template, or a
 * name the list lacks, is an error. -1 with an error naming the file and the problem. */
int tok_config_read(struct tok_config *c, const char *dir, const char *template_name);
/* The special tokens' ids in T (an added token, else the vocabulary); -1 with an error
 * naming the token when T has no such token. */
int tok_config_resolve(struct tok_config *c, const struct tokenizer *t, const char *dir);
/* The ids generation stops at: generation_config.json's eos ids, and the eos token's.
 * Fills up to MAX into IDS; returns how many there are. */
int tok_config_stop_ids(const struct tok_config *c, int32_t *ids, int max);
/* The template variables transformers passes besides messages: each special token's
 * string (bos_token, eos_token, pad_token, unk_token) and additional_special_tokens,
 * set in the JSON object VARS. */
void tok_config_template_vars(const struct tok_config *c, json_t *vars);
void tok_config_free(struct tok_config *c);

#endif
