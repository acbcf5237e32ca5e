/*
 * tok_normalize.h: the "normalizer" of tokenizer.json: NFC, NFKC, NFD, NFKD (utf8proc),
 * Lowercase, Strip, Prepend, Replace and Sequence, applied in order to each piece of
 * text between added tokens. Any other type is refused by name.
 */
#ifndef LORAD_TOK_NORMALIZE_H
#define LORAD_TOK_NORMALIZE_H

#include <jansson.h>

#include "tok_pattern.h"
#include "tok_text.h"

enum tok_norm_kind {
    TOK_NORM_NFC,
    TOK_NORM_NFKC,
    TOK_NORM_NFD,
    TOK_NORM_NFKD,
    TOK_NORM_LOWERCASE,
    TOK_NORM_STRIP,
    TOK_NORM_PREPEND,
    TOK_NORM_REPLACE,
};

struct tok_normalizer {
    struct tok_norm_step {
        enum tok_norm_kind kind;
        int left, right;    /* Strip */
        char *prepend;              /* Prepend: the prefix */
        struct tok_replace replace; /* Replace */
    } *steps;
    int n;
};

/* Reads J (null: no normalizer) of FILE. -1 with an error naming FILE and the type. */
int tok_normalizer_parse(struct tok_normalizer *nz, const json_t *j, const char *file);
void tok_normalizer_free(struct tok_normalizer *nz);
/* OUT = S (N bytes, valid UTF-8) normalized; -1 with an error when a regex gives up. */
int tok_normalize(const struct tok_normalizer *nz, const char *s, size_t n, struct tok_buf *out);

#endif
