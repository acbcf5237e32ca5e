/*
 * jinja_eval.c: renders a chat template's syntax tree (jinja.h), with jinja2's
 * semantics: Python's operators on Python's values, jinja2's getattr and getitem (an
 * attribute, else an item, else an Undefined that remembers why), scopes (a {% set %}
 * inside a loop lives for that iteration; namespaces carry values out), `loop`, and
 * {% generation %} spans. Errors unwind with longjmp through the render's arena
 * (jinja_value.h), which holds every value and is freed whole.
 */
#define _GNU_SOURCE /* memmem */
#include "jinja.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jinja_builtin.h"
#include "jinja_syntax.h"

struct jscope {
    struct jscope *parent;
    struct jv vars; /* a dict */
};

struct jrt {
    struct jarena a;
    struct jscope *scope;
    struct jbuf *out;
    int capture; /* inside {% set %} blocks */
    struct jinja_span *spans;
    size_t n_spans, cap_spans;
    uint64_t steps, max_steps;
};

enum { JEXEC_NEXT, JEXEC_BREAK, JEXEC_CONTINUE };

struct jarena *jrt_arena(struct jrt *r) { return &r->a; }
const char *jrt_what(struct jrt *r) { return r->a.what; }

_Noreturn void jrt_fail(struct jrt *r, const struct jnode *at, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jarena_fail(&r->a, "line %d:%d: %s", at->line, at->col, msg);
}

_Noreturn void jrt_undefined(struct jrt *r, const struct jnode *at, struct jv v) {
    jrt_fail(r, at, "%s", v.u.s.p ? v.u.s.p : "undefined value");
}

void jrt_step(struct jrt *r, const struct jnode *at) {
    if (++r->steps > r->max_steps) jrt_fail(r, at, "the template takes more than %llu steps", (unsigned long long)r->max_steps);
}

/* jinja2's words for an object in "has no attribute" messages. */
static const char *jrt_obj_words(struct jv obj) {
    static char buf[64];
    if (obj.type == JV_NONE) return "None";
    if (obj.type == JV_NS) return "jinja2.utils.Namespace object";
    if (obj.type == JV_LOOP) return "jinja2.runtime.LoopContext object";
    snprintf(buf, sizeof buf, "%s object", jv_type_name(obj));
    return buf;
}

/* An Undefined for OBJ's missing attribute or element KEY. */
static struct jv jrt_missing(struct jrt *r, struct jv obj, struct jv key) {
    struct jbuf b = {0};
    jbuf_puts(&r->a, &b, "'");
    jbuf_puts(&r->a, &b, jrt_obj_words(obj));
    jbuf_puts(&r->a, &b, key.type == JV_STR ? "' has no attribute " : "' has no element ");
    jv_repr(&r->a, &b, key);
    jbuf_put(&r->a, &b, "", 1);
    return jv_undef(b.p);
}

static const char *const jrt_py_attrs[] = {
    /* dict */ "clear", "copy", "fromkeys", "pop", "popitem", "setdefault", "update",
    /* list */ "append", "extend", "insert", "remove", "reverse", "sort", "index",
    /* str */ "casefold", "center", "encode", "expandtabs", "format", "format_map", "index", "isalnum", "isalpha",
    "isascii", "isdecimal", "isidentifier", "islower", "isnumeric", "isprintable", "istitle", "isupper", "ljust",
    "maketrans", "partition", "removeprefix", "removesuffix", "rfind", "rindex", "rjust", "rpartition", "splitlines",
    "swapcase", "translate", "zfill", NULL};

static int jrt_is_py_attr(const char *name, size_t n) {
    for (const char *const *a = jrt_py_attrs; *a; a++)
        if (strlen(*a) == n && !memcmp(*a, name, n)) return 1;
    return 0;
}

