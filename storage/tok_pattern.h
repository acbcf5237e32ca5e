/*
 * tok_pattern.h: the patterns of tokenizer.json (Split, Replace): {"String": "..."},
 * matched literally, or {"Regex": "..."}, matched with PCRE2 (UTF and Unicode
 * properties, JIT-compiled when the machine allows), as Hugging Face matches them with
 * Oniguruma: \w, \W, \s and \S are rewritten to Oniguruma's classes first (PCRE2's \w
 * lacks the marks; a \W inside a class keeps PCRE2's meaning).
 */
#ifndef LORAD_TOK_PATTERN_H
#define LORAD_TOK_PATTERN_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stddef.h>

#include "tok_text.h"

struct tok_pattern {
    char *literal; /* a String pattern, or NULL */
    size_t literal_len;
    pcre2_code *re; /* a Regex pattern, or NULL */
};

/* A Replace step (a normalizer's or a decoder's): every match of PATTERN becomes CONTENT. */
struct tok_replace {
    struct tok_pattern pattern;
    char *content;
};

/* Reads J ({"String": S} or {"Regex": R}) of WHERE (a file and key, for errors). */
int tok_pattern_parse(struct tok_pattern *p, const json_t *j, const char *where);
/* Compiles the regex RE; -1 with an error naming WHERE and PCRE2's message. */
int tok_pattern_regex(struct tok_pattern *p, const char *re, const char *where);
void tok_pattern_free(struct tok_pattern *p);
/* Reads a Replace's "pattern" and "content" from J of FILE; WHAT ("decoder") names it in
 * errors. */
int tok_replace_parse(struct tok_replace *r, const json_t *j, const char *file, const char *what);
void tok_replace_free(struct tok_replace *r);
/* The first match in S[from, n): 1 with its span [*START, *END), 0 when none, -1 with an
 * error when PCRE2 gives up (its match limit). A regex's empty match counts; the caller
 * steps past it. Threads may share P (each has its own match block). */
int tok_pattern_find(const struct tok_pattern *p, const char *s, size_t n, size_t from, size_t *start, size_t *end);

/* OUT += S (N bytes) with every match of P replaced by CONTENT. -1 as tok_pattern_find. */
int tok_pattern_replace(const struct tok_pattern *p, const char *s, size_t n, const char *content,
                        struct tok_buf *out);

#endif
