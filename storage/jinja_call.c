/*
 * jinja_call.c: what chat templates call (jinja_builtin.h): the globals of transformers'
 * environment (range, namespace, dict, raise_exception, strftime_now), the methods of
 * str (strip, split, startswith, replace, title, ...), of dict (items, keys, values,
 * get) and loop.cycle, with Python's semantics. Case mappings are Unicode's simple
 * ones (utf8proc), where Python also applies the few multi-character ones.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "jinja_builtin.h"
#include "tok_text.h"

enum {
    JC_RANGE, JC_NAMESPACE, JC_DICT, JC_RAISE, JC_STRFTIME, JC_UNSUPPORTED_GLOBAL,
    JC_STRIP, JC_LSTRIP, JC_RSTRIP, JC_SPLIT, JC_RSPLIT, JC_STARTSWITH, JC_ENDSWITH, JC_UPPER, JC_LOWER, JC_TITLE,
    JC_CAPITALIZE, JC_REPLACE, JC_FIND, JC_COUNT, JC_JOIN, JC_ISDIGIT, JC_ISSPACE,
    JC_ITEMS, JC_KEYS, JC_VALUES, JC_GET, JC_CYCLE,
};

static const struct {
    const char *name;
    int id, type; /* the type of self; JV_UNDEF for globals */
} jc_table[] = {
    {"range", JC_RANGE, JV_UNDEF}, {"namespace", JC_NAMESPACE, JV_UNDEF}, {"dict", JC_DICT, JV_UNDEF},
    {"raise_exception", JC_RAISE, JV_UNDEF}, {"strftime_now", JC_STRFTIME, JV_UNDEF},
    {"cycler", JC_UNSUPPORTED_GLOBAL, JV_UNDEF}, {"joiner", JC_UNSUPPORTED_GLOBAL, JV_UNDEF},
    {"lipsum", JC_UNSUPPORTED_GLOBAL, JV_UNDEF},
    {"strip", JC_STRIP, JV_STR}, {"lstrip", JC_LSTRIP, JV_STR}, {"rstrip", JC_RSTRIP, JV_STR},
    {"split", JC_SPLIT, JV_STR}, {"rsplit", JC_RSPLIT, JV_STR}, {"startswith", JC_STARTSWITH, JV_STR},
    {"endswith", JC_ENDSWITH, JV_STR}, {"upper", JC_UPPER, JV_STR}, {"lower", JC_LOWER, JV_STR},
    {"title", JC_TITLE, JV_STR}, {"capitalize", JC_CAPITALIZE, JV_STR}, {"replace", JC_REPLACE, JV_STR},
    {"find", JC_FIND, JV_STR}, {"count", JC_COUNT, JV_STR}, {"join", JC_JOIN, JV_STR},
    {"isdigit", JC_ISDIGIT, JV_STR}, {"isspace", JC_ISSPACE, JV_STR},
    {"items", JC_ITEMS, JV_DICT}, {"keys", JC_KEYS, JV_DICT}, {"values", JC_VALUES, JV_DICT}, {"get", JC_GET, JV_DICT},
    {"cycle", JC_CYCLE, JV_LOOP},
};
#define JC_COUNT_OF (sizeof jc_table / sizeof jc_table[0])

static struct jv jc_find(struct jrt *r, int type, struct jv self, const char *name, size_t n) {
    for (size_t i = 0; i < JC_COUNT_OF; i++)
        if (jc_table[i].type == type && strlen(jc_table[i].name) == n && !memcmp(jc_table[i].name, name, n))
            return jv_func(jrt_arena(r), (int)i, self);
    return jv_undef(NULL);
}

struct jv jinja_global(struct jrt *r, const char *name, size_t n) { return jc_find(r, JV_UNDEF, jv_none(), name, n); }
struct jv jinja_method(struct jrt *r, struct jv self, const char *name, size_t n) {
    return self.type == JV_UNDEF ? jv_undef(NULL) : jc_find(r, self.type, self, name, n);
}