static struct jv jrt_loop_attr(struct jrt *r, const struct jnode *at, struct jv lv, const char *name, size_t n) {
    const struct jloop *l = lv.u.loop;
    size_t len = l->items->n, i = l->index0;
#define IS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
    if (IS("index")) return jv_int((int64_t)i + 1);
    if (IS("index0")) return jv_int((int64_t)i);
    if (IS("revindex")) return jv_int((int64_t)(len - i));
    if (IS("revindex0")) return jv_int((int64_t)(len - i - 1));
    if (IS("first")) return jv_bool(i == 0);
    if (IS("last")) return jv_bool(i + 1 == len);
    if (IS("length")) return jv_int((int64_t)len);
    if (IS("depth")) return jv_int(l->depth);
    if (IS("depth0")) return jv_int(l->depth - 1);
    if (IS("previtem")) return i ? l->items->v[i - 1] : jv_undef("there is no previous item");
    if (IS("nextitem")) return i + 1 < len ? l->items->v[i + 1] : jv_undef("there is no next item");
    if (IS("cycle")) return jinja_method(r, lv, name, n);
    if (IS("changed")) jrt_fail(r, at, "loop.changed is not supported");
#undef IS
    return jrt_missing(r, lv, jv_strn(name, n));
}

struct jv jrt_getattr(struct jrt *r, const struct jnode *at, struct jv obj, const char *name, size_t n) {
    if (obj.type == JV_UNDEF) jrt_undefined(r, at, obj);
    if (obj.type == JV_LOOP) return jrt_loop_attr(r, at, obj, name, n);
    struct jv m = jinja_method(r, obj, name, n);
    if (m.type == JV_FUNC) return m;
    if ((obj.type == JV_STR || obj.type == JV_DICT || obj.type == JV_LIST) && jrt_is_py_attr(name, n))
        jrt_fail(r, at, "the %s method '%.*s' is not supported", jv_type_name(obj), (int)n, name);
    struct jv key = jv_strn(name, n);
    if (obj.type == JV_DICT || obj.type == JV_NS) {
        const struct jv *v = jv_dict_get(obj, key);
        if (v) return *v;
    }
    return jrt_missing(r, obj, key);
}

/* Python's index I of a sequence of N items (negative from the end); -1 when outside. */
static int64_t jrt_index(struct jv key, size_t n) {
    int64_t i = key.u.i;
    if (i < 0) i += (int64_t)n;
    return i >= 0 && (uint64_t)i < n ? i : -1;
}

struct jv jrt_getitem(struct jrt *r, const struct jnode *at, struct jv obj, struct jv key) {
    if (obj.type == JV_UNDEF) jrt_undefined(r, at, obj);
    int int_key = key.type == JV_INT || key.type == JV_BOOL;
    if (obj.type == JV_LIST && obj.sub <= JV_SEQ_TUPLE && int_key) {
        int64_t i = jrt_index(key, obj.u.l->n);
        if (i >= 0) return obj.u.l->v[i];
    } else if (obj.type == JV_STR && int_key) {
        int64_t i = jrt_index(key, jv_str_len(obj));
        if (i >= 0) {
            size_t off = jv_str_offset(obj, (size_t)i);
            return jv_strn(obj.u.s.p + off, utf8_char_len((unsigned char)obj.u.s.p[off]));
        }
    } else if (obj.type == JV_DICT) {
        const struct jv *v = jv_dict_get(obj, key);
        if (v) return *v;
    }
    if (key.type == JV_STR) return jrt_getattr(r, at, obj, key.u.s.p, key.u.s.n);
    return jrt_missing(r, obj, key);
}

struct jlist jrt_iterate(struct jrt *r, const struct jnode *at, struct jv v) {
    struct jlist l = {0};
    if (v.type == JV_LIST) return *v.u.l;
    if (v.type == JV_DICT) {
        l.n = v.u.d->n;
        l.v = v.u.d->k;
        return l;
    }
    if (v.type == JV_STR) {
        l.v = jarena_alloc(&r->a, (jv_str_len(v) + 1) * sizeof *l.v);
        for (size_t off = 0, k; off < v.u.s.n; off += k) {
            k = utf8_char_len((unsigned char)v.u.s.p[off]);
            l.v[l.n++] = jv_strn(v.u.s.p + off, k);
        }
        return l;
    }
    if (v.type == JV_UNDEF) return l;
    jrt_fail(r, at, "'%s' object is not iterable", jv_type_name(v));
}

static struct jv jrt_eval(struct jrt *r, const struct jnode *n);

static struct jv jrt_lookup(struct jrt *r, const struct jnode *n) {
    struct jv key = jv_strn(n->name, n->name_n);
    for (struct jscope *s = r->scope; s; s = s->parent) {
        const struct jv *v = jv_dict_get(s->vars, key);
        if (v) return *v;
    }
    struct jv g = jinja_global(r, n->name, n->name_n);
    if (g.type == JV_FUNC) return g;
    return jv_undef(jv_str_fmt(&r->a, "'%.*s' is undefined", (int)(n->name_n > 200 ? 200 : n->name_n), n->name).u.s.p);
}

