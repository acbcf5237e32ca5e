/*
 * jinja_lex.c: a chat template's tokens (jinja_syntax.h), as jinja2's lexer makes them
 * with trim_blocks and lstrip_blocks on: newlines normalized to \n and one trailing
 * newline dropped (keep_trailing_newline off), "-" and "+" whitespace control on every
 * tag, the first newline after a block or comment tag dropped, the indentation before
 * a block or comment tag at the start of a line dropped, {% raw %}, and string
 * literals decoded as Python's unicode-escape codec decodes them.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jinja_syntax.h"
#include "tok_text.h"

struct jlex {
    struct jarena *a;
    const char *s; /* the normalized source */
    size_t n, pos;
    size_t line_pos; /* the cursor of position -> line:col */
    int line;
    size_t line_start;
    int line_starting; /* the last match ended with a newline (or nothing was matched yet) */
    struct jtok *toks;
    size_t count, cap;
    char balance[256]; /* the brackets open in a tag */
    int depth;
};

/* The line and column of byte POS (never before the last asked). */
static void jlex_where(struct jlex *l, size_t pos, int *line, int *col) {
    if (pos < l->line_pos) l->line_pos = 0, l->line = 1, l->line_start = 0;
    for (; l->line_pos < pos; l->line_pos++)
        if (l->s[l->line_pos] == '\n') l->line++, l->line_start = l->line_pos + 1;
    *line = l->line;
    *col = (int)(pos - l->line_start) + 1;
}

_Noreturn static void jlex_fail(struct jlex *l, size_t pos, const char *what) {
    int line, col;
    jlex_where(l, pos, &line, &col);
    jarena_fail(l->a, "line %d:%d: %s", line, col, what);
}

static struct jtok *jlex_push(struct jlex *l, int type, size_t pos) {
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct jtok *t = jarena_alloc(l->a, cap * sizeof *t);
        if (l->count) memcpy(t, l->toks, l->count * sizeof *t);
        l->toks = t, l->cap = cap;
    }
    struct jtok *t = &l->toks[l->count++];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    jlex_where(l, pos, &t->line, &t->col);
    return t;
}

/* The length of the Python white space at S + POS (0 when none). */
static size_t jlex_space_len(const char *s, size_t n, size_t pos) {
    size_t len = 0;
    if (pos >= n) return 0;
    int32_t c = utf8_decode(s + pos, n - pos, &len);
    return jv_py_space(c) ? len : 0;
}

static size_t jlex_skip_space(const char *s, size_t n, size_t pos) {
    for (size_t k; (k = jlex_space_len(s, n, pos)); pos += k) {
    }
    return pos;
}