/* ---- str ---- */

/* Whether code point C is in the str CHARS (NULL: Python white space). */
static int jc_in_chars(int32_t c, const struct jv *chars) {
    if (!chars) return jv_py_space(c);
    char u[4];
    size_t k = utf8_encode(c, u);
    for (size_t i = 0, len; i < chars->u.s.n; i += len) {
        len = utf8_char_len((unsigned char)chars->u.s.p[i]);
        if (len == k && !memcmp(chars->u.s.p + i, u, k)) return 1;
    }
    return 0;
}

struct jv jinja_str_strip(struct jrt *r, struct jv s, const struct jv *chars, int left, int right) {
    (void)r;
    size_t start = 0, end = s.u.s.n, len;
    while (left && start < end && jc_in_chars(utf8_decode(s.u.s.p + start, end - start, &len), chars)) start += len;
    while (right && end > start) {
        size_t b = end - 1;
        while (b > start && ((unsigned char)s.u.s.p[b] & 0xC0) == 0x80) b--;
        if (!jc_in_chars(utf8_decode(s.u.s.p + b, end - b, &len), chars)) break;
        end = b;
    }
    return jv_strn(s.u.s.p + start, end - start);
}

static int jc_cased(int32_t c) {
    int cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

struct jv jinja_str_case(struct jrt *r, struct jv s, int how) {
    struct jbuf b = {0};
    jbuf_put(jrt_arena(r), &b, "", 0);
    int prev_cased = 0;
    for (size_t i = 0, len; i < s.u.s.n; i += len) {
        int32_t c = utf8_decode(s.u.s.p + i, s.u.s.n - i, &len), m;
        if (how == 'u') m = utf8proc_toupper(c);
        else if (how == 'l') m = utf8proc_tolower(c);
        else if (how == 'c') m = i ? utf8proc_tolower(c) : utf8proc_totitle(c);
        else m = prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c);
        prev_cased = jc_cased(c);
        char u[4];
        jbuf_put(jrt_arena(r), &b, u, utf8_encode(m, u));
    }
    return jbuf_value(&b);
}

struct jv jinja_str_replace(struct jrt *r, const struct jnode *at, struct jv s, struct jv old, struct jv new_,
                            int64_t count) {
    struct jarena *a = jrt_arena(r);
    struct jbuf b = {0};
    jbuf_put(a, &b, "", 0);
    size_t i = 0;
    for (int64_t done = 0; count < 0 || done < count; done++) {
        jrt_step(r, at);
        if (!old.u.s.n) { /* an empty OLD matches before every character and at the end */
            jbuf_put(a, &b, new_.u.s.p, new_.u.s.n);
            if (i >= s.u.s.n) {
                i = s.u.s.n + 1;
                break;
            }
            size_t len = utf8_char_len((unsigned char)s.u.s.p[i]);
            jbuf_put(a, &b, s.u.s.p + i, len);
            i += len;
            continue;
        }
        const char *hit = memmem(s.u.s.p + i, s.u.s.n - i, old.u.s.p, old.u.s.n);
        if (!hit) break;
        jbuf_put(a, &b, s.u.s.p + i, (size_t)(hit - (s.u.s.p + i)));
        jbuf_put(a, &b, new_.u.s.p, new_.u.s.n);
        i = (size_t)(hit - s.u.s.p) + old.u.s.n;
    }
    if (i < s.u.s.n) jbuf_put(a, &b, s.u.s.p + i, s.u.s.n - i);
    return jbuf_value(&b);
}

static struct jv jc_list_of(struct jrt *r, struct jv *items, size_t n) { return jv_seq(jrt_arena(r), JV_SEQ_LIST, items, n); }

