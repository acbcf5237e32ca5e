/*
 * jinja_filter.c: the jinja2 filters and tests chat templates use (jinja_builtin.h),
 * with jinja2 3.1's parameters and results: select, reject, selectattr, rejectattr and
 * map give generators, items gives a dict_items view, and filters that want a str
 * take str() of anything (an Undefined gives "").
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_builtin.h"
#include "tok_text.h"

unsigned jargs_bind(struct jrt *r, const struct jnode *at, const char *fn, const struct jargs *args,
                    const char *const *params, size_t nparam, struct jv *out, struct jargs *rest) {
    unsigned have = 0;
    size_t fixed = nparam;
    for (size_t i = 0; i < nparam; i++)
        if (!strcmp(params[i], "*")) fixed = i;
    for (size_t i = 0; i < args->n; i++) {
        if (i < fixed) out[i] = args->v[i], have |= 1u << i;
        else if (fixed == nparam) jrt_fail(r, at, "%s() takes %zu positional arguments but %zu were given", fn, fixed, args->n);
    }
    if (rest) {
        *rest = (struct jargs){0};
        if (args->n > fixed) rest->v = args->v + fixed, rest->n = args->n - fixed;
    }
    for (size_t k = 0; k < args->m; k++) {
        size_t i = 0;
        while (i < nparam && strcmp(params[i], args->kw[k])) i++;
        if (i >= fixed) jrt_fail(r, at, "%s() got an unexpected keyword argument '%s'", fn, args->kw[k]);
        if (have & (1u << i)) jrt_fail(r, at, "%s() got multiple values for argument '%s'", fn, args->kw[k]);
        out[i] = args->kv[k], have |= 1u << i;
    }
    return have;
}

#define BIND(fn, ...)                                                                                 \
    static const char *const params[] = {__VA_ARGS__};                                              \
    struct jv p[sizeof params / sizeof params[0]];                                                  \
    unsigned have = jargs_bind(r, at, fn, args, params, sizeof params / sizeof params[0], p, NULL); \
    (void)have

static int64_t jf_len(struct jrt *r, const struct jnode *at, struct jv v) {
    if (v.type == JV_STR) return (int64_t)jv_str_len(v);
    if (v.type == JV_LIST && v.sub != JV_SEQ_GEN) return (int64_t)v.u.l->n;
    if (v.type == JV_DICT || v.type == JV_NS) return (int64_t)v.u.d->n;
    if (v.type == JV_UNDEF) return 0;
    if (v.type == JV_LOOP) return (int64_t)v.u.loop->items->n;
    jrt_fail(r, at, "object of type '%s' has no len()", jv_type_name(v));
}

static struct jv jf_gen(struct jrt *r, const struct jlist *l) { return jv_seq(jrt_arena(r), JV_SEQ_GEN, l->v, l->n); }

/* An attribute path "a.b.0" of ITEM, each part through getitem, as jinja2's make_attrgetter. */
static struct jv jf_attr_path(struct jrt *r, const struct jnode *at, struct jv item, struct jv path) {
    if (path.type == JV_INT) return jrt_getitem(r, at, item, path);
    if (path.type != JV_STR) jrt_fail(r, at, "the attribute must be a str or an int, not %s", jv_type_name(path));
    const char *p = path.u.s.p, *end = p + path.u.s.n;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *e = dot ? dot : end;
        int digits = e > p && e - p < 18; /* a number part is an index, as jinja2's str.isdigit() */
        int64_t k = 0;
        for (const char *c = p; digits && c < e; c++) digits = *c >= '0' && *c <= '9', k = k * 10 + (*c - '0');
        struct jv part = digits ? jv_int(k) : jv_strn(p, (size_t)(e - p));
        if (item.type == JV_UNDEF) return item;
        item = jrt_getitem(r, at, item, part);
        if (!dot) return item;
        p = dot + 1;
    }
}