/* The end of TEXT (START..END) with its trailing white space removed (str.rstrip). */
static size_t jlex_rstrip(const char *s, size_t start, size_t end) {
    while (end > start) {
        size_t b = end - 1;
        while (b > start && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        if (!jlex_space_len(s, end, b)) break;
        end = b;
    }
    return end;
}

/* The data before a tag with sign SIGN ('-', '+' or 0): the end jinja2 keeps of START..END.
 * LSTRIP: the tag is a block or comment, whose indentation lstrip_blocks removes. */
static size_t jlex_text_end(struct jlex *l, size_t start, size_t end, char sign, int lstrip) {
    if (sign == '-') return jlex_rstrip(l->s, start, end);
    if (sign == '+' || !lstrip) return end;
    size_t lpos = end;
    while (lpos > start && l->s[lpos - 1] != '\n') lpos--;
    if (lpos == start && !l->line_starting) return end;
    for (size_t p = lpos, k; p < end; p += k)
        if (!(k = jlex_space_len(l->s, end, p))) return end;
    return lpos;
}

static void jlex_data(struct jlex *l, size_t start, size_t end) {
    if (end <= start) return;
    struct jtok *t = jlex_push(l, JT_DATA, start);
    t->p = l->s + start;
    t->n = end - start;
}

/* The end of a block tag's closing at POS ("+%}", "-%}" and white space, "%}" and one
 * newline), or 0 when none is there. VAR: a {{ }} tag ("-}}" and white space, "}}"). */
static size_t jlex_close(const struct jlex *l, size_t pos, int var) {
    const char *s = l->s;
    size_t n = l->n;
    char c = var ? '}' : '%';
    if (pos + 3 <= n && s[pos + 1] == c && s[pos + 2] == '}') {
        if (s[pos] == '-') return jlex_skip_space(s, n, pos + 3);
        if (s[pos] == '+' && !var) return pos + 3;
    }
    if (pos + 2 <= n && s[pos] == c && s[pos + 1] == '}')
        return var ? pos + 2 : pos + 2 + (pos + 2 < n && s[pos + 2] == '\n');
    return 0;
}

/* {# ... #} from POS, after its opening. */
static size_t jlex_comment(struct jlex *l, size_t open, size_t pos) {
    const char *end = memmem(l->s + pos, l->n - pos, "#}", 2);
    if (!end) jlex_fail(l, open, "the comment is never closed (#})");
    size_t q = (size_t)(end - l->s);
    if (q > pos && l->s[q - 1] == '-') return jlex_skip_space(l->s, l->n, q + 2);
    if (q > pos && l->s[q - 1] == '+') return q + 2;
    return q + 2 + (q + 2 < l->n && l->s[q + 2] == '\n');
}

/* "\s*WORD\s*" then a block closing, at POS; the end, or 0. */
static size_t jlex_word_tag(const struct jlex *l, size_t pos, const char *word) {
    size_t w = strlen(word);
    pos = jlex_skip_space(l->s, l->n, pos);
    if (pos + w > l->n || memcmp(l->s + pos, word, w)) return 0;
    pos = jlex_skip_space(l->s, l->n, pos + w);
    return jlex_close(l, pos, 0);
}

/* "\s*raw\s*" and "-%}" with white space or "%}" at POS (a raw opening keeps the newline
 * after it): the end, or 0. */
static size_t jlex_raw_open(const struct jlex *l, size_t pos) {
    pos = jlex_skip_space(l->s, l->n, pos);
    if (pos + 3 > l->n || memcmp(l->s + pos, "raw", 3)) return 0;
    pos = jlex_skip_space(l->s, l->n, pos + 3);
    if (pos + 3 <= l->n && !memcmp(l->s + pos, "-%}", 3)) return jlex_skip_space(l->s, l->n, pos + 3);
    return pos + 2 <= l->n && !memcmp(l->s + pos, "%}", 2) ? pos + 2 : 0;
}

/* {% raw %} ... {% endraw %}: the text between, taken as it is. */
static size_t jlex_raw(struct jlex *l, size_t open, size_t pos) {
    for (const char *p = l->s + pos; (p = memmem(p, l->n - (size_t)(p - l->s), "{%", 2)); p += 2) {
        size_t q = (size_t)(p - l->s) + 2;
        char sign = q < l->n && (l->s[q] == '-' || l->s[q] == '+') ? l->s[q] : 0;
        size_t end = jlex_word_tag(l, q + (sign != 0), "endraw");
        if (!end) continue;
        jlex_data(l, pos, jlex_text_end(l, pos, (size_t)(p - l->s), sign, 1));
        return end;
    }
    jlex_fail(l, open, "the raw block is never closed ({% endraw %})");
}

static int jlex_digit(char c, int base) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 99;
    return d < base ? d : -1;
}

/* Digits of BASE with single underscores between them at POS ("1_000"); their end. */
static size_t jlex_digits(const struct jlex *l, size_t pos, int base, int lead_underscore) {
    size_t p = pos;
    for (;;) {
        size_t q = p;
        if ((lead_underscore || q > pos) && q < l->n && l->s[q] == '_') q++;
        if (q >= l->n || jlex_digit(l->s[q], base) < 0) return p;
        p = q + 1;
    }
}