/* str.split and str.rsplit (RIGHT): on SEP, or on runs of white space when SEP is None. */
static struct jv jc_split(struct jrt *r, const struct jnode *at, struct jv s, struct jv sep, int64_t maxsplit, int right) {
    if (sep.type == JV_STR && !sep.u.s.n) jrt_fail(r, at, "empty separator");
    struct jv *parts = jarena_alloc(jrt_arena(r), (s.u.s.n + 2) * sizeof *parts);
    size_t n = 0;
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    if (sep.type == JV_STR && !right) {
        for (const char *hit; (maxsplit < 0 || (int64_t)n < maxsplit) && (hit = memmem(p, (size_t)(end - p), sep.u.s.p, sep.u.s.n)); p = hit + sep.u.s.n)
            parts[n++] = jv_strn(p, (size_t)(hit - p));
        parts[n++] = jv_strn(p, (size_t)(end - p));
        return jc_list_of(r, parts, n);
    }
    if (sep.type == JV_STR) { /* rsplit: from the right, then reversed */
        const char *stop = end;
        for (int64_t k = 0; maxsplit < 0 || k < maxsplit; k++) {
            const char *hit = NULL;
            for (const char *q = p; (q = memmem(q, (size_t)(stop - q), sep.u.s.p, sep.u.s.n)) && q + sep.u.s.n <= stop; q++) hit = q;
            if (!hit) break;
            parts[n++] = jv_strn(hit + sep.u.s.n, (size_t)(stop - hit - sep.u.s.n));
            stop = hit;
        }
        parts[n++] = jv_strn(p, (size_t)(stop - p));
    } else {
        struct jv rest = s;
        for (;;) { /* words, trimmed from the side the split starts on */
            rest = jinja_str_strip(r, rest, NULL, !right, right);
            if (!rest.u.s.n) break;
            if (maxsplit >= 0 && (int64_t)n == maxsplit) {
                parts[n++] = rest;
                break;
            }
            size_t len, i = right ? rest.u.s.n : 0;
            if (!right) {
                while (i < rest.u.s.n && !jv_py_space(utf8_decode(rest.u.s.p + i, rest.u.s.n - i, &len))) i += len;
                parts[n++] = jv_strn(rest.u.s.p, i);
                rest = jv_strn(rest.u.s.p + i, rest.u.s.n - i);
            } else {
                while (i > 0) {
                    size_t b = i - 1;
                    while (b > 0 && ((unsigned char)rest.u.s.p[b] & 0xC0) == 0x80) b--;
                    if (jv_py_space(utf8_decode(rest.u.s.p + b, rest.u.s.n - b, &len))) break;
                    i = b;
                }
                parts[n++] = jv_strn(rest.u.s.p + i, rest.u.s.n - i);
                rest = jv_strn(rest.u.s.p, i);
            }
        }
        if (!right) return jc_list_of(r, parts, n);
    }
    for (size_t i = 0; i < n / 2; i++) {
        struct jv t = parts[i];
        parts[i] = parts[n - 1 - i], parts[n - 1 - i] = t;
    }
    return jc_list_of(r, parts, n);
}

/* str.startswith and str.endswith, with a str or a tuple of str. */
static int jc_affix(struct jrt *r, const struct jnode *at, struct jv s, struct jv fix, int end) {
    if (fix.type == JV_LIST && fix.sub == JV_SEQ_TUPLE) {
        for (size_t i = 0; i < fix.u.l->n; i++)
            if (jc_affix(r, at, s, fix.u.l->v[i], end)) return 1;
        return 0;
    }
    if (fix.type != JV_STR)
        jrt_fail(r, at, "%s first arg must be str or a tuple of str, not %s", end ? "endswith" : "startswith", jv_type_name(fix));
    if (fix.u.s.n > s.u.s.n) return 0;
    return !memcmp(s.u.s.p + (end ? s.u.s.n - fix.u.s.n : 0), fix.u.s.p, fix.u.s.n);
}