/* Python's slice of a sequence of N items: the indices it takes, into IDX (n allocated). */
static size_t jrt_slice_indices(struct jrt *r, const struct jnode *sl, size_t n, size_t **idx) {
    int64_t b[3] = {0, 0, 1};
    int given[3] = {0, 0, 0};
    const struct jnode *parts[3] = {sl->a, sl->b, sl->c};
    for (int k = 0; k < 3; k++) {
        if (!parts[k]) continue;
        struct jv v = jrt_eval(r, parts[k]);
        if (v.type == JV_NONE) continue;
        if (v.type != JV_INT && v.type != JV_BOOL) jrt_fail(r, sl, "slice indices must be integers or None");
        b[k] = v.u.i, given[k] = 1;
    }
    int64_t len = (int64_t)n, step = b[2];
    if (step == 0) jrt_fail(r, sl, "slice step cannot be zero");
    int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? len - 1 : len;
    for (int k = 0; k < 2; k++) {
        if (!given[k]) {
            b[k] = k == 0 ? (step > 0 ? 0 : len - 1) : (step > 0 ? len : -1);
            continue;
        }
        if (b[k] < 0) b[k] = b[k] + len < 0 ? lo : b[k] + len;
        else if (b[k] > hi) b[k] = hi;
    }
    size_t count = 0;
    if (step > 0 && b[0] < b[1]) count = (size_t)((b[1] - b[0] - 1) / step + 1);
    if (step < 0 && b[1] < b[0]) count = (size_t)((b[0] - b[1] - 1) / -step + 1);
    *idx = jarena_alloc(&r->a, (count + 1) * sizeof **idx);
    for (size_t i = 0; i < count; i++) (*idx)[i] = (size_t)(b[0] + (int64_t)i * step);
    return count;
}

static struct jv jrt_slice(struct jrt *r, const struct jnode *at, struct jv obj, const struct jnode *sl) {
    if (obj.type == JV_UNDEF) jrt_undefined(r, at, obj);
    size_t *idx;
    if (obj.type == JV_LIST && obj.sub <= JV_SEQ_TUPLE) {
        size_t k = jrt_slice_indices(r, sl, obj.u.l->n, &idx);
        struct jv out = jv_seq(&r->a, (enum jv_seq)obj.sub, NULL, 0);
        out.u.l->v = jarena_alloc(&r->a, (k + 1) * sizeof *out.u.l->v);
        for (size_t i = 0; i < k; i++) out.u.l->v[i] = obj.u.l->v[idx[i]];
        out.u.l->n = k;
        return out;
    }
    if (obj.type == JV_STR) {
        struct jlist chars = jrt_iterate(r, at, obj);
        size_t k = jrt_slice_indices(r, sl, chars.n, &idx);
        struct jbuf b = {0};
        jbuf_put(&r->a, &b, "", 0);
        for (size_t i = 0; i < k; i++) jbuf_put(&r->a, &b, chars.v[idx[i]].u.s.p, chars.v[idx[i]].u.s.n);
        return jbuf_value(&b);
    }
    return jv_undef("the object cannot be sliced");
}

/* The arguments of a call, filter or test node N (V: positional, W: keyword). */
static struct jargs jrt_args(struct jrt *r, const struct jnode *n) {
    struct jargs a = {0};
    struct jv *v = jarena_alloc(&r->a, (n->n + 1) * sizeof *v), *kv = jarena_alloc(&r->a, (n->m + 1) * sizeof *kv);
    const char **kw = jarena_alloc(&r->a, (n->m + 1) * sizeof *kw);
    for (size_t i = 0; i < n->n; i++) v[i] = jrt_eval(r, n->v[i]);
    for (size_t i = 0; i < n->m; i++) {
        kv[i] = jrt_eval(r, n->w[i]->a);
        kw[i] = jv_str_copy(&r->a, n->w[i]->name, n->w[i]->name_n).u.s.p;
    }
    a.v = v, a.n = n->n, a.kv = kv, a.kw = kw, a.m = n->m;
    return a;
}