/* select, reject, selectattr and rejectattr: KEEP is 1 for select; ATTR: the *attr forms. */
static struct jv jf_select(struct jrt *r, const struct jnode *at, struct jv seq, const struct jargs *args, int keep, int attr) {
    if (args->m) jrt_fail(r, at, "keyword arguments to select and reject are not supported");
    if ((size_t)attr > args->n) jrt_fail(r, at, "selectattr and rejectattr need an attribute");
    struct jargs targs = {.v = args->v + attr + 1, .n = args->n > (size_t)attr + 1 ? args->n - attr - 1 : 0};
    struct jlist items = jrt_iterate(r, at, seq), out = {.v = jarena_alloc(jrt_arena(r), (items.n + 1) * sizeof(struct jv))};
    for (size_t i = 0; i < items.n; i++) {
        struct jv v = attr ? jf_attr_path(r, at, items.v[i], args->v[0]) : items.v[i];
        int ok = args->n > (size_t)attr ? jinja_test_named(r, at, args->v[attr], v, &targs) : jv_truthy(v);
        if (ok == keep) out.v[out.n++] = items.v[i];
        jrt_step(r, at);
    }
    return jf_gen(r, &out);
}

static struct jv jf_map(struct jrt *r, const struct jnode *at, struct jv seq, const struct jargs *args) {
    struct jlist items = jrt_iterate(r, at, seq), out = {.v = jarena_alloc(jrt_arena(r), (items.n + 1) * sizeof(struct jv))};
    struct jv attr = {0}, dflt = {0};
    int by_attr = 0, have_default = 0;
    for (size_t k = 0; k < args->m; k++) {
        if (!strcmp(args->kw[k], "attribute")) attr = args->kv[k], by_attr = 1;
        else if (!strcmp(args->kw[k], "default")) dflt = args->kv[k], have_default = 1;
        else if (!by_attr) jrt_fail(r, at, "map: keyword arguments to a mapped filter are not supported");
    }
    if (!by_attr && (!args->n || args->v[0].type != JV_STR)) jrt_fail(r, at, "map needs a filter name or attribute=");
    int id = by_attr ? -1 : jinja_filter_id(args->v[0].u.s.p, args->v[0].u.s.n);
    if (!by_attr && id < 0) jrt_fail(r, at, "map: no supported filter named '%.*s'", (int)args->v[0].u.s.n, args->v[0].u.s.p);
    struct jargs fargs = {.v = args->v + 1, .n = args->n ? args->n - 1 : 0};
    for (size_t i = 0; i < items.n; i++, out.n++) {
        if (!by_attr) {
            out.v[i] = jinja_filter(r, at, id, items.v[i], &fargs);
            continue;
        }
        out.v[i] = jf_attr_path(r, at, items.v[i], attr);
        if (have_default && out.v[i].type == JV_UNDEF) out.v[i] = dflt;
    }
    return jf_gen(r, &out);
}

static struct jv jf_join(struct jrt *r, const struct jnode *at, struct jv seq, const struct jargs *args) {
    BIND("join", "d", "attribute");
    struct jlist items = jrt_iterate(r, at, seq);
    struct jv sep = have & 1 ? jv_to_str(jrt_arena(r), p[0]) : jv_strn("", 0);
    struct jbuf b = {0};
    jbuf_put(jrt_arena(r), &b, "", 0);
    for (size_t i = 0; i < items.n; i++) {
        if (i) jbuf_put(jrt_arena(r), &b, sep.u.s.p, sep.u.s.n);
        struct jv v = have & 2 ? jf_attr_path(r, at, items.v[i], p[1]) : items.v[i];
        jv_str(jrt_arena(r), &b, v);
    }
    return jbuf_value(&b);
}

static struct jv jf_items(struct jrt *r, const struct jnode *at, struct jv v) {
    if (v.type == JV_UNDEF) return jv_seq(jrt_arena(r), JV_SEQ_LIST, NULL, 0);
    if (v.type != JV_DICT) jrt_fail(r, at, "Can only get item pairs from a mapping.");
    return jinja_call(r, at, jinja_method(r, v, "items", 5).u.fn, &(struct jargs){0});
}

