/*
 * jinja_json.c: Hugging Face's tojson filter (jinja_builtin.h): Python's
 * json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...), byte
 * for byte: its separators with and without indent, its escapes, float repr, NaN and
 * Infinity, key conversion, and "Object of type X is not JSON serializable".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_builtin.h"

struct jjson {
    struct jrt *r;
    const struct jnode *at;
    struct jbuf *b;
    struct jv indent; /* a str, or JV_NONE */
    struct jv item_sep, key_sep;
    int sort;
};

static void jj_put(struct jjson *j, const char *s, size_t n) { jbuf_put(jrt_arena(j->r), j->b, s, n); }
static void jj_puts(struct jjson *j, const char *s) { jj_put(j, s, strlen(s)); }

static void jj_string(struct jjson *j, struct jv s) {
    jj_puts(j, "\"");
    size_t run = 0;
    for (size_t i = 0; i < s.u.s.n; i++) {
        unsigned char c = (unsigned char)s.u.s.p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jj_put(j, s.u.s.p + run, i - run);
        char esc[8];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                      : c == '\b' ? "\\b" : c == '\f' ? "\\f" : (snprintf(esc, sizeof esc, "\\u%04x", c), esc);
        jj_puts(j, e);
        run = i + 1;
    }
    jj_put(j, s.u.s.p + run, s.u.s.n - run);
    jj_puts(j, "\"");
}

static void jj_float(struct jjson *j, double f) {
    char num[32];
    if (isnan(f)) strcpy(num, "NaN");
    else if (isinf(f)) strcpy(num, f < 0 ? "-Infinity" : "Infinity");
    else jv_float_repr(f, num);
    jj_puts(j, num);
}

static void jj_newline(struct jjson *j, int level) {
    jj_puts(j, "\n");
    for (int i = 0; i < level; i++) jj_put(j, j->indent.u.s.p, j->indent.u.s.n);
}

static void jj_value(struct jjson *j, struct jv v, int level);

/* A dict key as json.dumps converts it: str as is; int, float, bool, None to text. */
static void jj_key(struct jjson *j, struct jv k) {
    char num[32];
    switch (k.type) {
    case JV_STR: jj_string(j, k); return;
    case JV_BOOL: jj_puts(j, k.u.i ? "\"true\"" : "\"false\""); return;
    case JV_NONE: jj_puts(j, "\"null\""); return;
    case JV_INT: snprintf(num, sizeof num, "\"%lld\"", (long long)k.u.i), jj_puts(j, num); return;
    case JV_FLOAT: jj_puts(j, "\""), jj_float(j, k.u.f), jj_puts(j, "\""); return;
    default: jrt_fail(j->r, j->at, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
    }
}

static int jj_cmp_keys(const void *x, const void *y) {
    const struct jv *a = x, *b = y;
    int c = 0;
    jv_order(a[0], b[0], &c);
    return c;
}

static void jj_cmp_keys_checked(const struct jjson *j, struct jv a, struct jv b) {
    int c;
    if (jv_order(a, b, &c))
        jrt_fail(j->r, j->at, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a), jv_type_name(b));
}

static void jj_dict(struct jjson *j, const struct jdict *d, int level) {
    if (!d->n) {
        jj_puts(j, "{}");
        return;
    }
    struct jv *pairs = jarena_alloc(jrt_arena(j->r), 2 * d->n * sizeof *pairs);
    for (size_t i = 0; i < d->n; i++) pairs[2 * i] = d->k[i], pairs[2 * i + 1] = d->v[i];
    if (j->sort) { /* keys that cannot be ordered fail here, before qsort */
        for (size_t i = 1; i < d->n; i++) jj_cmp_keys_checked(j, pairs[0], pairs[2 * i]);
        qsort(pairs, d->n, 2 * sizeof *pairs, jj_cmp_keys); /* the keys are unique, so the order is total */
    }
    jj_puts(j, "{");
    for (size_t i = 0; i < d->n; i++) {
        if (i) jj_put(j, j->item_sep.u.s.p, j->item_sep.u.s.n);
        if (j->indent.type == JV_STR) jj_newline(j, level + 1);
        jj_key(j, pairs[2 * i]);
        jj_put(j, j->key_sep.u.s.p, j->key_sep.u.s.n);
        jj_value(j, pairs[2 * i + 1], level + 1);
    }
    if (j->indent.type == JV_STR) jj_newline(j, level);
    jj_puts(j, "}");
}

static void jj_list(struct jjson *j, const struct jlist *l, int level) {
    if (!l->n) {
        jj_puts(j, "[]");
        return;
    }
    jj_puts(j, "[");
    for (size_t i = 0; i < l->n; i++) {
        if (i) jj_put(j, j->item_sep.u.s.p, j->item_sep.u.s.n);
        if (j->indent.type == JV_STR) jj_newline(j, level + 1);
        jj_value(j, l->v[i], level + 1);
    }
    if (j->indent.type == JV_STR) jj_newline(j, level);
    jj_puts(j, "]");
}

static void jj_value(struct jjson *j, struct jv v, int level) {
    char num[32];
    jrt_step(j->r, j->at);
    if (level > JV_MAX_DEPTH) jrt_fail(j->r, j->at, "tojson: a value nested more than %d deep", JV_MAX_DEPTH);
    switch (v.type) {
    case JV_NONE: jj_puts(j, "null"); return;
    case JV_BOOL: jj_puts(j, v.u.i ? "true" : "false"); return;
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i), jj_puts(j, num); return;
    case JV_FLOAT: jj_float(j, v.u.f); return;
    case JV_STR: jj_string(j, v); return;
    case JV_DICT: jj_dict(j, v.u.d, level); return;
    case JV_LIST:
        if (v.sub <= JV_SEQ_TUPLE) {
            jj_list(j, v.u.l, level);
            return;
        }
        /* fall through */
    default: jrt_fail(j->r, j->at, "Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

struct jv jinja_tojson(struct jrt *r, const struct jnode *at, struct jv v, struct jv indent, struct jv seps, int sort) {
    struct jarena *a = jrt_arena(r);
    struct jbuf b = {0};
    struct jjson j = {.r = r, .at = at, .b = &b, .indent = jv_none(), .sort = sort};
    if (indent.type == JV_INT || indent.type == JV_BOOL) {
        int64_t n = indent.u.i < 0 ? 0 : indent.u.i;
        if (n > 4096) jrt_fail(r, at, "tojson: indent above 4096 is not supported");
        char *sp = jarena_alloc(a, (size_t)n + 1);
        memset(sp, ' ', (size_t)n);
        j.indent = jv_strn(sp, (size_t)n);
    } else if (indent.type == JV_STR) j.indent = indent;
    else if (indent.type != JV_NONE) jrt_fail(r, at, "tojson: indent must be an int, a str or None");
    j.item_sep = jv_strn(j.indent.type == JV_STR ? "," : ", ", j.indent.type == JV_STR ? 1 : 2);
    j.key_sep = jv_strn(": ", 2);
    if (seps.type != JV_NONE) {
        if (seps.type != JV_LIST || seps.sub > JV_SEQ_TUPLE || seps.u.l->n != 2 || seps.u.l->v[0].type != JV_STR ||
            seps.u.l->v[1].type != JV_STR)
            jrt_fail(r, at, "tojson: separators must be a pair of str");
        j.item_sep = seps.u.l->v[0], j.key_sep = seps.u.l->v[1];
    }
    jbuf_put(a, &b, "", 0);
    jj_value(&j, v, 0);
    return jbuf_value(&b);
}