static struct jv jrt_call(struct jrt *r, const struct jnode *n) {
    struct jv f = jrt_eval(r, n->a);
    if (f.type == JV_UNDEF) jrt_undefined(r, n, f);
    if (f.type != JV_FUNC) jrt_fail(r, n, "'%s' object is not callable", jv_type_name(f));
    struct jargs args = jrt_args(r, n);
    return jinja_call(r, n, f.u.fn, &args);
}

_Noreturn static void jrt_overflow(struct jrt *r, const struct jnode *n) {
    jrt_fail(r, n, "integer overflow (lorad's templates hold 64-bit integers)");
}

_Noreturn static void jrt_bad_operands(struct jrt *r, const struct jnode *n, const char *op, struct jv a, struct jv b) {
    jrt_fail(r, n, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a), jv_type_name(b));
}

/* Python's floor division and modulo of ints. */
static void jrt_divmod(struct jrt *r, const struct jnode *n, int64_t a, int64_t b, int64_t *q, int64_t *m) {
    if (b == 0) jrt_fail(r, n, "integer division or modulo by zero");
    if (a == INT64_MIN && b == -1) jrt_overflow(r, n);
    *q = a / b, *m = a % b;
    if (*m && ((*m < 0) != (b < 0))) *m += b, (*q)--;
}

static struct jv jrt_arith_num(struct jrt *r, const struct jnode *n, struct jv a, struct jv b) {
    int ints = a.type != JV_FLOAT && b.type != JV_FLOAT;
    double x = a.type == JV_FLOAT ? a.u.f : (double)a.u.i, y = b.type == JV_FLOAT ? b.u.f : (double)b.u.i;
    int64_t i, q, m;
    switch (n->op) {
    case JOP_ADD:
        if (!ints) return jv_float(x + y);
        if (__builtin_add_overflow(a.u.i, b.u.i, &i)) jrt_overflow(r, n);
        return jv_int(i);
    case JOP_SUB:
        if (!ints) return jv_float(x - y);
        if (__builtin_sub_overflow(a.u.i, b.u.i, &i)) jrt_overflow(r, n);
        return jv_int(i);
    case JOP_MUL:
        if (!ints) return jv_float(x * y);
        if (__builtin_mul_overflow(a.u.i, b.u.i, &i)) jrt_overflow(r, n);
        return jv_int(i);
    case JOP_DIV:
        if (y == 0) jrt_fail(r, n, "division by zero");
        return jv_float(x / y);
    case JOP_FLOORDIV:
    case JOP_MOD:
        if (ints) {
            jrt_divmod(r, n, a.u.i, b.u.i, &q, &m);
            return jv_int(n->op == JOP_MOD ? m : q);
        }
        if (y == 0) jrt_fail(r, n, n->op == JOP_MOD ? "float modulo" : "float floor division by zero");
        if (n->op == JOP_FLOORDIV) return jv_float(__builtin_floor(x / y));
        double md = __builtin_fmod(x, y);
        if (md && ((md < 0) != (y < 0))) md += y;
        return jv_float(md);
    default: /* JOP_POW */
        if (ints && b.u.i >= 0) {
            int64_t acc = 1, base = a.u.i;
            for (int64_t e = b.u.i; e; e >>= 1) {
                if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) jrt_overflow(r, n);
                if (e > 1 && __builtin_mul_overflow(base, base, &base)) jrt_overflow(r, n);
            }
            return jv_int(acc);
        }
        if (x == 0 && y < 0) jrt_fail(r, n, "0.0 cannot be raised to a negative power");
        return jv_float(__builtin_pow(x, y));
    }
}

/* S repeated K times (str or sequence). */
static struct jv jrt_repeat(struct jrt *r, const struct jnode *n, struct jv s, int64_t k) {
    size_t unit = s.type == JV_STR ? s.u.s.n : s.u.l->n * sizeof(struct jv);
    if (k < 0) k = 0;
    if (unit && (uint64_t)k > r->a.limit / unit) jrt_fail(r, n, "the repetition needs more than %zu MiB", r->a.limit >> 20);
    if (s.type == JV_STR) {
        char *p = jarena_alloc(&r->a, (size_t)k * unit + 1);
        for (int64_t i = 0; i < k; i++) memcpy(p + (size_t)i * unit, s.u.s.p, unit);
        p[(size_t)k * unit] = '\0';
        return jv_strn(p, (size_t)k * unit);
    }
    struct jv out = jv_seq(&r->a, (enum jv_seq)s.sub, NULL, 0);
    out.u.l->v = jarena_alloc(&r->a, (size_t)k * s.u.l->n * sizeof(struct jv) + sizeof(struct jv));
    for (int64_t i = 0; i < k; i++) memcpy(out.u.l->v + (size_t)i * s.u.l->n, s.u.l->v, s.u.l->n * sizeof(struct jv));
    out.u.l->n = (size_t)k * s.u.l->n;
    return out;
}

