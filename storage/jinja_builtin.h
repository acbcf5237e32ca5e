/*
 * jinja_builtin.h: what chat templates call: jinja2's filters and tests
 * (jinja_filter.c), the globals of transformers' environment (range, namespace, dict,
 * raise_exception, strftime_now) and the methods of str and dict values
 * (jinja_call.c), and Hugging Face's tojson (jinja_json.c); and the parts of the
 * renderer (jinja_eval.c) they use.
 *
 * Filter and test names are resolved when the template is parsed, so an unknown or
 * unsupported one fails before anything renders, as jinja2 fails at compile time.
 */
#ifndef LORAD_JINJA_BUILTIN_H
#define LORAD_JINJA_BUILTIN_H

#include "jinja_syntax.h"
#include "jinja_value.h"

/* The arguments of a call: positional, then keyword. */
struct jargs {
    const struct jv *v;
    size_t n;
    const struct jv *kv;
    const char *const *kw; /* NUL-terminated names */
    size_t m;
};

/* The renderer's state (jinja_eval.c). */
struct jrt;

struct jarena *jrt_arena(struct jrt *r);
/* Records "line L:C: FMT" for node AT and unwinds. */
_Noreturn void jrt_fail(struct jrt *r, const struct jnode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fails as using the Undefined V does (its message, "'x' is undefined"). */
_Noreturn void jrt_undefined(struct jrt *r, const struct jnode *at, struct jv v);
/* jinja2's getattr(OBJ, NAME) and getitem(OBJ, KEY): a missing one is an Undefined. */
struct jv jrt_getattr(struct jrt *r, const struct jnode *at, struct jv obj, const char *name, size_t n);
struct jv jrt_getitem(struct jrt *r, const struct jnode *at, struct jv obj, struct jv key);
/* The items iterating V gives (str: its characters; dict: its keys; Undefined: none). */
struct jlist jrt_iterate(struct jrt *r, const struct jnode *at, struct jv v);
/* One more step of work; fails past the render's step limit. */
void jrt_step(struct jrt *r, const struct jnode *at);
/* The template's name in errors. */
const char *jrt_what(struct jrt *r);

/* Binds ARGS to the parameters PARAMS (NPARAM names; "*" ends them and collects the
 * rest of the positional ones into *REST) of the callable FN: OUT[i] is set and bit i
 * of the result is 1 for each given one. Fails on unknown or repeated ones. */
unsigned jargs_bind(struct jrt *r, const struct jnode *at, const char *fn, const struct jargs *args,
                    const char *const *params, size_t nparam, struct jv *out, struct jargs *rest);

/* Filters and tests: the id of NAME (N bytes), or -1 when jinja2 has none by that
 * name, or -2 when jinja2 has one lorad does not implement. */
int jinja_filter_id(const char *name, size_t n);
int jinja_test_id(const char *name, size_t n);
struct jv jinja_filter(struct jrt *r, const struct jnode *at, int id, struct jv v, const struct jargs *args);
int jinja_test(struct jrt *r, const struct jnode *at, int id, struct jv v, const struct jargs *args);
/* A test by name, for select and reject; fails on one that is not implemented. */
int jinja_test_named(struct jrt *r, const struct jnode *at, struct jv name, struct jv v, const struct jargs *args);

/* The global NAME as a callable, or an Undefined's type (JV_UNDEF) when none. */
struct jv jinja_global(struct jrt *r, const char *name, size_t n);
/* The method NAME of SELF (str, dict, a loop) as a bound callable, or JV_UNDEF. */
struct jv jinja_method(struct jrt *r, struct jv self, const char *name, size_t n);
struct jv jinja_call(struct jrt *r, const struct jnode *at, const struct jfunc *f, const struct jargs *args);

/* Python's str methods the filters share. */
struct jv jinja_str_strip(struct jrt *r, struct jv s, const struct jv *chars, int left, int right);
struct jv jinja_str_case(struct jrt *r, struct jv s, int how); /* 'u'pper, 'l'ower, 'c'apitalize, 't'itle */
struct jv jinja_str_replace(struct jrt *r, const struct jnode *at, struct jv s, struct jv old, struct jv new_,
                            int64_t count);

/* HF's tojson: json.dumps(V, ensure_ascii=False, indent=INDENT, separators=SEPS,
 * sort_keys=SORT); INDENT, SEPS: None when JV_NONE. */
struct jv jinja_tojson(struct jrt *r, const struct jnode *at, struct jv v, struct jv indent, struct jv seps, int sort);

#endif