static void jlex_number_value(struct jlex *l, size_t pos, size_t end, int is_float) {
    char buf[128];
    size_t k = 0;
    for (size_t p = pos; p < end && k + 1 < sizeof buf; p++)
        if (l->s[p] != '_') buf[k++] = l->s[p];
    buf[k] = '\0';
    struct jtok *t = jlex_push(l, is_float ? JT_FLOAT : JT_INT, pos);
    if (is_float) {
        t->f = strtod(buf, NULL);
        return;
    }
    int base = k > 1 && buf[0] == '0' ? (buf[1] | 32) == 'x' ? 16 : (buf[1] | 32) == 'o' ? 8 : (buf[1] | 32) == 'b' ? 2 : 10 : 10;
    uint64_t v = 0;
    for (size_t i = base == 10 ? 0 : 2; i < k; i++) {
        uint64_t d = (uint64_t)jlex_digit(buf[i], base);
        if (v > (UINT64_C(9223372036854775807) - d) / (uint64_t)base)
            jlex_fail(l, pos, "integer literal too large (lorad's templates hold 64-bit integers)");
        v = v * (uint64_t)base + d;
    }
    t->i = (int64_t)v;
}

/* A float or an integer literal at POS, as jinja2's float_re and integer_re; 0 if none. */
static size_t jlex_number(struct jlex *l, size_t pos) {
    const char *s = l->s;
    if (!(s[pos] >= '0' && s[pos] <= '9')) return 0;
    if (!(pos > 0 && s[pos - 1] == '.')) { /* float: digits, then a fraction and/or an exponent */
        size_t p = jlex_digits(l, pos, 10, 0), e = p;
        if (e + 1 < l->n && s[e] == '.' && jlex_digit(s[e + 1], 10) >= 0) e = jlex_digits(l, e + 1, 10, 0);
        size_t x = e;
        if (x < l->n && (s[x] | 32) == 'e') {
            size_t d = x + 1 + (x + 1 < l->n && (s[x + 1] == '+' || s[x + 1] == '-'));
            if (d < l->n && jlex_digit(s[d], 10) >= 0) x = jlex_digits(l, d, 10, 0);
        }
        if (x > e || e > p) {
            jlex_number_value(l, pos, x, 1);
            return x;
        }
    }
    size_t end;
    int base = s[pos] == '0' && pos + 1 < l->n ? (s[pos + 1] | 32) == 'x' ? 16 : (s[pos + 1] | 32) == 'o' ? 8 : (s[pos + 1] | 32) == 'b' ? 2 : 0 : 0;
    if (base && (end = jlex_digits(l, pos + 2, base, 1)) > pos + 2) {
    } else if (s[pos] == '0') {
        for (end = pos + 1; end < l->n && (s[end] == '0' || (s[end] == '_' && end + 1 < l->n && s[end + 1] == '0'));)
            end += s[end] == '_' ? 2 : 1;
    } else end = jlex_digits(l, pos, 10, 0);
    jlex_number_value(l, pos, end, 0);
    return end;
}

/* Python's unicode-escape decoding of the ASCII text S (N bytes) into OUT. */
static void jlex_unescape(struct jlex *l, size_t at, const char *s, size_t n, struct jbuf *out) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            jbuf_put(l->a, out, s + i, 1);
            continue;
        }
        if (++i == n) jlex_fail(l, at, "string literal: \\ at end of string");
        static const char from[] = "\n\\'\"abfnrtv", to[] = "\0\\'\"\a\b\f\n\r\t\v";
        const char *e = strchr(from, s[i]);
        if (e && s[i]) {
            if (*e != '\n') jbuf_put(l->a, out, &to[e - from], 1);
            continue;
        }
        int32_t c = 0;
        size_t digits = s[i] == 'x' ? 2 : s[i] == 'u' ? 4 : s[i] == 'U' ? 8 : 0;
        if (digits) {
            for (size_t k = 0; k < digits; k++) {
                int d = i + 1 + k < n ? jlex_digit(s[i + 1 + k], 16) : -1;
                if (d < 0) jlex_fail(l, at, "string literal: truncated \\x, \\u or \\U escape");
                c = c * 16 + d;
            }
            i += digits;
        } else if (s[i] >= '0' && s[i] <= '7') {
            for (size_t k = 0; k < 3 && i < n && s[i] >= '0' && s[i] <= '7'; k++, i++) c = c * 8 + (s[i] - '0');
            i--;
        } else if (s[i] == 'N') {
            jlex_fail(l, at, "string literal: \\N{...} escapes are not supported");
        } else {
            jbuf_put(l->a, out, s + i - 1, 2);
            continue;
        }
        if (c > 0x10FFFF || (c >= 0xD800 && c < 0xE000))
            jlex_fail(l, at, "string literal: escape of a surrogate or beyond U+10FFFF (not supported)");
        char u[4];
        jbuf_put(l->a, out, u, utf8_encode(c, u));
    }
}

