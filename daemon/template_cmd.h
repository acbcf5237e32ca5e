/*
 * template_cmd.h: `lorad template`: a model's chat template (storage/tok_config.h)
 * rendered by lorad's Jinja engine (storage/jinja.h) for a JSON list of messages, as
 * transformers' apply_chat_template(tokenize=False) renders it; with --json, also the
 * byte spans its {% generation %} blocks produced and, when the directory has a
 * tokenizer, the special tokens' ids and the ids generation stops at.
 */
#ifndef LORAD_TEMPLATE_CMD_H
#define LORAD_TEMPLATE_CMD_H

#include "command.h"

/* CALL->spec[0]: a TemplateSpec. Returns 0, or -1 with an error. */
command_fn template_cmd;

#endif
