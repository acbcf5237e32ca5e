/*
 * jinja_value.h: the values a chat template computes with, as Python and jinja2 see
 * them: Undefined (jinja2's default Undefined, which prints empty and fails when
 * used), None, bool, int, float, str, list and tuple (and the lazy sequences jinja2
 * filters return), dict (ordered), jinja2's namespace and loop objects, and callables.
 *
 * Every value lives in one arena (struct jarena) that is freed whole after parsing or
 * rendering; values are never freed one by one, and lists and dicts are immutable once
 * built (the ImmutableSandboxedEnvironment forbids changing them), except namespaces.
 * Errors unwind with longjmp to the arena's owner (jarena_fail), which is what lets
 * every helper here return plain values: an arena's owner sets FAIL before use.
 *
 * Strings are UTF-8 (checked where they enter); lengths, indices and slices count
 * code points, as Python's str does.
 */
#ifndef LORAD_JINJA_VALUE_H
#define LORAD_JINJA_VALUE_H

#include <jansson.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

struct jarena {
    struct jchunk *chunks;
    size_t used, limit; /* bytes taken, and the most it may take */
    jmp_buf *fail;      /* where jarena_fail unwinds to */
    const char *what;   /* names the template in errors ("DIR/tokenizer_config.json: chat_template") */
    int depth;          /* of the value jv_repr is printing */
};

/* Values nest at most this deep where they are compared or printed (namespaces can make
 * them cyclic); printing deeper fails, and comparing deeper finds them unequal. */
#define JV_MAX_DEPTH 1000

/* N bytes (aligned to 16) from A; unwinds with an error past A's limit. */
void *jarena_alloc(struct jarena *a, size_t n);
void jarena_free(struct jarena *a);
/* Records "WHAT: FMT" (err_set) and unwinds to A's owner. */
_Noreturn void jarena_fail(struct jarena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum jv_type {
    JV_UNDEF, /* u.s: why, as jinja2 words it ("'x' is undefined") */
    JV_NONE,
    JV_BOOL, /* u.i */
    JV_INT,  /* u.i */
    JV_FLOAT,
    JV_STR,
    JV_LIST, /* sub: enum jv_seq */
    JV_DICT,
    JV_NS,   /* a namespace: u.d, the one mutable kind */
    JV_LOOP, /* a for loop's `loop`: u.loop */
    JV_FUNC, /* a global or a bound method: u.fn */
};

enum jv_seq {
    JV_SEQ_LIST,
    JV_SEQ_TUPLE,
    JV_SEQ_GEN,   /* a generator (select, map, ...): no len, no index, always true */
    JV_SEQ_ITEMS, /* dict.items() and friends: len and iteration, printed as dict_items([...]) */
    JV_SEQ_KEYS,
    JV_SEQ_VALUES,
};

struct jlist {
    size_t n;
    struct jv *v;
};

struct jdict {
    size_t n, cap;
    struct jv *k, *v; /* in insertion order */
};

struct jv {
    uint8_t type, sub;
    union {
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct jlist *l;
        struct jdict *d;
        struct jloop *loop;
        struct jfunc *fn;
    } u;
};

/* A for loop's state, read through `loop.*`. */
struct jloop {
    const struct jlist *items;
    size_t index0;
    int depth;
};

/* A callable: ID names it (enum in jinja_builtin.h); SELF is the bound object. */
struct jfunc {
    int id;
    struct jv self;
};

static inline struct jv jv_undef(const char *why) {
    struct jv v = {.type = JV_UNDEF};
    v.u.s.p = why;
    return v;
}
static inline struct jv jv_none(void) { return (struct jv){.type = JV_NONE}; }
static inline struct jv jv_bool(int b) { return (struct jv){.type = JV_BOOL, .u.i = b != 0}; }
static inline struct jv jv_int(int64_t i) { return (struct jv){.type = JV_INT, .u.i = i}; }
static inline struct jv jv_float(double f) { return (struct jv){.type = JV_FLOAT, .u.f = f}; }
/* A str of N bytes at P (not copied: P must live as long as the arena). */
static inline struct jv jv_strn(const char *p, size_t n) {
    struct jv v = {.type = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}
/* A str copied into A. */
struct jv jv_str_copy(struct jarena *a, const char *p, size_t n);
/* A str formatted into A. */
struct jv jv_str_fmt(struct jarena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A sequence of N values (copied) of kind SUB. */
struct jv jv_seq(struct jarena *a, enum jv_seq sub, const struct jv *items, size_t n);
struct jv jv_dict_new(struct jarena *a, int type /* JV_DICT or JV_NS */);
/* Sets KEY to VAL in the dict or namespace D (replacing an equal key). */
void jv_dict_set(struct jarena *a, struct jv d, struct jv key, struct jv val);
/* The value of KEY in D, or NULL. */
const struct jv *jv_dict_get(struct jv d, struct jv key);
struct jv jv_func(struct jarena *a, int id, struct jv self);

static inline int jv_is_num(struct jv v) { return v.type == JV_BOOL || v.type == JV_INT || v.type == JV_FLOAT; }
static inline int jv_is_seq(struct jv v) { return v.type == JV_LIST; }

/* A growing byte buffer in an arena (growth leaves the old copy behind). */
struct jbuf {
    char *p;
    size_t n, cap;
};
void jbuf_put(struct jarena *a, struct jbuf *b, const void *s, size_t n);
static inline void jbuf_puts(struct jarena *a, struct jbuf *b, const char *s) { jbuf_put(a, b, s, __builtin_strlen(s)); }
static inline struct jv jbuf_value(const struct jbuf *b) { return jv_strn(b->p ? b->p : "", b->n); }

/* Python's bool(V). */
int jv_truthy(struct jv v);
/* Python's V == W (1 == 1.0 == True; a list never equals a tuple; dicts ignore order). */
int jv_equal(struct jv v, struct jv w);
/* Python's ordering of V and W: <0, 0, >0; 2 when they cannot be ordered (TypeError). */
int jv_order(struct jv v, struct jv w, int *cmp);
/* Python's str(V) appended to B (an Undefined prints nothing). */
void jv_str(struct jarena *a, struct jbuf *b, struct jv v);
/* Python's repr(V) appended to B. */
void jv_repr(struct jarena *a, struct jbuf *b, struct jv v);
/* V as a str value (str() of anything else). */
struct jv jv_to_str(struct jarena *a, struct jv v);
/* Python's type name of V, as its errors print it ("str", "dict", "NoneType"). */
const char *jv_type_name(struct jv v);
/* Python's repr of the float F ("1e-05", "0.1", "1.0", "inf"). */
void jv_float_repr(double f, char out[32]);

/* The JSON value J as a template value; strings are not copied (J must outlive A's use). */
struct jv jv_from_json(struct jarena *a, const json_t *j);

/* A str's code points: count, and the byte offset of code point I (clamped to the end). */
size_t jv_str_len(struct jv s);
size_t jv_str_offset(struct jv s, size_t i);
/* Whether code point C is white space to Python (str.isspace). */
int jv_py_space(int32_t c);

#endif
