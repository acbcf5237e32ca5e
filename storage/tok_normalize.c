/*
 * tok_normalize.c: the normalizers (tok_normalize.h).
 */
#include "tok_normalize.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"
#include "jsonio.h"
#include "tok_json.h"

static int part_parse(void *ctx, const char *type, const json_t *j, const char *file) {
    struct tok_normalizer *nz = ctx;
    static const char *const unicode[] = {"NFC", "NFKC", "NFD", "NFKD"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(type, unicode[i])) return TOK_STEP_ADD(nz)->kind = (enum tok_norm_kind)(TOK_NORM_NFC + i), 0;
    if (!strcmp(type, "Lowercase")) return TOK_STEP_ADD(nz)->kind = TOK_NORM_LOWERCASE, 0;
    if (!strcmp(type, "Strip")) {
        struct tok_norm_step *s = TOK_STEP_ADD(nz);
        s->kind = TOK_NORM_STRIP;
        s->left = s->right = 1;
        return jsonio_get_bool(j, "strip_left", file, &s->left) < 0 || jsonio_get_bool(j, "strip_right", file, &s->right) < 0
                   ? -1
                   : 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *text = NULL;
        if (jsonio_get_string(j, "prepend", file, &text) <= 0) return err_set(file, "normalizer: Prepend without \"prepend\"");
        struct tok_norm_step *s = TOK_STEP_ADD(nz);
        s->kind = TOK_NORM_PREPEND;
        s->prepend = xstrdup(text);
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        struct tok_norm_step *s = TOK_STEP_ADD(nz);
        s->kind = TOK_NORM_REPLACE;
        return tok_replace_parse(&s->replace, j, file, "normalizer");
    }
    return 1;
}

int tok_normalizer_parse(struct tok_normalizer *nz, const json_t *j, const char *file) {
    memset(nz, 0, sizeof *nz);
    return tok_component_parse(j, file, "normalizer", "normalizers", "NFC, NFKC, NFD, NFKD, Lowercase, Strip, Prepend, Replace",
                               part_parse, nz);
}

void tok_normalizer_free(struct tok_normalizer *nz) {
    for (int i = 0; i < nz->n; i++) {
        free(nz->steps[i].prepend);
        tok_replace_free(&nz->steps[i].replace);
    }
    free(nz->steps);
    memset(nz, 0, sizeof *nz);
}

/* OUT = S with utf8proc's OPTIONS (a normal form). */
static void unicode_form(const char *s, size_t n, int options, struct tok_buf *out) {
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r,
                                      (utf8proc_option_t)(options | UTF8PROC_STABLE));
    CHECK(k >= 0); /* the input is valid UTF-8 */
    tok_buf_put(out, r, (size_t)k);
    free(r);
}

/* Each character to lower case on its own, as Rust's char::to_lowercase: Unicode's simple
 * mapping (utf8proc's), but for the one unconditional mapping of SpecialCasing.txt that is
 * longer, U+0130 (I with dot above) to "i" + U+0307; no context (a final capital sigma is
 * a plain small sigma). */
static void lowercase(const char *s, size_t n, struct tok_buf *out) {
    char u[4];
    for (size_t i = 0, k; i < n; i += k) {
        int32_t c = utf8_decode(s + i, n - i, &k);
        if (c == 0x130) tok_buf_put(out, "i\xcc\x87", 3);
        else tok_buf_put(out, u, utf8_encode(utf8proc_tolower(c), u));
    }
}

static void strip(const char *s, size_t n, int left, int right, struct tok_buf *out) {
    size_t a = 0, b = n, k;
    while (left && a < b && uni_is_space(utf8_decode(s + a, b - a, &k))) a += k;
    while (right && b > a) {
        size_t start = b - 1;
        while (start > a && ((unsigned char)s[start] & 0xC0) == 0x80) start--;
        if (!uni_is_space(utf8_decode(s + start, b - start, &k))) break;
        b = start;
    }
    tok_buf_put(out, s + a, b - a);
}

static int step_apply(const struct tok_norm_step *st, const char *s, size_t n, struct tok_buf *out) {
    static const int forms[] = {UTF8PROC_COMPOSE, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, UTF8PROC_DECOMPOSE,
                                UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
    switch (st->kind) {
    case TOK_NORM_NFC:
    case TOK_NORM_NFKC:
    case TOK_NORM_NFD:
    case TOK_NORM_NFKD: unicode_form(s, n, forms[st->kind - TOK_NORM_NFC], out); return 0;
    case TOK_NORM_LOWERCASE: lowercase(s, n, out); return 0;
    case TOK_NORM_STRIP: strip(s, n, st->left, st->right, out); return 0;
    case TOK_NORM_PREPEND:
        if (n) tok_buf_put(out, st->prepend, strlen(st->prepend));
        tok_buf_put(out, s, n);
        return 0;
    case TOK_NORM_REPLACE: return tok_pattern_replace(&st->replace.pattern, s, n, st->replace.content, out);
    }
    return 0;
}

int tok_normalize(const struct tok_normalizer *nz, const char *s, size_t n, struct tok_buf *out) {
    out->n = 0;
    if (nz->n == 0) {
        tok_buf_put(out, s, n);
        return 0;
    }
    struct tok_buf a = {0};
    tok_buf_put(&a, s, n);
    for (int i = 0; i < nz->n; i++) {
        out->n = 0;
        if (step_apply(&nz->steps[i], a.p, a.n, out)) {
            tok_buf_free(&a);
            return -1;
        }
        if (i + 1 < nz->n) {
            a.n = 0;
            tok_buf_put(&a, out->p, out->n);
        }
    }
    tok_buf_free(&a);
    return 0;
}