/* A string literal at POS (its quote): its end. Non-ASCII characters are first written
 * as \x, \u or \U escapes, as jinja2 does before decoding with unicode-escape. */
static size_t jlex_string(struct jlex *l, size_t pos) {
    char q = l->s[pos];
    size_t p = pos + 1;
    while (p < l->n && l->s[p] != q) p += l->s[p] == '\\' && p + 1 < l->n ? 2 : 1;
    if (p >= l->n) jlex_fail(l, pos, "the string literal is never closed");
    struct jbuf ascii = {0}, out = {0};
    for (size_t i = pos + 1, len; i < p; i += len) {
        int32_t c = utf8_decode(l->s + i, p - i, &len);
        char esc[16];
        if (c < 0x80) jbuf_put(l->a, &ascii, l->s + i, 1);
        else {
            snprintf(esc, sizeof esc, c < 0x100 ? "\\x%02x" : c < 0x10000 ? "\\u%04x" : "\\U%08x", (unsigned)c);
            jbuf_puts(l->a, &ascii, esc);
        }
    }
    jlex_unescape(l, pos, ascii.p ? ascii.p : "", ascii.n, &out);
    struct jtok *t = jlex_push(l, JT_STRING, pos);
    t->p = out.p ? out.p : "";
    t->n = out.n;
    return p + 1;
}

static const struct {
    const char *s;
    enum jop op;
} jlex_ops[] = {
    {"//", JOP_FLOORDIV}, {"**", JOP_POW}, {"==", JOP_EQ}, {"!=", JOP_NE}, {">=", JOP_GTEQ}, {"<=", JOP_LTEQ},
    {"+", JOP_ADD}, {"-", JOP_SUB}, {"/", JOP_DIV}, {"*", JOP_MUL}, {"%", JOP_MOD}, {"~", JOP_TILDE},
    {"[", JOP_LBRACKET}, {"]", JOP_RBRACKET}, {"(", JOP_LPAREN}, {")", JOP_RPAREN}, {"{", JOP_LBRACE},
    {"}", JOP_RBRACE}, {">", JOP_GT}, {"<", JOP_LT}, {"=", JOP_ASSIGN}, {".", JOP_DOT}, {":", JOP_COLON},
    {"|", JOP_PIPE}, {",", JOP_COMMA}, {";", JOP_SEMICOLON},
};

