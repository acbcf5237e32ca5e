/*
 * chat.h: a model's chat template (tok_config.h chooses it) parsed once and rendered for
 * lists of messages as transformers' apply_chat_template renders it: with the variables
 * messages, tools and documents (None), add_generation_prompt, and the special tokens'
 * strings (tok_config_template_vars).
 */
#ifndef LORAD_CHAT_H
#define LORAD_CHAT_H

#include <jansson.h>

#include "jinja.h"
#include "tok_config.h"

struct chat_template {
    const struct tok_config *c;
    struct jinja_template t;
};

/* Parses C's template (C must outlive CT); DIR names the model in errors. -1 with an
 * error when the model has none or it does not parse. */
int chat_template_open(struct chat_template *ct, const struct tok_config *c, const char *dir);
void chat_template_free(struct chat_template *ct);
/* Renders MESSAGES (a JSON list of {role, content} objects) into OUT, ending with the
 * assistant's turn prompt when GENERATION_PROMPT. -1 with an error naming the template. */
int chat_template_render(const struct chat_template *ct, json_t *messages, int generation_prompt,
                         struct jinja_output *out);

#endif