/* jinja2's title: each word's first character upper, the rest lower, words split at
 * runs of white space and -({[<. */
static struct jv jf_title(struct jrt *r, struct jv s) {
    struct jbuf b = {0};
    jbuf_put(jrt_arena(r), &b, "", 0);
    size_t word = 0, i = 0;
    for (size_t len; i <= s.u.s.n; i += len) {
        int32_t c = i < s.u.s.n ? utf8_decode(s.u.s.p + i, s.u.s.n - i, &len) : (len = 1, ' ');
        if (!(jv_py_space(c) || (c < 0x80 && strchr("-({[<", (char)c)))) continue;
        if (i > word) {
            struct jv w = jinja_str_case(r, jv_strn(s.u.s.p + word, i - word), 'c');
            jbuf_put(jrt_arena(r), &b, w.u.s.p, w.u.s.n);
        }
        if (i < s.u.s.n) jbuf_put(jrt_arena(r), &b, s.u.s.p + i, len);
        word = i + len;
    }
    return jbuf_value(&b);
}

/* jinja2's indent: lines after the first (and the first when FIRST) get WIDTH. */
static struct jv jf_indent(struct jrt *r, const struct jnode *at, struct jv s, const struct jargs *args) {
    BIND("indent", "width", "first", "blank");
    struct jarena *a = jrt_arena(r);
    struct jv ind = jv_strn("    ", 4);
    if (have & 1 && p[0].type == JV_STR) ind = p[0];
    else if (have & 1) {
        if (p[0].type != JV_INT || p[0].u.i < 0 || p[0].u.i > 4096) jrt_fail(r, at, "indent: width must be a str or an int in [0, 4096]");
        char *sp = jarena_alloc(a, (size_t)p[0].u.i + 1);
        memset(sp, ' ', (size_t)p[0].u.i);
        ind = jv_strn(sp, (size_t)p[0].u.i);
    }
    int first = have & 2 && jv_truthy(p[1]), blank = have & 4 && jv_truthy(p[2]);
    struct jbuf text = {0}, b = {0};
    jv_str(a, &text, s);
    jbuf_put(a, &text, "\n", 1);
    jbuf_put(a, &b, "", 0);
    if (first) jbuf_put(a, &b, ind.u.s.p, ind.u.s.n);
    size_t line = 0, nl = 0;
    for (size_t i = 0; i < text.n; i++) {
        unsigned char c = (unsigned char)text.p[i];
        size_t brk = c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e) ? 1 : 0;
        if (c == 0xC2 && i + 1 < text.n && (unsigned char)text.p[i + 1] == 0x85) brk = 2;
        if (c == 0xE2 && i + 2 < text.n && (unsigned char)text.p[i + 1] == 0x80 && ((unsigned char)text.p[i + 2] | 1) == 0xA9) brk = 3;
        if (!brk) continue;
        if (nl++) {
            jbuf_put(a, &b, "\n", 1);
            if (blank || i > line) jbuf_put(a, &b, ind.u.s.p, ind.u.s.n);
        }
        jbuf_put(a, &b, text.p + line, i - line);
        if (c == '\r' && i + 1 < text.n && text.p[i + 1] == '\n') brk = 2;
        i += brk - 1;
        line = i + 1;
    }
    return jbuf_value(&b);
}