static struct jv jrt_concat(struct jrt *r, struct jv a, struct jv b) {
    if (a.type == JV_STR) {
        struct jbuf buf = {0};
        jbuf_put(&r->a, &buf, a.u.s.p, a.u.s.n);
        jbuf_put(&r->a, &buf, b.u.s.p, b.u.s.n);
        jbuf_put(&r->a, &buf, "", 0);
        return jbuf_value(&buf);
    }
    struct jv out = jv_seq(&r->a, (enum jv_seq)a.sub, NULL, 0);
    out.u.l->v = jarena_alloc(&r->a, (a.u.l->n + b.u.l->n + 1) * sizeof(struct jv));
    memcpy(out.u.l->v, a.u.l->v, a.u.l->n * sizeof(struct jv));
    memcpy(out.u.l->v + a.u.l->n, b.u.l->v, b.u.l->n * sizeof(struct jv));
    out.u.l->n = a.u.l->n + b.u.l->n;
    return out;
}

static struct jv jrt_binop(struct jrt *r, const struct jnode *n) {
    static const char *const names[] = {"+", "-", "/", "//", "*", "%", "**"};
    struct jv a = jrt_eval(r, n->a), b = jrt_eval(r, n->b);
    if (n->op == JOP_TILDE) return jrt_concat(r, jv_to_str(&r->a, a), jv_to_str(&r->a, b));
    if (a.type == JV_UNDEF) jrt_undefined(r, n, a);
    if (b.type == JV_UNDEF) jrt_undefined(r, n, b);
    if (jv_is_num(a) && jv_is_num(b)) return jrt_arith_num(r, n, a, b);
    int seq_a = a.type == JV_STR || (a.type == JV_LIST && a.sub <= JV_SEQ_TUPLE);
    int seq_b = b.type == JV_STR || (b.type == JV_LIST && b.sub <= JV_SEQ_TUPLE);
    if (n->op == JOP_ADD && seq_a) {
        if (b.type == a.type && b.sub == a.sub) return jrt_concat(r, a, b);
        jrt_fail(r, n, "can only concatenate %s (not \"%s\") to %s", jv_type_name(a), jv_type_name(b), jv_type_name(a));
    }
    if (n->op == JOP_MUL && seq_a && (b.type == JV_INT || b.type == JV_BOOL)) return jrt_repeat(r, n, a, b.u.i);
    if (n->op == JOP_MUL && seq_b && (a.type == JV_INT || a.type == JV_BOOL)) return jrt_repeat(r, n, b, a.u.i);
    if (n->op == JOP_MOD && a.type == JV_STR) jrt_fail(r, n, "string formatting with %% is not supported");
    jrt_bad_operands(r, n, names[n->op], a, b);
}

