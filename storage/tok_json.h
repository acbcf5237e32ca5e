/*
 * tok_json.h: the shape every component of tokenizer.json shares (normalizer,
 * pre_tokenizer, post_processor, decoder): null for none, else an object with a
 * "type", where "Sequence" lists parts of the same kind to run in order.
 */
#ifndef LORAD_TOK_JSON_H
#define LORAD_TOK_JSON_H

#include <jansson.h>

/* Reads one part J of type TYPE (never "Sequence") into CTX: 0, -1 with an error, or 1
 * when TYPE is not one it reads. */
typedef int tok_part_fn(void *ctx, const char *type, const json_t *j, const char *file);

/* Reads component J of FILE (null: none), named WHAT ("normalizer"), whose Sequence
 * holds its parts under LIST ("normalizers"): PART gets every part in order. A type
 * PART does not read is refused with one line naming it, the hint listing SUPPORTED. */
int tok_component_parse(const json_t *j, const char *file, const char *what, const char *list, const char *supported,
                        tok_part_fn *part, void *ctx);

/* The array P of *N elements of SIZE bytes grown by one zeroed element (*N counts it). */
void *tok_steps_grow(void *p, int *n, size_t size);
/* Appends a zeroed step to LIST's steps (LIST->steps, LIST->n: the shape of every
 * stage's list) and returns it. */
#define TOK_STEP_ADD(list) \
    ((list)->steps = tok_steps_grow((list)->steps, &(list)->n, sizeof *(list)->steps), &(list)->steps[(list)->n - 1])

#endif