/* An operator at POS, with the bracket balance kept; its end. */
static size_t jlex_operator(struct jlex *l, size_t pos) {
    for (size_t k = 0; k < sizeof jlex_ops / sizeof jlex_ops[0]; k++) {
        size_t len = strlen(jlex_ops[k].s);
        if (pos + len > l->n || memcmp(l->s + pos, jlex_ops[k].s, len)) continue;
        char c = jlex_ops[k].s[0];
        if (len == 1 && strchr("([{", c)) {
            if (l->depth == (int)sizeof l->balance) jlex_fail(l, pos, "brackets nested too deep");
            l->balance[l->depth++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (len == 1 && strchr(")]}", c)) {
            if (!l->depth || l->balance[l->depth - 1] != c) jlex_fail(l, pos, "unbalanced bracket");
            l->depth--;
        }
        jlex_push(l, JT_OP, pos)->op = (uint8_t)jlex_ops[k].op;
        return pos + len;
    }
    char what[64];
    snprintf(what, sizeof what, "unexpected character '%c'", l->s[pos]);
    jlex_fail(l, pos, what);
}

/* An ASCII letter or _ (and, when LATER, a digit). */
static int jlex_name_char(unsigned char c, int later) {
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (later && c >= '0' && c <= '9');
}

/* One token inside a tag at POS; its end. */
static size_t jlex_token(struct jlex *l, size_t pos) {
    const char *s = l->s;
    size_t end = jlex_skip_space(s, l->n, pos);
    if (end > pos) return end;
    if ((end = jlex_number(l, pos))) return end;
    unsigned char c = (unsigned char)s[pos];
    if (jlex_name_char(c, 0)) {
        for (end = pos + 1; end < l->n && jlex_name_char((unsigned char)s[end], 1);) end++;
        if (end < l->n && (unsigned char)s[end] >= 0x80) jlex_fail(l, pos, "non-ASCII names are not supported");
        struct jtok *t = jlex_push(l, JT_NAME, pos);
        t->p = s + pos;
        t->n = end - pos;
        return end;
    }
    if (c >= 0x80) jlex_fail(l, pos, "non-ASCII names are not supported");
    if (c == '\'' || c == '"') return jlex_string(l, pos);
    return jlex_operator(l, pos);
}

/* The tokens of a {% %} or {{ }} tag from POS to its closing; the closing's end. */
static size_t jlex_tag(struct jlex *l, size_t open, size_t pos, int var) {
    l->depth = 0;
    for (;;) {
        if (pos >= l->n) jlex_fail(l, open, var ? "'{{' is never closed" : "'{%' is never closed");
        size_t end = l->depth ? 0 : jlex_close(l, pos, var);
        if (end) {
            jlex_push(l, var ? JT_VAR_END : JT_BLOCK_END, pos);
            return end;
        }
        pos = jlex_token(l, pos);
    }
}

/* The next tag from POS: the text before it, then the tag; the end of what was taken. */
static size_t jlex_step(struct jlex *l, size_t pos) {
    const char *s = l->s;
    const char *p = s + pos;
    while ((p = memchr(p, '{', l->n - (size_t)(p - s))) && (size_t)(p - s) + 1 < l->n && p[1] != '{' && p[1] != '%' &&
           p[1] != '#')
        p++;
    if (!p || (size_t)(p - s) + 1 >= l->n) {
        jlex_data(l, pos, l->n);
        return l->n;
    }
    size_t q = (size_t)(p - s), body = q + 2;
    char kind = s[q + 1], sign = body < l->n && (s[body] == '-' || s[body] == '+') ? s[body] : 0;
    size_t raw_end = kind == '%' ? jlex_raw_open(l, body + (sign != 0)) : 0;
    jlex_data(l, pos, jlex_text_end(l, pos, q, sign, kind != '{'));
    body += sign != 0;
    if (raw_end) return jlex_raw(l, q, raw_end);
    if (kind == '#') return jlex_comment(l, q, body);
    jlex_push(l, kind == '{' ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, q);
    return jlex_tag(l, q, body, kind == '{');
}

/* SRC with \r\n and \r as \n, less one trailing newline, in A. */
static char *jlex_normalize(struct jarena *a, const char *src, size_t n, size_t *out_n) {
    char *s = jarena_alloc(a, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r' && i + 1 < n && src[i + 1] == '\n') continue;
        s[k++] = src[i] == '\r' ? '\n' : src[i];
    }
    if (k && s[k - 1] == '\n') k--;
    s[k] = '\0';
    *out_n = k;
    return s;
}

struct jtok *jinja_lex(struct jarena *a, const char *src, size_t n, size_t *count) {
    struct jlex l = {.a = a, .line = 1, .line_starting = 1};
    if (!utf8_valid(src, n)) jarena_fail(a, "the template is not valid UTF-8");
    l.s = jlex_normalize(a, src, n, &l.n);
    while (l.pos < l.n) {
        size_t end = jlex_step(&l, l.pos);
        l.line_starting = end > l.pos && l.s[end - 1] == '\n';
        l.pos = end;
    }
    jlex_push(&l, JT_EOF, l.n);
    *count = l.count;
    return l.toks;
}
