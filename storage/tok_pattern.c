/*
 * tok_pattern.c: String and Regex patterns (tok_pattern.h).
 */
#include "tok_pattern.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jsonio.h"

/* Oniguruma's word characters (the Rust tokenizers' regex engine), as tokenizers.js
 * documents them: Alphabetic, marks, decimal digits and connector punctuation, and for a
 * \w outside a class also the Latin-1 superscripts and fractions its Latin-1 table
 * counts. PCRE2 10.42's \w is \p{L}, \p{N} and "_" (no marks); its \s adds U+180E to
 * White_Space. */
#define ONIG_WORD_IN_CLASS "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}"
#define ONIG_WORD ONIG_WORD_IN_CLASS "\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}"

/* What the escape backslash-C means to Oniguruma, spelled for PCRE2 (IN_CLASS: inside a
 * character class), or NULL where PCRE2 reads it the same: \w, \s, \S, and \W outside
 * a class (inside one it keeps PCRE2's meaning: no class nests in another). */
static const char *onig_escape(char c, int in_class) {
    switch (c) {
    case 's': return "\\p{White_Space}";
    case 'S': return "\\P{White_Space}";
    case 'w': return in_class ? ONIG_WORD_IN_CLASS : "[" ONIG_WORD "]";
    case 'W': return in_class ? NULL : "[^" ONIG_WORD "]";
    default: return NULL;
    }
}

/* OUT = RE with Oniguruma's \w, \W, \s and \S spelled for PCRE2; \Q...\E, classes and
 * their POSIX [:name:] parts are followed so that each escape is read where it stands. */
static void onig_translate(const char *re, struct tok_buf *out) {
    int in_class = 0;
    for (const char *c = re; *c; c++) {
        if (c[0] == '\\' && c[1] == 'Q') { /* quoted: to \E as it is */
            const char *e = strstr(c + 2, "\\E");
            size_t n = e ? (size_t)(e + 2 - c) : strlen(c);
            tok_buf_put(out, c, n);
            c += n - 1;
        } else if (c[0] == '\\' && c[1]) {
            const char *rep = onig_escape(c[1], in_class);
            tok_buf_put(out, rep ? rep : c, rep ? strlen(rep) : 2);
            c++;
        } else if (in_class && c[0] == '[' && c[1] == ':' && strstr(c + 2, ":]")) { /* [:alpha:] */
            size_t n = (size_t)(strstr(c + 2, ":]") + 2 - c);
            tok_buf_put(out, c, n);
            c += n - 1;
        } else {
            if (!in_class && c[0] == '[') { /* a leading ] (after ^) is a literal one */
                size_t lead = 1 + (c[1] == '^');
                lead += c[lead] == ']';
                tok_buf_put(out, c, lead);
                c += lead - 1;
                in_class = 1;
                continue;
            }
            if (in_class && c[0] == ']') in_class = 0;
            tok_buf_put(out, c, 1);
        }
    }
    tok_buf_put(out, "", 0);
}

int tok_pattern_regex(struct tok_pattern *p, const char *re, const char *where) {
    int code;
    PCRE2_SIZE at;
    struct tok_buf pcre = {0};
    onig_translate(re, &pcre);
    p->re = pcre2_compile((PCRE2_SPTR)pcre.p, pcre.n, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code, &at, NULL);
    int same = !strcmp(pcre.p, re);
    tok_buf_free(&pcre);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        if (same) return err_set(where, "regex '%s' at offset %zu: %s", re, (size_t)at, (const char *)msg);
        return err_set(where, "regex '%s': %s", re, (const char *)msg);
    }
    (void)pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter matches the same */
    return 0;
}

/* Each thread's match block, freed when the thread ends: the tokenizer is shared by
 * the threads that encode with it, and a match writes its block. One pair, the whole
 * match's span: a pattern's capture groups change nothing in a split. */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_free(void *md) { pcre2_match_data_free(md); }
static void md_key_create(void) { CHECK(pthread_key_create(&md_key, md_free) == 0); }

static pcre2_match_data *thread_match_data(void) {
    CHECK(pthread_once(&md_once, md_key_create) == 0);
    pcre2_match_data *md = pthread_getspecific(md_key);
    if (!md) {
        md = pcre2_match_data_create(1, NULL);
        CHECK(md != NULL && pthread_setspecific(md_key, md) == 0);
    }
    return md;
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

int tok_replace_parse(struct tok_replace *r, const json_t *j, const char *file, const char *what) {
    const char *content = NULL;
    memset(r, 0, sizeof *r);
    if (jsonio_get_string(j, "content", file, &content) <= 0) return err_set(file, "%s: Replace without \"content\"", what);
    r->content = xstrdup(content);
    return tok_pattern_parse(&r->pattern, json_object_get(j, "pattern"), file);
}

void tok_replace_free(struct tok_replace *r) {
    free(r->content);
    tok_pattern_free(&r->pattern);
}

void tok_pattern_free(struct tok_pattern *p) {
    free(p->literal);
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
    pcre2_match_data *md = thread_match_data();
    int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) { /* a match or depth limit: a pattern that backtracks without end on this text */
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return err_set("tokenizer", "a regex of the tokenizer gave up on the text: %s", (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md); /* rc 0: more groups than pairs; the match's span is set */
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
