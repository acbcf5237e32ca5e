/*
 * tok_post.h: the "post_processor" of tokenizer.json, which adds the special tokens
 * around an encoded text when encode is asked to: TemplateProcessing's "single"
 * template, ByteLevel (offsets only: no ids) and Sequence. Other types are refused.
 */
#ifndef LORAD_TOK_POST_H
#define LORAD_TOK_POST_H

#include <jansson.h>
#include <stdint.h>

#include "tok_text.h"

struct tok_post {
    struct tok_ids before, after; /* the ids around the text */
};

/* Reads J (null: none) of FILE. -1 with an error naming FILE and the problem. */
int tok_post_parse(struct tok_post *p, const json_t *j, const char *file);
void tok_post_free(struct tok_post *p);
/* IDS[from..] becomes before + IDS[from..] + after. */
void tok_post_apply(const struct tok_post *p, struct tok_ids *ids, size_t from);

#endif
