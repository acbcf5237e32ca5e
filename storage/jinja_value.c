/*
 * jinja_value.c: the arena and the values of chat templates (jinja_value.h): Python's
 * truth, equality, ordering, str() and repr(), and JSON values brought in.
 */
#include "jinja_value.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"
#include "tok_text.h"

#define JCHUNK_SIZE (64 * 1024)

struct jchunk {
    struct jchunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

_Noreturn void jarena_fail(struct jarena *a, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(a->what, "%s", msg);
    longjmp(*a->fail, 1);
}

void *jarena_alloc(struct jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    struct jchunk *c = a->chunks;
    if (!c || c->size - c->used < n) {
        size_t size = n > JCHUNK_SIZE / 4 ? n : JCHUNK_SIZE;
        if (a->used + size > a->limit)
            jarena_fail(a, "needs more than %zu MiB of memory", a->limit >> 20);
        c = xmalloc(sizeof *c + size);
        c->size = size;
        c->used = 0;
        a->used += size;
        /* a big block gets a chunk of its own behind the current one, which stays in use */
        if (size > JCHUNK_SIZE && a->chunks) {
            c->next = a->chunks->next;
            a->chunks->next = c;
        } else {
            c->next = a->chunks;
            a->chunks = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void jarena_free(struct jarena *a) {
    for (struct jchunk *c = a->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->chunks = NULL;
    a->used = 0;
}

void jbuf_put(struct jarena *a, struct jbuf *b, const void *s, size_t n) {
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n) cap *= 2;
        char *p = jarena_alloc(a, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
}

struct jv jv_str_copy(struct jarena *a, const char *p, size_t n) {
    char *s = jarena_alloc(a, n + 1);
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return jv_strn(s, n);
}

struct jv jv_str_fmt(struct jarena *a, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return jv_str_copy(a, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

struct jv jv_seq(struct jarena *a, enum jv_seq sub, const struct jv *items, size_t n) {
    struct jlist *l = jarena_alloc(a, sizeof *l);
    l->n = n;
    l->v = jarena_alloc(a, (n ? n : 1) * sizeof *l->v);
    if (n) memcpy(l->v, items, n * sizeof *items);
    struct jv v = {.type = JV_LIST, .sub = (uint8_t)sub};
    v.u.l = l;
    return v;
}

struct jv jv_dict_new(struct jarena *a, int type) {
    struct jdict *d = jarena_alloc(a, sizeof *d);
    memset(d, 0, sizeof *d);
    struct jv v = {.type = (uint8_t)type};
    v.u.d = d;
    return v;
}

const struct jv *jv_dict_get(struct jv d, struct jv key) {
    for (size_t i = 0; i < d.u.d->n; i++)
        if (jv_equal(d.u.d->k[i], key)) return &d.u.d->v[i];
    return NULL;
}

void jv_dict_set(struct jarena *a, struct jv dv, struct jv key, struct jv val) {
    struct jdict *d = dv.u.d;
    struct jv *old = (struct jv *)jv_dict_get(dv, key);
    if (old) {
        *old = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct jv *k = jarena_alloc(a, cap * sizeof *k), *v = jarena_alloc(a, cap * sizeof *v);
        if (d->n) memcpy(k, d->k, d->n * sizeof *k), memcpy(v, d->v, d->n * sizeof *v);
        d->k = k, d->v = v, d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = val;
}

struct jv jv_func(struct jarena *a, int id, struct jv self) {
    struct jfunc *f = jarena_alloc(a, sizeof *f);
    f->id = id;
    f->self = self;
    struct jv v = {.type = JV_FUNC};
    v.u.fn = f;
    return v;
}

int jv_truthy(struct jv v) {
    switch (v.type) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL:
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.sub == JV_SEQ_GEN || v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

static double jv_num(struct jv v) { return v.type == JV_FLOAT ? v.u.f : (double)v.u.i; }

/* list and tuple never compare equal; the views compare as lists of their items */
static int jv_seq_family(struct jv v) { return v.sub == JV_SEQ_TUPLE ? 1 : v.sub == JV_SEQ_GEN ? 2 : 0; }

static int jv_equal_at(struct jv v, struct jv w, int depth) {
    if (depth > JV_MAX_DEPTH) return 0;
    if (jv_is_num(v) && jv_is_num(w)) {
        if (v.type != JV_FLOAT && w.type != JV_FLOAT) return v.u.i == w.u.i;
        return jv_num(v) == jv_num(w);
    }
    if (v.type != w.type) return 0;
    switch (v.type) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR: return v.u.s.n == w.u.s.n && !memcmp(v.u.s.p, w.u.s.p, v.u.s.n);
    case JV_LIST:
        if (jv_seq_family(v) != jv_seq_family(w)) return 0;
        if (v.sub == JV_SEQ_GEN || v.u.l->n != w.u.l->n) return v.u.l == w.u.l;
        for (size_t i = 0; i < v.u.l->n; i++)
            if (!jv_equal_at(v.u.l->v[i], w.u.l->v[i], depth + 1)) return 0;
        return 1;
    case JV_DICT:
        if (v.u.d->n != w.u.d->n) return 0;
        for (size_t i = 0; i < v.u.d->n; i++) {
            const struct jv *o = jv_dict_get(w, v.u.d->k[i]);
            if (!o || !jv_equal_at(v.u.d->v[i], *o, depth + 1)) return 0;
        }
        return 1;
    case JV_NS: return v.u.d == w.u.d;
    case JV_LOOP: return v.u.loop == w.u.loop;
    case JV_FUNC: return v.u.fn == w.u.fn;
    default: return 0;
    }
}

int jv_equal(struct jv v, struct jv w) { return jv_equal_at(v, w, 0); }

static int jv_order_at(struct jv v, struct jv w, int *cmp, int depth) {
    if (depth > JV_MAX_DEPTH) return 2;
    if (jv_is_num(v) && jv_is_num(w)) {
        if (v.type != JV_FLOAT && w.type != JV_FLOAT) *cmp = (v.u.i > w.u.i) - (v.u.i < w.u.i);
        else *cmp = (jv_num(v) > jv_num(w)) - (jv_num(v) < jv_num(w));
        return 0;
    }
    if (v.type == JV_STR && w.type == JV_STR) {
        size_t n = v.u.s.n < w.u.s.n ? v.u.s.n : w.u.s.n;
        int c = n ? memcmp(v.u.s.p, w.u.s.p, n) : 0;
        *cmp = c ? (c > 0) - (c < 0) : (v.u.s.n > w.u.s.n) - (v.u.s.n < w.u.s.n);
        return 0;
    }
    if (v.type == JV_LIST && w.type == JV_LIST && v.sub == w.sub && v.sub <= JV_SEQ_TUPLE) {
        size_t n = v.u.l->n < w.u.l->n ? v.u.l->n : w.u.l->n;
        for (size_t i = 0; i < n; i++)
            if (!jv_equal_at(v.u.l->v[i], w.u.l->v[i], depth + 1)) return jv_order_at(v.u.l->v[i], w.u.l->v[i], cmp, depth + 1);
        *cmp = (v.u.l->n > w.u.l->n) - (v.u.l->n < w.u.l->n);
        return 0;
    }
    return 2;
}

int jv_order(struct jv v, struct jv w, int *cmp) { return jv_order_at(v, w, cmp, 0); }

const char *jv_type_name(struct jv v) {
    static const char *const seq[] = {"list", "tuple", "generator", "dict_items", "dict_keys", "dict_values"};
    switch (v.type) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return seq[v.sub];
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    default: return "function";
    }
}

void jv_float_repr(double f, char out[32]) {
    if (isnan(f)) {
        strcpy(out, "nan");
        return;
    }
    if (isinf(f)) {
        strcpy(out, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    int prec = 1;
    for (; prec < 17; prec++) { /* the shortest digits that read back as F */
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    snprintf(e, sizeof e, "%.*e", prec - 1, f);
    char digits[20];
    int nd = 0, neg = e[0] == '-';
    const char *p = e + neg;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = atoi(p + 1) + 1; /* the value is 0.DIGITS x 10^decpt */
    char *o = out;
    if (neg) *o++ = '-';
    if (decpt > -4 && decpt <= 16) { /* Python's repr: fixed notation here, else exponent */
        if (decpt <= 0) {
            o += sprintf(o, "0.");
            for (int i = 0; i < -decpt; i++) *o++ = '0';
            memcpy(o, digits, (size_t)nd), o += nd;
        } else {
            for (int i = 0; i < decpt; i++) *o++ = i < nd ? digits[i] : '0';
            *o++ = '.';
            if (nd > decpt) memcpy(o, digits + decpt, (size_t)(nd - decpt)), o += nd - decpt;
            else *o++ = '0';
        }
        *o = '\0';
        return;
    }
    *o++ = digits[0];
    if (nd > 1) {
        *o++ = '.';
        memcpy(o, digits + 1, (size_t)(nd - 1)), o += nd - 1;
    }
    sprintf(o, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
}

/* Python's str.isprintable for one code point. */
static int jv_printable(int32_t c) {
    if (c < 0x7f) return c >= 0x20;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return 0;
    default: return 1;
    }
}

static void jv_repr_str(struct jarena *a, struct jbuf *b, struct jv s) {
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    char q = memchr(p, '\'', n) && !memchr(p, '"', n) ? '"' : '\'';
    jbuf_put(a, b, &q, 1);
    for (size_t i = 0, len; i < n; i += len) {
        int32_t c = utf8_decode(p + i, n - i, &len);
        char esc[16];
        if (c == q || c == '\\') snprintf(esc, sizeof esc, "\\%c", (char)c);
        else if (c == '\t') strcpy(esc, "\\t");
        else if (c == '\n') strcpy(esc, "\\n");
        else if (c == '\r') strcpy(esc, "\\r");
        else if (jv_printable(c)) {
            jbuf_put(a, b, p + i, len);
            continue;
        } else if (c < 0x100) snprintf(esc, sizeof esc, "\\x%02x", (unsigned)c);
        else if (c < 0x10000) snprintf(esc, sizeof esc, "\\u%04x", (unsigned)c);
        else snprintf(esc, sizeof esc, "\\U%08x", (unsigned)c);
        jbuf_puts(a, b, esc);
    }
    jbuf_put(a, b, &q, 1);
}

static void jv_repr_items(struct jarena *a, struct jbuf *b, const struct jlist *l, const char *open, const char *close) {
    jbuf_puts(a, b, open);
    for (size_t i = 0; i < l->n; i++) {
        if (i) jbuf_puts(a, b, ", ");
        jv_repr(a, b, l->v[i]);
    }
    jbuf_puts(a, b, close);
}

static void jv_repr_dict(struct jarena *a, struct jbuf *b, const struct jdict *d) {
    jbuf_puts(a, b, "{");
    for (size_t i = 0; i < d->n; i++) {
        if (i) jbuf_puts(a, b, ", ");
        jv_repr(a, b, d->k[i]);
        jbuf_puts(a, b, ": ");
        jv_repr(a, b, d->v[i]);
    }
    jbuf_puts(a, b, "}");
}

static void jv_repr_seq(struct jarena *a, struct jbuf *b, struct jv v) {
    static const char *const views[] = {"dict_items([", "dict_keys([", "dict_values(["};
    switch (v.sub) {
    case JV_SEQ_LIST: jv_repr_items(a, b, v.u.l, "[", "]"); return;
    case JV_SEQ_TUPLE: jv_repr_items(a, b, v.u.l, "(", v.u.l->n == 1 ? ",)" : ")"); return;
    case JV_SEQ_GEN: jarena_fail(a, "printing a generator is not supported (its text is an address)");
    default: jv_repr_items(a, b, v.u.l, views[v.sub - JV_SEQ_ITEMS], "])");
    }
}

static void jv_repr_value(struct jarena *a, struct jbuf *b, struct jv v);

void jv_repr(struct jarena *a, struct jbuf *b, struct jv v) {
    if (++a->depth > JV_MAX_DEPTH) jarena_fail(a, "a value nested more than %d deep (or in itself) cannot be printed", JV_MAX_DEPTH);
    jv_repr_value(a, b, v);
    a->depth--;
}

static void jv_repr_value(struct jarena *a, struct jbuf *b, struct jv v) {
    char num[32];
    switch (v.type) {
    case JV_UNDEF: jbuf_puts(a, b, "Undefined"); return;
    case JV_NONE: jbuf_puts(a, b, "None"); return;
    case JV_BOOL: jbuf_puts(a, b, v.u.i ? "True" : "False"); return;
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i), jbuf_puts(a, b, num); return;
    case JV_FLOAT: jv_float_repr(v.u.f, num), jbuf_puts(a, b, num); return;
    case JV_STR: jv_repr_str(a, b, v); return;
    case JV_LIST: jv_repr_seq(a, b, v); return;
    case JV_DICT: jv_repr_dict(a, b, v.u.d); return;
    case JV_NS: jbuf_puts(a, b, "<Namespace "), jv_repr_dict(a, b, v.u.d), jbuf_puts(a, b, ">"); return;
    case JV_LOOP:
        snprintf(num, sizeof num, "%zu/%zu", v.u.loop->index0 + 1, v.u.loop->items->n);
        jbuf_puts(a, b, "<LoopContext "), jbuf_puts(a, b, num), jbuf_puts(a, b, ">");
        return;
    default: jarena_fail(a, "printing a function is not supported (its text is an address)");
    }
}

void jv_str(struct jarena *a, struct jbuf *b, struct jv v) {
    if (v.type == JV_STR) jbuf_put(a, b, v.u.s.p, v.u.s.n);
    else if (v.type != JV_UNDEF) jv_repr(a, b, v);
}

struct jv jv_to_str(struct jarena *a, struct jv v) {
    if (v.type == JV_STR) return v;
    struct jbuf b = {0};
    jv_str(a, &b, v);
    return jbuf_value(&b);
}

struct jv jv_from_json(struct jarena *a, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct jv d = jv_dict_new(a, JV_DICT);
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val) jv_dict_set(a, d, jv_strn(key, strlen(key)), jv_from_json(a, val));
        return d;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        struct jv l = jv_seq(a, JV_SEQ_LIST, NULL, 0);
        l.u.l->v = jarena_alloc(a, (n ? n : 1) * sizeof *l.u.l->v);
        for (size_t i = 0; i < n; i++) l.u.l->v[i] = jv_from_json(a, json_array_get(j, i));
        l.u.l->n = n;
        return l;
    }
    case JSON_STRING: return jv_strn(json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return jv_int(json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_TRUE: return jv_bool(1);
    case JSON_FALSE: return jv_bool(0);
    default: return jv_none();
    }
}

size_t jv_str_len(struct jv s) {
    size_t n = 0;
    for (size_t i = 0; i < s.u.s.n; i++) n += ((unsigned char)s.u.s.p[i] & 0xC0) != 0x80;
    return n;
}

size_t jv_str_offset(struct jv s, size_t i) {
    size_t off = 0;
    for (; off < s.u.s.n && i; i--) off += utf8_char_len((unsigned char)s.u.s.p[off]);
    return off < s.u.s.n ? off : s.u.s.n;
}

int jv_py_space(int32_t c) { return (c >= 0x1c && c <= 0x1f) || uni_is_space(c); }