static struct jv jc_join(struct jrt *r, const struct jnode *at, struct jv sep, struct jv seq) {
    struct jlist items = jrt_iterate(r, at, seq);
    struct jbuf b = {0};
    jbuf_put(jrt_arena(r), &b, "", 0);
    for (size_t i = 0; i < items.n; i++) {
        if (items.v[i].type != JV_STR)
            jrt_fail(r, at, "sequence item %zu: expected str instance, %s found", i, jv_type_name(items.v[i]));
        if (i) jbuf_put(jrt_arena(r), &b, sep.u.s.p, sep.u.s.n);
        jbuf_put(jrt_arena(r), &b, items.v[i].u.s.p, items.v[i].u.s.n);
    }
    return jbuf_value(&b);
}

static struct jv jc_str_arg(struct jrt *r, const struct jnode *at, const char *fn, struct jv v) {
    if (v.type != JV_STR) jrt_fail(r, at, "%s: the argument must be str, not %s", fn, jv_type_name(v));
    return v;
}

static int64_t jc_int_arg(struct jrt *r, const struct jnode *at, const char *fn, struct jv v) {
    if (v.type != JV_INT && v.type != JV_BOOL) jrt_fail(r, at, "%s: the count must be an int, not %s", fn, jv_type_name(v));
    return v.u.i;
}

static int jc_all(struct jv s, int digits) {
    if (!s.u.s.n) return 0;
    for (size_t i = 0, len; i < s.u.s.n; i += len) {
        int32_t c = utf8_decode(s.u.s.p + i, s.u.s.n - i, &len);
        if (digits ? utf8proc_category(c) != UTF8PROC_CATEGORY_ND && !(c >= 0x2070 && c <= 0x2079) : !jv_py_space(c)) return 0;
    }
    return 1;
}

static struct jv jc_str_method(struct jrt *r, const struct jnode *at, int id, struct jv s, const struct jargs *args) {
    static const char *const params[] = {"a", "b", "c"};
    struct jv p[3];
    unsigned have = jargs_bind(r, at, jc_table[id].name, args, params, 3, p, NULL);
    switch (jc_table[id].id) {
    case JC_STRIP:
    case JC_LSTRIP:
    case JC_RSTRIP: {
        const struct jv *chars = have & 1 && p[0].type != JV_NONE ? &p[0] : NULL;
        if (chars) jc_str_arg(r, at, "strip", *chars);
        return jinja_str_strip(r, s, chars, jc_table[id].id != JC_RSTRIP, jc_table[id].id != JC_LSTRIP);
    }
    case JC_SPLIT:
    case JC_RSPLIT: {
        struct jv sep = have & 1 ? p[0] : jv_none();
        if (sep.type != JV_NONE) jc_str_arg(r, at, "split", sep);
        int64_t max = have & 2 ? jc_int_arg(r, at, "split", p[1]) : -1;
        return jc_split(r, at, s, sep, max, jc_table[id].id == JC_RSPLIT);
    }
    case JC_STARTSWITH:
    case JC_ENDSWITH:
        if (!(have & 1)) jrt_fail(r, at, "%s takes a prefix or suffix", jc_table[id].name);
        return jv_bool(jc_affix(r, at, s, p[0], jc_table[id].id == JC_ENDSWITH));
    case JC_UPPER: return jinja_str_case(r, s, 'u');
    case JC_LOWER: return jinja_str_case(r, s, 'l');
    case JC_TITLE: return jinja_str_case(r, s, 't');
    case JC_CAPITALIZE: return jinja_str_case(r, s, 'c');
    case JC_REPLACE:
        if ((have & 3) != 3) jrt_fail(r, at, "replace takes old and new");
        return jinja_str_replace(r, at, s, jc_str_arg(r, at, "replace", p[0]), jc_str_arg(r, at, "replace", p[1]),
                                 have & 4 ? jc_int_arg(r, at, "replace", p[2]) : -1);
    case JC_FIND:
    case JC_COUNT: {
        struct jv sub = jc_str_arg(r, at, jc_table[id].name, have & 1 ? p[0] : jv_none());
        if (jc_table[id].id == JC_FIND) {
            const char *hit = sub.u.s.n ? memmem(s.u.s.p, s.u.s.n, sub.u.s.p, sub.u.s.n) : s.u.s.p;
            return jv_int(hit ? (int64_t)jv_str_len(jv_strn(s.u.s.p, (size_t)(hit - s.u.s.p))) : -1);
        }
        if (!sub.u.s.n) return jv_int((int64_t)jv_str_len(s) + 1);
        int64_t k = 0;
        for (const char *q = s.u.s.p; (q = memmem(q, s.u.s.n - (size_t)(q - s.u.s.p), sub.u.s.p, sub.u.s.n)); q += sub.u.s.n) k++;
        return jv_int(k);
    }
    case JC_JOIN: return jc_join(r, at, s, have & 1 ? p[0] : jv_none());
    default: return jv_bool(jc_all(s, jc_table[id].id == JC_ISDIGIT));
    }
}

