/*
 * tok_pretok.h: the "pre_tokenizer" of tokenizer.json: ByteLevel (add_prefix_space,
 * use_regex: GPT-2's split), Split (a String or Regex pattern, its behavior and
 * invert), Metaspace (replacement, prepend_scheme, split), Digits, Punctuation,
 * Whitespace, WhitespaceSplit and Sequence. Each step refines the pieces of the last.
 * ByteLevel's mapping of bytes to printable characters is left to the model (bpe.h),
 * which takes raw bytes; so ByteLevel must be the last step. Other types are refused.
 */
#ifndef LORAD_TOK_PRETOK_H
#define LORAD_TOK_PRETOK_H

#include <jansson.h>

#include "tok_pattern.h"
#include "tok_text.h"

enum tok_pre_kind {
    TOK_PRE_SPLIT,       /* also ByteLevel's regex, Digits, Punctuation, Whitespace, WhitespaceSplit */
    TOK_PRE_PREFIX_SPACE, /* ByteLevel's add_prefix_space */
    TOK_PRE_METASPACE,
};

/* How a Split treats what its pattern matches (Hugging Face's SplitDelimiterBehavior). */
enum tok_split_behavior {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
};

enum tok_prepend { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };

struct tok_pretok {
    struct tok_pre_step {
        enum tok_pre_kind kind;
        struct tok_pattern pattern;        /* SPLIT */
        enum tok_split_behavior behavior;  /* SPLIT */
        int invert;                        /* SPLIT: the pattern matches what is kept */
        char replacement[8];               /* METASPACE: "▁" */
        enum tok_prepend prepend;          /* METASPACE */
        int split;                         /* METASPACE: split before each replacement */
    } *steps;
    int n;
    int byte_level; /* the last step is ByteLevel: the model maps bytes */
};

/* Reads J (null: none) of FILE; -1 with an error naming FILE and the type. */
int tok_pretok_parse(struct tok_pretok *pt, const json_t *j, const char *file);
void tok_pretok_free(struct tok_pretok *pt);
/* Appends the pieces of S (N bytes; FIRST: it starts the input) to OUT, with SCRATCH
 * for the steps between. -1 with an error when a regex gives up. */
int tok_pretok_split(const struct tok_pretok *pt, const char *s, size_t n, int first, struct tok_pieces *out,
                     struct tok_pieces scratch[2]);

#endif