/* Python's int() of a str (white space, sign, underscores); 0 when it is not one. */
static int jf_parse_int(struct jv s, int64_t *out) {
    char buf[64];
    size_t k = 0;
    for (size_t i = 0; i < s.u.s.n && k + 1 < sizeof buf; i++)
        if (s.u.s.p[i] != '_') buf[k++] = s.u.s.p[i];
    buf[k] = '\0';
    char *end;
    long long v = strtoll(buf, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\n') end++;
    if (end == buf || *end || k == sizeof buf - 1) return 0;
    *out = v;
    return 1;
}

static int jf_parse_float(struct jv s, double *out) {
    char buf[64];
    if (s.u.s.n >= sizeof buf) return 0;
    memcpy(buf, s.u.s.p, s.u.s.n);
    buf[s.u.s.n] = '\0';
    char *end;
    double v = strtod(buf, &end);
    while (*end == ' ' || *end == '\t' || *end == '\n') end++;
    if (end == buf || *end) return 0;
    *out = v;
    return 1;
}

static struct jv jf_number(struct jrt *r, const struct jnode *at, struct jv v, const struct jargs *args, int integer) {
    BIND(integer ? "int" : "float", "default", "base");
    struct jv dflt = have & 1 ? p[0] : integer ? jv_int(0) : jv_float(0);
    if (integer && have & 2 && !(p[1].type == JV_INT && p[1].u.i == 10)) jrt_fail(r, at, "int: a base other than 10 is not supported");
    int64_t i;
    double f;
    if (v.type == JV_BOOL || v.type == JV_INT) return integer ? jv_int(v.u.i) : jv_float((double)v.u.i);
    if (v.type == JV_FLOAT) return integer ? (v.u.f == v.u.f && __builtin_fabs(v.u.f) < 9e18 ? jv_int((int64_t)v.u.f) : dflt) : v;
    if (v.type == JV_STR && integer && jf_parse_int(v, &i)) return jv_int(i);
    if (v.type == JV_STR && jf_parse_float(v, &f))
        return integer ? (f == f && __builtin_fabs(f) < 9e18 ? jv_int((int64_t)f) : dflt) : jv_float(f);
    return dflt;
}

static struct jv jf_first_last(struct jrt *r, const struct jnode *at, struct jv v, int last) {
    if (last && v.type == JV_LIST && v.sub == JV_SEQ_GEN) jrt_fail(r, at, "'generator' object is not reversible");
    struct jlist items = jrt_iterate(r, at, v);
    if (!items.n) return jv_undef(last ? "No last item, sequence was empty." : "No first item, sequence was empty.");
    return items.v[last ? items.n - 1 : 0];
}

static struct jv jf_reverse(struct jrt *r, const struct jnode *at, struct jv v) {
    struct jlist items = jrt_iterate(r, at, v);
    struct jv out = jv_seq(jrt_arena(r), v.type == JV_LIST && v.sub == JV_SEQ_GEN ? JV_SEQ_LIST : JV_SEQ_GEN, NULL, 0);
    out.u.l->v = jarena_alloc(jrt_arena(r), (items.n + 1) * sizeof(struct jv));
    for (size_t i = 0; i < items.n; i++) out.u.l->v[i] = items.v[items.n - 1 - i];
    out.u.l->n = items.n;
    if (v.type != JV_STR) return out;
    struct jbuf b = {0};
    jbuf_put(jrt_arena(r), &b, "", 0);
    for (size_t i = 0; i < items.n; i++) jbuf_put(jrt_arena(r), &b, out.u.l->v[i].u.s.p, out.u.l->v[i].u.s.n);
    return jbuf_value(&b);
}

enum {
    JF_ABS, JF_CAPITALIZE, JF_COUNT, JF_D, JF_DEFAULT, JF_FIRST, JF_FLOAT, JF_INDENT, JF_INT, JF_ITEMS, JF_JOIN,
    JF_LAST, JF_LENGTH, JF_LIST, JF_LOWER, JF_MAP, JF_REJECT, JF_REJECTATTR, JF_REPLACE, JF_REVERSE, JF_SELECT,
    JF_SELECTATTR, JF_STRING, JF_TITLE, JF_TOJSON, JF_TRIM, JF_UPPER, JF_COUNT_OF
};

static const char *const jf_names[JF_COUNT_OF] = {
    "abs", "capitalize", "count", "d", "default", "first", "float", "indent", "int", "items", "join", "last", "length",
    "list", "lower", "map", "reject", "rejectattr", "replace", "reverse", "select", "selectattr", "string", "title",
    "tojson", "trim", "upper"};

/* jinja2's other filters: refused by name. */
static const char *const jf_unsupported[] = {"attr", "batch", "center", "dictsort", "e", "escape", "filesizeformat",
                                             "forceescape", "format", "groupby", "max", "min", "pprint", "random",
                                             "round", "safe", "slice", "sort", "striptags", "sum", "truncate",
                                             "unique", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", NULL};

static int jf_lookup(const char *const *names, size_t count, const char *const *unsupported, const char *name, size_t n) {
    for (size_t i = 0; i < count; i++)
        if (strlen(names[i]) == n && !memcmp(names[i], name, n)) return (int)i;
    for (const char *const *u = unsupported; *u; u++)
        if (strlen(*u) == n && !memcmp(*u, name, n)) return -2;
    return -1;
}

int jinja_filter_id(const char *name, size_t n) { return jf_lookup(jf_names, JF_COUNT_OF, jf_unsupported, name, n); }

static struct jv jf_tojson(struct jrt *r, const struct jnode *at, struct jv v, const struct jargs *args) {
    BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
    if (have & 1 && jv_truthy(p[0])) jrt_fail(r, at, "tojson: ensure_ascii=True is not supported");
    return jinja_tojson(r, at, v, have & 2 ? p[1] : jv_none(), have & 4 ? p[2] : jv_none(), have & 8 && jv_truthy(p[3]));
}

static struct jv jf_str_filter(struct jrt *r, const struct jnode *at, int id, struct jv v, const struct jargs *args) {
    struct jv s = jv_to_str(jrt_arena(r), v);
    switch (id) {
    case JF_TRIM: {
        BIND("trim", "chars");
        return jinja_str_strip(r, s, have & 1 && p[0].type != JV_NONE ? &p[0] : NULL, 1, 1);
    }
    case JF_REPLACE: {
        BIND("replace", "old", "new", "count");
        if ((have & 3) != 3) jrt_fail(r, at, "replace needs old and new");
        if (have & 4 && p[2].type != JV_NONE && p[2].type != JV_INT) jrt_fail(r, at, "replace: the count must be an int");
        int64_t count = have & 4 && p[2].type != JV_NONE ? p[2].u.i : -1;
        return jinja_str_replace(r, at, s, jv_to_str(jrt_arena(r), p[0]), jv_to_str(jrt_arena(r), p[1]), count);
    }
    case JF_TITLE: return jf_title(r, s);
    case JF_INDENT: return jf_indent(r, at, s, args);
    case JF_STRING: return s;
    default: return jinja_str_case(r, s, id == JF_UPPER ? 'u' : id == JF_LOWER ? 'l' : 'c');
    }
}

struct jv jinja_filter(struct jrt *r, const struct jnode *at, int id, struct jv v, const struct jargs *args) {
    switch (id) {
    case JF_D:
    case JF_DEFAULT: {
        BIND("default", "default_value", "boolean");
        int use = v.type == JV_UNDEF || (have & 2 && jv_truthy(p[1]) && !jv_truthy(v));
        return use ? (have & 1 ? p[0] : jv_strn("", 0)) : v;
    }
    case JF_LENGTH:
    case JF_COUNT: return jv_int(jf_len(r, at, v));
    case JF_TOJSON: return jf_tojson(r, at, v, args);
    case JF_ITEMS: return jf_items(r, at, v);
    case JF_JOIN: return jf_join(r, at, v, args);
    case JF_SELECT:
    case JF_REJECT: return jf_select(r, at, v, args, id == JF_SELECT, 0);
    case JF_SELECTATTR:
    case JF_REJECTATTR: return jf_select(r, at, v, args, id == JF_SELECTATTR, 1);
    case JF_MAP: return jf_map(r, at, v, args);
    case JF_FIRST:
    case JF_LAST: return jf_first_last(r, at, v, id == JF_LAST);
    case JF_LIST: {
        struct jlist items = jrt_iterate(r, at, v);
        return jv_seq(jrt_arena(r), JV_SEQ_LIST, items.v, items.n);
    }
    case JF_INT:
    case JF_FLOAT: return jf_number(r, at, v, args, id == JF_INT);
    case JF_REVERSE: return jf_reverse(r, at, v);
    case JF_ABS:
        if (v.type == JV_FLOAT) return jv_float(__builtin_fabs(v.u.f));
        if (v.type == JV_INT || v.type == JV_BOOL) {
            if (v.u.i == INT64_MIN) jrt_fail(r, at, "integer overflow (lorad's templates hold 64-bit integers)");
            return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        }
        jrt_fail(r, at, "bad operand type for abs(): '%s'", jv_type_name(v));
    default: return jf_str_filter(r, at, id, v, args);
    }
}

/* ---- tests ---- */

enum {
    JT_BOOLEAN, JT_CALLABLE, JT_DEFINED, JT_DIVISIBLEBY, JT_EQ, JT_EQUALTO, JT_EVEN, JT_FALSE, JT_FLOAT_T, JT_GE,
    JT_GT, JT_GREATERTHAN, JT_IN, JT_INTEGER, JT_ITERABLE, JT_LE, JT_LESSTHAN, JT_LOWER_T, JT_LT, JT_MAPPING, JT_NE,
    JT_NONE, JT_NUMBER, JT_ODD, JT_SAMEAS, JT_SEQUENCE, JT_STRING_T, JT_TRUE, JT_UNDEFINED, JT_UPPER_T, JT_OP_EQ,
    JT_OP_NE, JT_OP_LT, JT_OP_LE, JT_OP_GT, JT_OP_GE, JT_COUNT_OF
};

static const char *const jt_names[JT_COUNT_OF] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge", "gt",
    "greaterthan", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number",
    "odd", "sameas", "sequence", "string", "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">="};
static const char *const jt_unsupported[] = {"escaped", "filter", "test", NULL};

int jinja_test_id(const char *name, size_t n) { return jf_lookup(jt_names, JT_COUNT_OF, jt_unsupported, name, n); }

/* The comparison tests as their operator (the ids of jinja_syntax.h). */
static int jt_compare_op(int id) {
    switch (id) {
    case JT_EQ: case JT_EQUALTO: case JT_OP_EQ: return JOP_EQ;
    case JT_NE: case JT_OP_NE: return JOP_NE;
    case JT_LT: case JT_LESSTHAN: case JT_OP_LT: return JOP_LT;
    case JT_LE: case JT_OP_LE: return JOP_LTEQ;
    case JT_GT: case JT_GREATERTHAN: case JT_OP_GT: return JOP_GT;
    case JT_GE: case JT_OP_GE: return JOP_GTEQ;
    default: return -1;
    }
}

static int jt_compare(struct jrt *r, const struct jnode *at, int op, struct jv a, struct jv b) {
    if (op == JOP_EQ) return jv_equal(a, b);
    if (op == JOP_NE) return !jv_equal(a, b);
    if (a.type == JV_UNDEF) jrt_undefined(r, at, a);
    if (b.type == JV_UNDEF) jrt_undefined(r, at, b);
    int c;
    if (jv_order(a, b, &c)) jrt_fail(r, at, "'%s' and '%s' cannot be compared", jv_type_name(a), jv_type_name(b));
    return op == JOP_LT ? c < 0 : op == JOP_LTEQ ? c <= 0 : op == JOP_GT ? c > 0 : c >= 0;
}

/* Whether the int V is divisible by M. */
static int jt_divisible(struct jrt *r, const struct jnode *at, struct jv v, int64_t m) {
    if (v.type != JV_INT && v.type != JV_BOOL) jrt_fail(r, at, "the value must be an integer, not %s", jv_type_name(v));
    if (m == 0) jrt_fail(r, at, "integer division or modulo by zero");
    return m == -1 || v.u.i % m == 0;
}

static int jt_case(struct jrt *r, struct jv v, int upper) {
    struct jv s = jv_to_str(jrt_arena(r), v);
    struct jv t = jinja_str_case(r, s, upper ? 'l' : 'u'), same = jinja_str_case(r, s, upper ? 'u' : 'l');
    return !jv_equal(s, t) && jv_equal(s, same);
}

int jinja_test(struct jrt *r, const struct jnode *at, int id, struct jv v, const struct jargs *args) {
    int op = jt_compare_op(id);
    struct jv arg = args->n ? args->v[0] : args->m ? args->kv[0] : jv_undef("the test needs an argument");
    if ((op >= 0 || id == JT_IN || id == JT_DIVISIBLEBY || id == JT_SAMEAS) && args->n + args->m != 1)
        jrt_fail(r, at, "the test '%s' takes one argument", jt_names[id]);
    if (op >= 0) return jt_compare(r, at, op, v, arg);
    switch (id) {
    case JT_BOOLEAN: return v.type == JV_BOOL;
    case JT_CALLABLE: return v.type == JV_FUNC;
    case JT_DEFINED: return v.type != JV_UNDEF;
    case JT_UNDEFINED: return v.type == JV_UNDEF;
    case JT_DIVISIBLEBY:
        if (arg.type != JV_INT) jrt_fail(r, at, "divisibleby needs an integer");
        return jt_divisible(r, at, v, arg.u.i);
    case JT_EVEN: return jt_divisible(r, at, v, 2);
    case JT_ODD: return !jt_divisible(r, at, v, 2);
    case JT_FALSE: return v.type == JV_BOOL && !v.u.i;
    case JT_TRUE: return v.type == JV_BOOL && v.u.i;
    case JT_FLOAT_T: return v.type == JV_FLOAT;
    case JT_INTEGER: return v.type == JV_INT;
    case JT_NUMBER: return jv_is_num(v);
    case JT_STRING_T: return v.type == JV_STR;
    case JT_NONE: return v.type == JV_NONE;
    case JT_MAPPING: return v.type == JV_DICT;
    case JT_ITERABLE: return v.type == JV_STR || v.type == JV_LIST || v.type == JV_DICT || v.type == JV_UNDEF || v.type == JV_LOOP;
    case JT_SEQUENCE: return v.type == JV_STR || (v.type == JV_LIST && v.sub <= JV_SEQ_TUPLE) || v.type == JV_DICT || v.type == JV_UNDEF;
    case JT_SAMEAS: return v.type == arg.type && (v.type == JV_LIST || v.type == JV_DICT ? v.u.l == arg.u.l : jv_equal(v, arg));
    case JT_IN: {
        if (arg.type == JV_STR && v.type == JV_STR)
            return !v.u.s.n || memmem(arg.u.s.p, arg.u.s.n, v.u.s.p, v.u.s.n) != NULL;
        if (arg.type == JV_DICT) return jv_dict_get(arg, v) != NULL;
        struct jlist l = jrt_iterate(r, at, arg);
        for (size_t i = 0; i < l.n; i++)
            if (jv_equal(l.v[i], v)) return 1;
        return 0;
    }
    case JT_LOWER_T: return jt_case(r, v, 0);
    default: return jt_case(r, v, 1);
    }
}

int jinja_test_named(struct jrt *r, const struct jnode *at, struct jv name, struct jv v, const struct jargs *args) {
    if (name.type != JV_STR) jrt_fail(r, at, "the test name must be a str");
    int id = jinja_test_id(name.u.s.p, name.u.s.n);
    if (id < 0)
        jrt_fail(r, at, id == -1 ? "no test named '%.*s'" : "the test '%.*s' is not supported",
                 (int)(name.u.s.n > 40 ? 40 : name.u.s.n), name.u.s.p);
    return jinja_test(r, at, id, v, args);
}