/* ---- dict, loop and the globals ---- */

static struct jv jc_dict_method(struct jrt *r, const struct jnode *at, int id, struct jv d, const struct jargs *args) {
    struct jarena *a = jrt_arena(r);
    if (jc_table[id].id == JC_GET) {
        static const char *const params[] = {"key", "default"};
        struct jv p[2];
        unsigned have = jargs_bind(r, at, "get", args, params, 2, p, NULL);
        if (!(have & 1)) jrt_fail(r, at, "get expected at least 1 argument, got 0");
        const struct jv *v = jv_dict_get(d, p[0]);
        return v ? *v : have & 2 ? p[1] : jv_none();
    }
    if (args->n || args->m) jrt_fail(r, at, "%s() takes no arguments", jc_table[id].name);
    size_t n = d.u.d->n;
    struct jv *items = jarena_alloc(a, (n + 1) * sizeof *items);
    for (size_t i = 0; i < n; i++) {
        if (jc_table[id].id == JC_KEYS) items[i] = d.u.d->k[i];
        else if (jc_table[id].id == JC_VALUES) items[i] = d.u.d->v[i];
        else items[i] = jv_seq(a, JV_SEQ_TUPLE, (struct jv[]){d.u.d->k[i], d.u.d->v[i]}, 2);
    }
    enum jv_seq sub = jc_table[id].id == JC_KEYS ? JV_SEQ_KEYS : jc_table[id].id == JC_VALUES ? JV_SEQ_VALUES : JV_SEQ_ITEMS;
    return jv_seq(a, sub, items, n);
}

static struct jv jc_range(struct jrt *r, const struct jnode *at, const struct jargs *args) {
    int64_t b[3] = {0, 0, 1};
    if (args->m || !args->n || args->n > 3) jrt_fail(r, at, "range takes 1 to 3 integers");
    for (size_t i = 0; i < args->n; i++) {
        if (args->v[i].type != JV_INT && args->v[i].type != JV_BOOL) jrt_fail(r, at, "range takes integers");
        b[args->n == 1 ? 1 : i] = args->v[i].u.i;
    }
    if (!b[2]) jrt_fail(r, at, "range() arg 3 must not be zero");
    uint64_t count = 0;
    if (b[2] > 0 && b[0] < b[1]) count = ((uint64_t)b[1] - (uint64_t)b[0] - 1) / (uint64_t)b[2] + 1;
    if (b[2] < 0 && b[1] < b[0]) count = ((uint64_t)b[0] - (uint64_t)b[1] - 1) / (uint64_t)(-(b[2] + 1) + 1) + 1;
    if (count > 10000000) jrt_fail(r, at, "range of more than 10^7 numbers is not supported");
    struct jv *items = jarena_alloc(jrt_arena(r), (count + 1) * sizeof *items);
    for (uint64_t i = 0; i < count; i++) items[i] = jv_int(b[0] + (int64_t)i * b[2]);
    return jv_seq(jrt_arena(r), JV_SEQ_LIST, items, count);
}

