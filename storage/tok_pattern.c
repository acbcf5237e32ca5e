/*
 * tok_pattern.c: String and Regex patterns (tok_pattern.h).
 */
#include "tok_pattern.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

int tok_pattern_regex(struct tok_pattern *p, const char *re, const char *where) {
    int code;
    PCRE2_SIZE at;
    p->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code, &at,
                          NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return err_set(where, "regex '%s' at offset %zu: %s", re, (size_t)at, (const char *)msg);
    }
    (void)pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter matches the same */
    p->md = pcre2_match_data_create_from_pattern(p->re, NULL);
    CHECK(p->md != NULL);
    return 0;
}

int tok_pattern_parse(struct tok_pattern *p, const json_t *j, const char *where) {
    memset(p, 0, sizeof *p);
    const json_t *s = json_object_get(j, "String"), *r = json_object_get(j, "Regex");
    if (json_is_string(s) && !r) {
        p->literal_len = json_string_length(s);
        if (!p->literal_len) return err_set(where, "an empty String pattern");
        p->literal = xmalloc(p->literal_len + 1);
        memcpy(p->literal, json_string_value(s), p->literal_len + 1);
        return 0;
    }
    if (json_is_string(r) && !s) return tok_pattern_regex(p, json_string_value(r), where);
    return err_set(where, "the pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

void tok_pattern_free(struct tok_pattern *p) {
    free(p->literal);
    if (p->md) pcre2_match_data_free(p->md);
    if (p->re) pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

int tok_pattern_find(const struct tok_pattern *p, const char *s, size_t n, size_t from, size_t *start, size_t *end) {
    if (p->literal) {
        for (size_t i = from; i + p->literal_len <= n; i++)
            if (s[i] == p->literal[0] && memcmp(s + i, p->literal, p->literal_len) == 0) {
                *start = i;
                *end = i + p->literal_len;
                return 1;
            }
        return 0;
    }
    int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, p->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) { /* a match or depth limit: a pattern that backtracks without end on this text */
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return err_set("tokenizer", "a regex of the tokenizer gave up on the text: %s", (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
    *start = ov[0];
    *end = ov[1];
    return 1;
}

int tok_pattern_replace(const struct tok_pattern *p, const char *s, size_t n, const char *content,
                        struct tok_buf *out) {
    size_t at = 0, a, b;
    int found;
    while ((found = tok_pattern_find(p, s, n, at, &a, &b)) == 1) {
        tok_buf_put(out, s + at, a - at);
        tok_buf_put(out, content, strlen(content));
        if (b == a) { /* an empty match: keep the next character and go on after it */
            if (a == n) return 0;
            size_t k = utf8_char_len((unsigned char)s[a]);
            tok_buf_put(out, s + a, k);
            b = a + k;
        }
        at = b;
    }
    if (found < 0) return -1;
    tok_buf_put(out, s + at, n - at);
    return 0;
}