static int jrt_contains(struct jrt *r, const struct jnode *n, struct jv item, struct jv box) {
    if (box.type == JV_STR) {
        if (item.type != JV_STR)
            jrt_fail(r, n, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        return !item.u.s.n || memmem(box.u.s.p, box.u.s.n, item.u.s.p, item.u.s.n) != NULL;
    }
    if (box.type == JV_DICT) return jv_dict_get(box, item) != NULL;
    if (box.type != JV_LIST && box.type != JV_UNDEF)
        jrt_fail(r, n, "argument of type '%s' is not iterable", jv_type_name(box));
    struct jlist l = jrt_iterate(r, n, box);
    for (size_t i = 0; i < l.n; i++)
        if (jv_equal(l.v[i], item)) return 1;
    return 0;
}

static int jrt_compare_one(struct jrt *r, const struct jnode *n, int op, struct jv a, struct jv b) {
    static const char *const names[] = {"==", "!=", ">", ">=", "<", "<="};
    if (op == JOP_EQ) return jv_equal(a, b);
    if (op == JOP_NE) return !jv_equal(a, b);
    if (op == JOP_IN || op == JOP_NOTIN) return jrt_contains(r, n, a, b) == (op == JOP_IN);
    if (a.type == JV_UNDEF) jrt_undefined(r, n, a);
    if (b.type == JV_UNDEF) jrt_undefined(r, n, b);
    int c;
    if (jv_order(a, b, &c))
        jrt_fail(r, n, "'%s' not supported between instances of '%s' and '%s'", names[op - JOP_EQ], jv_type_name(a),
                 jv_type_name(b));
    return op == JOP_GT ? c > 0 : op == JOP_GTEQ ? c >= 0 : op == JOP_LT ? c < 0 : c <= 0;
}

static struct jv jrt_compare(struct jrt *r, const struct jnode *n) {
    struct jv left = jrt_eval(r, n->a);
    for (size_t i = 0; i < n->n; i++) {
        struct jv right = jrt_eval(r, n->v[i]);
        if (!jrt_compare_one(r, n, n->ops[i], left, right)) return jv_bool(0);
        left = right;
    }
    return jv_bool(1);
}

static struct jv jrt_unary(struct jrt *r, const struct jnode *n) {
    struct jv v = jrt_eval(r, n->a);
    if (n->kind == JN_NOT) return jv_bool(!jv_truthy(v));
    if (v.type == JV_UNDEF) jrt_undefined(r, n, v);
    if (!jv_is_num(v)) jrt_fail(r, n, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', jv_type_name(v));
    if (n->kind == JN_POS) return v.type == JV_BOOL ? jv_int(v.u.i) : v;
    if (v.type == JV_FLOAT) return jv_float(-v.u.f);
    if (v.u.i == INT64_MIN) jrt_overflow(r, n);
    return jv_int(-v.u.i);
}

static struct jv jrt_items(struct jrt *r, const struct jnode *n, int kind) {
    struct jv out = jv_seq(&r->a, kind == JN_TUPLE ? JV_SEQ_TUPLE : JV_SEQ_LIST, NULL, 0);
    out.u.l->v = jarena_alloc(&r->a, (n->n + 1) * sizeof(struct jv));
    for (size_t i = 0; i < n->n; i++) out.u.l->v[i] = jrt_eval(r, n->v[i]);
    out.u.l->n = n->n;
    return out;
}

static struct jv jrt_dict(struct jrt *r, const struct jnode *n) {
    struct jv d = jv_dict_new(&r->a, JV_DICT);
    for (size_t i = 0; i < n->n; i++) {
        struct jv k = jrt_eval(r, n->v[i]);
        if (k.type == JV_DICT || k.type == JV_NS || (k.type == JV_LIST && k.sub != JV_SEQ_TUPLE))
            jrt_fail(r, n->v[i], "unhashable type: '%s'", jv_type_name(k));
        jv_dict_set(&r->a, d, k, jrt_eval(r, n->w[i]));
    }
    return d;
}

static struct jv jrt_eval(struct jrt *r, const struct jnode *n) {
    jrt_step(r, n);
    switch (n->kind) {
    case JN_CONST: return n->value;
    case JN_NAME: return jrt_lookup(r, n);
    case JN_LIST:
    case JN_TUPLE: return jrt_items(r, n, n->kind);
    case JN_DICT: return jrt_dict(r, n);
    case JN_GETATTR: return jrt_getattr(r, n, jrt_eval(r, n->a), n->name, n->name_n);
    case JN_GETITEM: {
        struct jv obj = jrt_eval(r, n->a);
        if (n->b->kind == JN_SLICE) return jrt_slice(r, n, obj, n->b);
        return jrt_getitem(r, n, obj, jrt_eval(r, n->b));
    }
    case JN_CALL: return jrt_call(r, n);
    case JN_FILTER: {
        struct jv v = jrt_eval(r, n->a);
        struct jargs args = jrt_args(r, n);
        return jinja_filter(r, n, n->builtin, v, &args);
    }
    case JN_TEST: {
        struct jv v = jrt_eval(r, n->a);
        struct jargs args = jrt_args(r, n);
        return jv_bool(jinja_test(r, n, n->builtin, v, &args) != n->negate);
    }
    case JN_NOT:
    case JN_NEG:
    case JN_POS: return jrt_unary(r, n);
    case JN_BINOP: return jrt_binop(r, n);
    case JN_AND:
    case JN_OR: {
        struct jv a = jrt_eval(r, n->a);
        return jv_truthy(a) == (n->kind == JN_AND) ? jrt_eval(r, n->b) : a;
    }
    case JN_COMPARE: return jrt_compare(r, n);
    case JN_COND:
        if (jv_truthy(jrt_eval(r, n->b))) return jrt_eval(r, n->a);
        return n->c ? jrt_eval(r, n->c) : jv_undef("the inline if-expression evaluated to false and has no else");
    default: jrt_fail(r, n, "a slice outside of []");
    }
}

static void jrt_put(struct jrt *r, const char *s, size_t n) { jbuf_put(&r->a, r->out, s, n); }

static void jrt_scope_push(struct jrt *r) {
    struct jscope *s = jarena_alloc(&r->a, sizeof *s);
    s->parent = r->scope;
    s->vars = jv_dict_new(&r->a, JV_DICT);
    r->scope = s;
}

/* Binds the target T (a name, or a tuple of names to unpack into) to V in the current scope. */
static void jrt_assign(struct jrt *r, const struct jnode *t, struct jv v) {
    if (t->kind == JN_NAME) {
        jv_dict_set(&r->a, r->scope->vars, jv_strn(t->name, t->name_n), v);
        return;
    }
    if (t->kind == JN_NSREF) {
        struct jnode name = *t;
        name.kind = JN_NAME;
        struct jv ns = jrt_lookup(r, &name);
        if (ns.type != JV_NS) jrt_fail(r, t, "cannot assign attribute on non-namespace object");
        jv_dict_set(&r->a, ns, jv_strn(t->attr, t->attr_n), v);
        return;
    }
    if (v.type == JV_UNDEF) jrt_undefined(r, t, v);
    struct jlist items = jrt_iterate(r, t, v);
    if (items.n < t->n) jrt_fail(r, t, "not enough values to unpack (expected %zu, got %zu)", t->n, items.n);
    if (items.n > t->n) jrt_fail(r, t, "too many values to unpack (expected %zu)", t->n);
    for (size_t i = 0; i < t->n; i++) jrt_assign(r, t->v[i], items.v[i]);
}

static int jrt_exec_body(struct jrt *r, struct jnode *const *stmts, size_t n);

/* The items of a for loop: its iterable, less those its `if` filter rejects. */
static struct jlist jrt_loop_items(struct jrt *r, const struct jnode *n) {
    struct jlist all = jrt_iterate(r, n->b, jrt_eval(r, n->b));
    if (!n->c) return all;
    struct jlist kept = {.v = jarena_alloc(&r->a, (all.n + 1) * sizeof(struct jv))};
    struct jscope *outer = r->scope;
    for (size_t i = 0; i < all.n; i++) {
        jrt_scope_push(r);
        jrt_assign(r, n->a, all.v[i]);
        if (jv_truthy(jrt_eval(r, n->c))) kept.v[kept.n++] = all.v[i];
        r->scope = outer;
    }
    return kept;
}

static int jrt_for(struct jrt *r, const struct jnode *n) {
    struct jlist *items = jarena_alloc(&r->a, sizeof *items);
    *items = jrt_loop_items(r, n);
    if (!items->n) return jrt_exec_body(r, n->w, n->m);
    struct jloop *loop = jarena_alloc(&r->a, sizeof *loop);
    loop->items = items;
    loop->depth = 1;
    struct jv lv = {.type = JV_LOOP};
    lv.u.loop = loop;
    struct jscope *outer = r->scope;
    for (size_t i = 0; i < items->n; i++) {
        loop->index0 = i;
        jrt_scope_push(r);
        jv_dict_set(&r->a, r->scope->vars, jv_strn("loop", 4), lv);
        jrt_assign(r, n->a, items->v[i]);
        int rc = jrt_exec_body(r, n->v, n->n);
        r->scope = outer;
        if (rc == JEXEC_BREAK) break;
    }
    return JEXEC_NEXT;
}

/* {% set x %}...{% endset %}: the body's output, as a str. */
static struct jv jrt_capture(struct jrt *r, const struct jnode *n) {
    struct jbuf buf = {0}, *saved = r->out;
    r->out = &buf;
    r->capture++;
    jrt_exec_body(r, n->v, n->n);
    r->capture--;
    r->out = saved;
    jbuf_put(&r->a, &buf, "", 0);
    return jbuf_value(&buf);
}

static int jrt_generation(struct jrt *r, const struct jnode *n) {
    size_t start = r->out->n;
    int rc = jrt_exec_body(r, n->v, n->n);
    if (r->capture) return rc;
    if (r->n_spans == r->cap_spans) {
        size_t cap = r->cap_spans ? r->cap_spans * 2 : 16;
        struct jinja_span *s = jarena_alloc(&r->a, cap * sizeof *s);
        if (r->n_spans) memcpy(s, r->spans, r->n_spans * sizeof *s);
        r->spans = s, r->cap_spans = cap;
    }
    r->spans[r->n_spans++] = (struct jinja_span){start, r->out->n};
    return rc;
}

static int jrt_exec(struct jrt *r, const struct jnode *n) {
    jrt_step(r, n);
    switch (n->kind) {
    case JN_DATA: jrt_put(r, n->name, n->name_n); return JEXEC_NEXT;
    case JN_OUTPUT: jv_str(&r->a, r->out, jrt_eval(r, n->a)); return JEXEC_NEXT;
    case JN_IF:
        if (jv_truthy(jrt_eval(r, n->a))) return jrt_exec_body(r, n->v, n->n);
        return jrt_exec_body(r, n->w, n->m);
    case JN_FOR: return jrt_for(r, n);
    case JN_SET: jrt_assign(r, n->a, jrt_eval(r, n->b)); return JEXEC_NEXT;
    case JN_SET_BLOCK: jrt_assign(r, n->a, jrt_capture(r, n)); return JEXEC_NEXT;
    case JN_GENERATION: return jrt_generation(r, n);
    case JN_BREAK: return JEXEC_BREAK;
    case JN_CONTINUE: return JEXEC_CONTINUE;
    default: jrt_fail(r, n, "not a statement");
    }
}

static int jrt_exec_body(struct jrt *r, struct jnode *const *stmts, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int rc = jrt_exec(r, stmts[i]);
        if (rc != JEXEC_NEXT) return rc;
    }
    return JEXEC_NEXT;
}

int jinja_template_parse(struct jinja_template *t, const char *src, size_t n, const char *what) {
    memset(t, 0, sizeof *t);
    jmp_buf fail;
    t->what = xstrdup(what);
    t->arena.limit = JINJA_MAX_BYTES;
    t->arena.what = t->what;
    t->arena.fail = &fail;
    if (setjmp(fail)) {
        jinja_template_free(t);
        return -1;
    }
    t->root = jinja_parse(&t->arena, src, n);
    t->arena.fail = NULL;
    return 0;
}

void jinja_template_free(struct jinja_template *t) {
    jarena_free(&t->arena);
    free(t->what);
    memset(t, 0, sizeof *t);
}

int jinja_render(const struct jinja_template *t, const json_t *vars, const struct jinja_limits *limits,
                 struct jinja_output *out) {
    memset(out, 0, sizeof *out);
    struct jrt r = {0};
    jmp_buf fail;
    r.a.limit = limits ? limits->max_bytes : JINJA_MAX_BYTES;
    r.max_steps = limits ? limits->max_steps : JINJA_MAX_STEPS;
    r.a.what = t->what;
    r.a.fail = &fail;
    if (setjmp(fail)) {
        jarena_free(&r.a);
        return -1;
    }
    struct jbuf text = {0};
    r.out = &text;
    jrt_scope_push(&r);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vars, key, val)
        jv_dict_set(&r.a, r.scope->vars, jv_strn(key, strlen(key)), jv_from_json(&r.a, val));
    jrt_exec_body(&r, t->root->v, t->root->n);
    tok_buf_put(&out->text, text.p ? text.p : "", text.n);
    if (r.n_spans) {
        out->spans = xmalloc(r.n_spans * sizeof *out->spans);
        memcpy(out->spans, r.spans, r.n_spans * sizeof *out->spans);
    }
    out->n_spans = r.n_spans;
    jarena_free(&r.a);
    return 0;
}

void jinja_output_free(struct jinja_output *o) {
    tok_buf_free(&o->text);
    free(o->spans);
    memset(o, 0, sizeof *o);
}