/* namespace(...) and dict(...): a mapping or pairs, then keyword arguments. */
static struct jv jc_mapping(struct jrt *r, const struct jnode *at, int type, const struct jargs *args) {
    struct jarena *a = jrt_arena(r);
    struct jv d = jv_dict_new(a, type);
    if (args->n > 1) jrt_fail(r, at, "expected at most 1 positional argument, got %zu", args->n);
    if (args->n && args->v[0].type == JV_DICT) {
        for (size_t i = 0; i < args->v[0].u.d->n; i++) jv_dict_set(a, d, args->v[0].u.d->k[i], args->v[0].u.d->v[i]);
    } else if (args->n) {
        struct jlist pairs = jrt_iterate(r, at, args->v[0]);
        for (size_t i = 0; i < pairs.n; i++) {
            struct jlist kv = jrt_iterate(r, at, pairs.v[i]);
            if (kv.n != 2) jrt_fail(r, at, "dictionary update sequence element #%zu has length %zu; 2 is required", i, kv.n);
            jv_dict_set(a, d, kv.v[0], kv.v[1]);
        }
    }
    for (size_t k = 0; k < args->m; k++) jv_dict_set(a, d, jv_strn(args->kw[k], strlen(args->kw[k])), args->kv[k]);
    return d;
}

static struct jv jc_strftime(struct jrt *r, const struct jnode *at, const struct jargs *args) {
    if (args->n != 1 || args->m || args->v[0].type != JV_STR) jrt_fail(r, at, "strftime_now takes one format string");
    char fmt[256], out[1024];
    if (args->v[0].u.s.n >= sizeof fmt || memchr(args->v[0].u.s.p, '\0', args->v[0].u.s.n))
        jrt_fail(r, at, "strftime_now: the format is too long or holds a NUL");
    memcpy(fmt, args->v[0].u.s.p, args->v[0].u.s.n);
    fmt[args->v[0].u.s.n] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t n = strftime(out, sizeof out, fmt, &tm);
    if (!n && fmt[0]) jrt_fail(r, at, "strftime_now: the formatted date is empty or too long");
    return jv_str_copy(jrt_arena(r), out, n);
}

struct jv jinja_call(struct jrt *r, const struct jnode *at, const struct jfunc *f, const struct jargs *args) {
    int id = f->id;
    jrt_step(r, at);
    switch (jc_table[id].id) {
    case JC_RANGE: return jc_range(r, at, args);
    case JC_NAMESPACE: return jc_mapping(r, at, JV_NS, args);
    case JC_DICT: return jc_mapping(r, at, JV_DICT, args);
    case JC_RAISE: {
        struct jv msg = args->n ? jv_to_str(jrt_arena(r), args->v[0]) : jv_strn("", 0);
        jarena_fail(jrt_arena(r), "raise_exception at line %d:%d: %.*s", at->line, at->col,
                    (int)(msg.u.s.n > 600 ? 600 : msg.u.s.n), msg.u.s.p);
    }
    case JC_STRFTIME: return jc_strftime(r, at, args);
    case JC_UNSUPPORTED_GLOBAL: jrt_fail(r, at, "the global '%s' is not supported", jc_table[id].name);
    case JC_CYCLE: {
        if (!args->n || args->m) jrt_fail(r, at, "no items for cycling given");
        return args->v[f->self.u.loop->index0 % args->n];
    }
    case JC_ITEMS:
    case JC_KEYS:
    case JC_VALUES:
    case JC_GET: return jc_dict_method(r, at, id, f->self, args);
    default: return jc_str_method(r, at, id, f->self, args);
    }
}
