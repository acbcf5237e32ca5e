/*
 * chat.c: chat templates parsed and rendered with transformers' variables (chat.h).
 */
#include "chat.h"

#include <string.h>

#include "error.h"

int chat_template_open(struct chat_template *ct, const struct tok_config *c, const char *dir) {
    memset(ct, 0, sizeof *ct);
    ct->c = c;
    if (!c->chat_template) {
        err_set(dir, "the model has no chat template");
        return err_hint("tokenizer_config.json has no \"chat_template\", and there is no chat_template.jinja");
    }
    return jinja_template_parse(&ct->t, c->chat_template, strlen(c->chat_template), c->template_source);
}

void chat_template_free(struct chat_template *ct) {
    jinja_template_free(&ct->t);
    memset(ct, 0, sizeof *ct);
}

int chat_template_render(const struct chat_template *ct, json_t *messages, int generation_prompt,
                         struct jinja_output *out) {
    json_t *vars = json_object();
    json_object_set(vars, "messages", messages);
    json_object_set_new(vars, "tools", json_null());
    json_object_set_new(vars, "documents", json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(generation_prompt));
    tok_config_template_vars(ct->c, vars);
    int rc = jinja_render(&ct->t, vars, NULL, out);
    json_decref(vars);
    return rc;
}
