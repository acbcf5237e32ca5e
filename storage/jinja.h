/*
 * jinja.h: chat templates: the subset of Jinja that Hugging Face chat templates use,
 * rendered byte for byte as transformers renders them (jinja2's
 * ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loopcontrols; the
 * globals raise_exception and strftime_now; HF's tojson filter; the {% generation %}
 * tag, whose output spans are recorded for assistant-only loss masks).
 *
 * The engine is split by concept: jinja_lex.c (tokens and whitespace control),
 * jinja_parse.c (the syntax tree), jinja_eval.c (rendering), jinja_value.c (Python's
 * values), jinja_filter.c (filters and tests), jinja_call.c (globals and methods),
 * jinja_json.c (tojson). A construct outside the subset fails with one line naming it
 * and its template line:col; so do syntax errors, raise_exception (with the template's
 * message) and using an undefined value as jinja2's default Undefined refuses to.
 */
#ifndef LORAD_JINJA_H
#define LORAD_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jinja_value.h"
#include "tok_text.h"

struct jinja_template {
    struct jarena arena; /* the syntax tree and its strings */
    struct jnode *root;
    char *what; /* names the template in errors */
};

/* Bounds on one render, so that no template runs away (a loop over range(10**9)). */
struct jinja_limits {
    size_t max_bytes;   /* memory, output included */
    uint64_t max_steps; /* statements and expressions evaluated */
};
#define JINJA_MAX_BYTES ((size_t)512 << 20)
#define JINJA_MAX_STEPS ((uint64_t)100000000)

/* Parses SRC (N bytes); WHAT names it in errors ("DIR/tokenizer_config.json:
 * chat_template"). 0, or -1 with an error "WHAT: line L:C: problem". */
int jinja_template_parse(struct jinja_template *t, const char *src, size_t n, const char *what);
void jinja_template_free(struct jinja_template *t);

/* A byte range [start, end) of the output that a {% generation %} block produced. */
struct jinja_span {
    size_t start, end;
};

struct jinja_output {
    struct tok_buf text;
    struct jinja_span *spans; /* in output order; blocks rendered inside {% set %} blocks are not kept */
    size_t n_spans;
};

/* Renders T with the variables VARS (a JSON object: each key is a template variable,
 * its value converted as Python's json module would), within LIMITS (NULL: the
 * defaults). OUT is overwritten. 0, or -1 with an error naming T and the place. */
int jinja_render(const struct jinja_template *t, const json_t *vars, const struct jinja_limits *limits,
                 struct jinja_output *out);
void jinja_output_free(struct jinja_output *o);

#endif
