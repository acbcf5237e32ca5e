/*
 * prompts.h: `lorad generate --prompts FILE.jsonl`, the prompts decoded in one batch: one
 * JSON object a line (blank lines passed over), {"prompt": TEXT, "adapter": NAME}, where
 * NAME names one of generate's --adapter NAME=DIR, and null or no "adapter" key means the
 * base model alone. Other keys are ignored. Errors are "FILE:LINE: problem".
 */
#ifndef LORAD_PROMPTS_H
#define LORAD_PROMPTS_H

#include <stddef.h>
#include <stdint.h>

struct prompt_line {
    char *prompt;   /* UTF-8, NUL-free */
    char *adapter;  /* NULL: the base model */
    int64_t line;   /* from 1 */
};

struct prompts {
    struct prompt_line *v;
    int32_t n;
};

/* The prompts of TEXT (N bytes), read from PATH (for errors). -1 with an error when a
 * line is malformed or there is none. */
int prompts_parse(struct prompts *p, const char *text, size_t n, const char *path);
/* prompts_parse of the file PATH. */
int prompts_read(struct prompts *p, const char *path);
void prompts_free(struct prompts *p);

#endif
