/*
 * jinja_parse.c: a chat template's syntax tree (jinja_syntax.h) from its tokens, with
 * jinja2's grammar and operator precedence (or < and < not < comparisons and `in` <
 * + - < ~ < * / // % < ** < unary - + < filters, tests and calls < . [] ()), and the
 * statements chat templates use: if/elif/else, for (with a filter, tuple targets and
 * else), set (=, namespace attributes, and the block form), generation, break and
 * continue. Another jinja2 tag fails with one line naming it and where it is.
 */
#include <stdio.h>
#include <string.h>

#include "jinja_builtin.h"
#include "jinja_syntax.h"

#define JPARSE_MAX_DEPTH 200

struct jparse {
    struct jarena *a;
    const struct jtok *t; /* the tokens, ending in JT_EOF */
    size_t pos;
    int depth, loops;
};

static const struct jtok *jp_cur(const struct jparse *p) { return &p->t[p->pos]; }
static const struct jtok *jp_next(struct jparse *p) {
    const struct jtok *t = &p->t[p->pos];
    if (t->type != JT_EOF) p->pos++;
    return t;
}

static const char *jp_describe(const struct jtok *t, char *buf, size_t n) {
    static const char *const names[] = {"end of template", "text", "'{{'", "'}}'", "'{%'", "'%}'",
                                        "a name", "a string", "a number", "a number", "an operator"};
    if (t->type == JT_NAME) snprintf(buf, n, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p);
    else snprintf(buf, n, "%s", names[t->type]);
    return buf;
}

_Noreturn static void jp_fail_at(struct jparse *p, const struct jtok *t, const char *fmt, const char *arg) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    jarena_fail(p->a, "line %d:%d: %s", t->line, t->col, msg);
}

_Noreturn static void jp_unexpected(struct jparse *p, const char *wanted) {
    char buf[64], msg[160];
    snprintf(msg, sizeof msg, "expected %s, found %%s", wanted);
    jp_fail_at(p, jp_cur(p), msg, jp_describe(jp_cur(p), buf, sizeof buf));
}

static int jp_is_name(const struct jtok *t, const char *name) {
    return t->type == JT_NAME && t->n == strlen(name) && !memcmp(t->p, name, t->n);
}
static int jp_is_op(const struct jtok *t, enum jop op) { return t->type == JT_OP && t->op == op; }
static int jp_skip_name(struct jparse *p, const char *name) { return jp_is_name(jp_cur(p), name) ? (jp_next(p), 1) : 0; }
static int jp_skip_op(struct jparse *p, enum jop op) { return jp_is_op(jp_cur(p), op) ? (jp_next(p), 1) : 0; }

static void jp_expect_op(struct jparse *p, enum jop op, const char *what) {
    if (!jp_skip_op(p, op)) jp_unexpected(p, what);
}

static struct jnode *jp_node(struct jparse *p, int kind, const struct jtok *at) {
    struct jnode *n = jarena_alloc(p->a, sizeof *n);
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

/* A growing list of nodes. */
struct jp_list {
    struct jnode **v;
    size_t n, cap;
};
static void jp_push(struct jparse *p, struct jp_list *l, struct jnode *n) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct jnode **v = jarena_alloc(p->a, cap * sizeof *v);
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = n;
}

static void jp_enter(struct jparse *p) {
    if (++p->depth > JPARSE_MAX_DEPTH) jp_fail_at(p, jp_cur(p), "%s", "expression nested too deep");
}

static struct jnode *jp_expr(struct jparse *p, int with_cond);
static struct jnode *jp_tuple(struct jparse *p, int with_cond, int explicit_parens);
static struct jnode *jp_unary(struct jparse *p, int with_filter);
static struct jnode *jp_postfix(struct jparse *p, struct jnode *n);

/* Call arguments after '(' up to ')': positional into N->v, name=value into N->w. */
static void jp_call_args(struct jparse *p, struct jnode *n) {
    struct jp_list args = {0}, kwargs = {0};
    while (!jp_skip_op(p, JOP_RPAREN)) {
        if (args.n + kwargs.n) jp_expect_op(p, JOP_COMMA, "',' or ')'");
        if (jp_skip_op(p, JOP_RPAREN)) break;
        if (jp_is_op(jp_cur(p), JOP_MUL) || jp_is_op(jp_cur(p), JOP_POW))
            jp_fail_at(p, jp_cur(p), "%s", "*args and **kwargs in calls are not supported");
        const struct jtok *t = jp_cur(p);
        if (t->type == JT_NAME && jp_is_op(&p->t[p->pos + 1], JOP_ASSIGN)) {
            p->pos += 2;
            struct jnode *kw = jp_node(p, JN_KWARG, t);
            kw->name = t->p, kw->name_n = t->n;
            kw->a = jp_expr(p, 1);
            jp_push(p, &kwargs, kw);
        } else {
            if (kwargs.n) jp_fail_at(p, t, "%s", "a positional argument follows keyword arguments");
            jp_push(p, &args, jp_expr(p, 1));
        }
    }
    n->v = args.v, n->n = args.n, n->w = kwargs.v, n->m = kwargs.n;
}

/* The name of a filter or a test (WHAT) into N, resolved to its builtin id by LOOKUP. */
static void jp_builtin_name(struct jparse *p, struct jnode *n, const char *what, int (*lookup)(const char *, size_t)) {
    const struct jtok *t = jp_cur(p);
    if (t->type != JT_NAME) jp_unexpected(p, "a name");
    jp_next(p);
    n->name = t->p, n->name_n = t->n;
    if (jp_is_op(jp_cur(p), JOP_DOT)) jp_fail_at(p, t, "%s", "dotted filter and test names are not supported");
    char msg[96];
    n->builtin = lookup(n->name, n->name_n);
    snprintf(msg, sizeof msg, n->builtin == -1 ? "no %s named '%.*s'" : "the %s '%.*s' is not supported", what,
             (int)(n->name_n > 40 ? 40 : n->name_n), n->name);
    if (n->builtin < 0) jp_fail_at(p, t, "%s", msg);
}

static struct jnode *jp_filter(struct jparse *p, struct jnode *operand) {
    struct jnode *n = jp_node(p, JN_FILTER, jp_cur(p));
    n->a = operand;
    jp_builtin_name(p, n, "filter", jinja_filter_id);
    if (jp_skip_op(p, JOP_LPAREN)) jp_call_args(p, n);
    return n;
}

/* After `is`: [not] name, then (args) or one bare argument, as jinja2's parse_test. */
static struct jnode *jp_test(struct jparse *p, struct jnode *operand) {
    const struct jtok *at = jp_cur(p);
    struct jnode *n = jp_node(p, JN_TEST, at);
    n->a = operand;
    n->negate = (uint8_t)jp_skip_name(p, "not");
    jp_builtin_name(p, n, "test", jinja_test_id);
    const struct jtok *t = jp_cur(p);
    if (jp_skip_op(p, JOP_LPAREN)) jp_call_args(p, n);
    else if ((t->type == JT_NAME || t->type == JT_STRING || t->type == JT_INT || t->type == JT_FLOAT ||
              jp_is_op(t, JOP_LPAREN) || jp_is_op(t, JOP_LBRACKET) || jp_is_op(t, JOP_LBRACE)) &&
             !jp_is_name(t, "else") && !jp_is_name(t, "or") && !jp_is_name(t, "and")) {
        if (jp_is_name(t, "is")) jp_fail_at(p, t, "%s", "you cannot chain multiple tests with is");
        struct jnode *arg = jp_unary(p, 0);
        n->v = jarena_alloc(p->a, sizeof *n->v);
        n->v[0] = arg;
        n->n = 1;
    }
    return n;
}

/* A subscript: an expression, or a slice [a]:[b][:[c]]. */
static struct jnode *jp_subscribed(struct jparse *p) {
    const struct jtok *at = jp_cur(p);
    struct jnode *start = NULL;
    if (!jp_is_op(at, JOP_COLON)) {
        start = jp_expr(p, 1);
        if (!jp_is_op(jp_cur(p), JOP_COLON)) return start;
    }
    jp_next(p);
    struct jnode *n = jp_node(p, JN_SLICE, at);
    n->a = start;
    const struct jtok *t = jp_cur(p);
    if (!jp_is_op(t, JOP_COLON) && !jp_is_op(t, JOP_RBRACKET) && !jp_is_op(t, JOP_COMMA)) n->b = jp_expr(p, 1);
    if (jp_skip_op(p, JOP_COLON) && !jp_is_op(jp_cur(p), JOP_RBRACKET) && !jp_is_op(jp_cur(p), JOP_COMMA))
        n->c = jp_expr(p, 1);
    return n;
}

static struct jnode *jp_postfix(struct jparse *p, struct jnode *n) {
    for (;;) {
        const struct jtok *at = jp_cur(p);
        if (jp_skip_op(p, JOP_DOT)) {
            size_t start = p->pos;
            const struct jtok *t = jp_next(p);
            struct jnode *g = jp_node(p, t->type == JT_NAME ? JN_GETATTR : JN_GETITEM, at);
            g->a = n;
            if (t->type == JT_NAME) g->name = t->p, g->name_n = t->n;
            else if (t->type == JT_INT) g->b = jp_node(p, JN_CONST, t), g->b->value = jv_int(t->i);
            else p->pos = start, jp_unexpected(p, "a name or a number after '.'");
            n = g;
        } else if (jp_skip_op(p, JOP_LBRACKET)) {
            struct jnode *g = jp_node(p, JN_GETITEM, at);
            g->a = n;
            struct jp_list subs = {0};
            do {
                if (jp_is_op(jp_cur(p), JOP_RBRACKET)) break;
                jp_push(p, &subs, jp_subscribed(p));
            } while (jp_skip_op(p, JOP_COMMA));
            jp_expect_op(p, JOP_RBRACKET, "']'");
            if (subs.n == 1) g->b = subs.v[0];
            else g->b = jp_node(p, JN_TUPLE, at), g->b->v = subs.v, g->b->n = subs.n;
            n = g;
        } else if (jp_skip_op(p, JOP_LPAREN)) {
            struct jnode *c = jp_node(p, JN_CALL, at);
            c->a = n;
            jp_call_args(p, c);
            n = c;
        } else return n;
    }
}

/* [a, b] and {k: v} after their opening bracket. */
static struct jnode *jp_list_or_dict(struct jparse *p, const struct jtok *at, int dict) {
    struct jnode *n = jp_node(p, dict ? JN_DICT : JN_LIST, at);
    struct jp_list keys = {0}, vals = {0};
    enum jop close = dict ? JOP_RBRACE : JOP_RBRACKET;
    while (!jp_skip_op(p, close)) {
        if (keys.n) jp_expect_op(p, JOP_COMMA, dict ? "',' or '}'" : "',' or ']'");
        if (jp_skip_op(p, close)) break;
        jp_push(p, &keys, jp_expr(p, 1));
        if (dict) {
            jp_expect_op(p, JOP_COLON, "':'");
            jp_push(p, &vals, jp_expr(p, 1));
        }
    }
    n->v = keys.v, n->n = keys.n, n->w = vals.v, n->m = vals.n;
    return n;
}

static struct jnode *jp_const(struct jparse *p, const struct jtok *at, struct jv v) {
    struct jnode *n = jp_node(p, JN_CONST, at);
    n->value = v;
    return n;
}

static struct jnode *jp_primary(struct jparse *p) {
    size_t start = p->pos;
    const struct jtok *t = jp_next(p);
    if (t->type == JT_NAME) {
        if (jp_is_name(t, "true") || jp_is_name(t, "True")) return jp_const(p, t, jv_bool(1));
        if (jp_is_name(t, "false") || jp_is_name(t, "False")) return jp_const(p, t, jv_bool(0));
        if (jp_is_name(t, "none") || jp_is_name(t, "None")) return jp_const(p, t, jv_none());
        struct jnode *n = jp_node(p, JN_NAME, t);
        n->name = t->p, n->name_n = t->n;
        return n;
    }
    if (t->type == JT_STRING) { /* adjacent strings are one */
        struct jbuf b = {0};
        jbuf_put(p->a, &b, t->p, t->n);
        while (jp_cur(p)->type == JT_STRING) jbuf_put(p->a, &b, jp_cur(p)->p, jp_cur(p)->n), jp_next(p);
        return jp_const(p, t, jbuf_value(&b));
    }
    if (t->type == JT_INT) return jp_const(p, t, jv_int(t->i));
    if (t->type == JT_FLOAT) return jp_const(p, t, jv_float(t->f));
    if (jp_is_op(t, JOP_LPAREN)) {
        struct jnode *n = jp_tuple(p, 1, 1);
        jp_expect_op(p, JOP_RPAREN, "')'");
        return n;
    }
    if (jp_is_op(t, JOP_LBRACKET)) return jp_list_or_dict(p, t, 0);
    if (jp_is_op(t, JOP_LBRACE)) return jp_list_or_dict(p, t, 1);
    p->pos = start;
    jp_unexpected(p, "an expression");
}

static struct jnode *jp_unary(struct jparse *p, int with_filter) {
    jp_enter(p);
    const struct jtok *t = jp_cur(p);
    struct jnode *n;
    if (jp_skip_op(p, JOP_SUB) || jp_skip_op(p, JOP_ADD)) {
        n = jp_node(p, t->op == JOP_SUB ? JN_NEG : JN_POS, t);
        n->a = jp_unary(p, 0);
    } else n = jp_primary(p);
    n = jp_postfix(p, n);
    while (with_filter) {
        if (jp_skip_op(p, JOP_PIPE)) n = jp_filter(p, n);
        else if (jp_skip_name(p, "is")) n = jp_test(p, n);
        else if (jp_is_op(jp_cur(p), JOP_LPAREN)) n = jp_postfix(p, n);
        else break;
    }
    p->depth--;
    return n;
}

static struct jnode *jp_binop(struct jparse *p, const struct jtok *at, struct jnode *l, struct jnode *r) {
    struct jnode *n = jp_node(p, JN_BINOP, at);
    n->op = at->op;
    n->a = l, n->b = r;
    return n;
}

/* The binary operator levels, loosest first: + -, then ~, then * / // %, then **. */
static struct jnode *jp_level(struct jparse *p, int level) {
    static const enum jop ops[4][4] = {{JOP_ADD, JOP_SUB}, {JOP_TILDE}, {JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD}, {JOP_POW}};
    static const int n_ops[4] = {2, 1, 4, 1};
    if (level == 4) return jp_unary(p, 1);
    struct jnode *l = jp_level(p, level + 1);
    for (;;) {
        const struct jtok *t = jp_cur(p);
        int match = 0;
        for (int k = 0; k < n_ops[level]; k++) match |= jp_is_op(t, ops[level][k]);
        if (!match) return l;
        jp_next(p);
        jp_enter(p);
        l = jp_binop(p, t, l, jp_level(p, level + 1));
        p->depth--;
    }
}

static struct jnode *jp_compare(struct jparse *p) {
    const struct jtok *at = jp_cur(p);
    struct jnode *first = jp_level(p, 0);
    struct jp_list rest = {0};
    uint8_t ops[64];
    for (;;) {
        const struct jtok *t = jp_cur(p);
        int op;
        if (t->type == JT_OP && t->op >= JOP_EQ && t->op <= JOP_LTEQ) op = t->op, jp_next(p);
        else if (jp_skip_name(p, "in")) op = JOP_IN;
        else if (jp_is_name(t, "not") && jp_is_name(&p->t[p->pos + 1], "in")) op = JOP_NOTIN, p->pos += 2;
        else break;
        if (rest.n == sizeof ops) jp_fail_at(p, t, "%s", "too many chained comparisons");
        ops[rest.n] = (uint8_t)op;
        jp_push(p, &rest, jp_level(p, 0));
    }
    if (!rest.n) return first;
    struct jnode *n = jp_node(p, JN_COMPARE, at);
    n->a = first, n->v = rest.v, n->n = rest.n;
    n->ops = jarena_alloc(p->a, rest.n);
    memcpy(n->ops, ops, rest.n);
    return n;
}

static struct jnode *jp_not(struct jparse *p) {
    const struct jtok *t = jp_cur(p);
    if (jp_is_name(t, "not")) {
        jp_next(p);
        jp_enter(p);
        struct jnode *n = jp_node(p, JN_NOT, t);
        n->a = jp_not(p);
        p->depth--;
        return n;
    }
    return jp_compare(p);
}

/* `or` (AND: 0) and `and` (AND: 1) chains. */
static struct jnode *jp_logic(struct jparse *p, int and) {
    struct jnode *l = and ? jp_not(p) : jp_logic(p, 1);
    for (;;) {
        const struct jtok *t = jp_cur(p);
        if (!jp_skip_name(p, and ? "and" : "or")) return l;
        struct jnode *n = jp_node(p, and ? JN_AND : JN_OR, t);
        n->a = l;
        n->b = and ? jp_not(p) : jp_logic(p, 1);
        l = n;
    }
}

static struct jnode *jp_expr(struct jparse *p, int with_cond) {
    jp_enter(p);
    struct jnode *n = jp_logic(p, 0);
    while (with_cond && jp_is_name(jp_cur(p), "if")) {
        struct jnode *c = jp_node(p, JN_COND, jp_next(p));
        c->a = n;
        c->b = jp_logic(p, 0);
        if (jp_skip_name(p, "else")) c->c = jp_expr(p, 1);
        n = c;
    }
    p->depth--;
    return n;
}

/* An expression, or a tuple of them when commas follow. */
static struct jnode *jp_tuple(struct jparse *p, int with_cond, int explicit_parens) {
    const struct jtok *at = jp_cur(p);
    struct jp_list items = {0};
    int comma = 0;
    for (;;) {
        if (items.n && !jp_skip_op(p, JOP_COMMA)) break;
        if (items.n) comma = 1;
        const struct jtok *t = jp_cur(p);
        if (t->type == JT_BLOCK_END || t->type == JT_VAR_END || jp_is_op(t, JOP_RPAREN) || jp_is_name(t, "in") ||
            (!with_cond && jp_is_name(t, "if")) || jp_is_name(t, "recursive")) {
            if (items.n || explicit_parens) break;
        }
        jp_push(p, &items, jp_expr(p, with_cond));
    }
    if (!comma && items.n == 1) return items.v[0];
    if (!items.n && !explicit_parens) jp_unexpected(p, "an expression");
    struct jnode *n = jp_node(p, JN_TUPLE, at);
    n->v = items.v, n->n = items.n;
    return n;
}

static void jp_block_end(struct jparse *p) {
    if (jp_cur(p)->type != JT_BLOCK_END) jp_unexpected(p, "'%}'");
    jp_next(p);
}

/* Statements up to a {% NAME %} with NAME among ENDS (not taken); which one, in *END. */
static struct jnode *jp_body(struct jparse *p, const char *const *ends, const struct jtok *open, const char **end);

/* A for or set target: a name, names with commas, or (SET) ns.attr. */
static struct jnode *jp_target(struct jparse *p, int set) {
    const struct jtok *at = jp_cur(p);
    int parens = jp_skip_op(p, JOP_LPAREN);
    struct jp_list names = {0};
    do {
        const struct jtok *t = jp_cur(p);
        if (t->type != JT_NAME) jp_unexpected(p, "a name to assign");
        jp_next(p);
        struct jnode *n = jp_node(p, JN_NAME, t);
        n->name = t->p, n->name_n = t->n;
        if (set && !parens && !names.n && jp_skip_op(p, JOP_DOT)) {
            if (jp_cur(p)->type != JT_NAME) jp_unexpected(p, "an attribute name");
            const struct jtok *attr = jp_next(p);
            n->kind = JN_NSREF;
            n->attr = attr->p, n->attr_n = attr->n;
            return n;
        }
        jp_push(p, &names, n);
    } while (jp_skip_op(p, JOP_COMMA) && jp_cur(p)->type == JT_NAME);
    if (parens) jp_expect_op(p, JOP_RPAREN, "')'");
    if (names.n == 1 && !parens) return names.v[0];
    struct jnode *n = jp_node(p, JN_TUPLE, at);
    n->v = names.v, n->n = names.n;
    return n;
}

/* After {% else %}: N's else branch, up to and with {% CLOSING %}. */
static void jp_else(struct jparse *p, struct jnode *n, const struct jtok *open, const char *closing) {
    const char *ends[] = {closing, NULL}, *end;
    struct jnode *body = jp_body(p, ends, open, &end);
    n->w = body->v, n->m = body->n;
    jp_block_end(p);
}

static struct jnode *jp_for(struct jparse *p, const struct jtok *open) {
    struct jnode *n = jp_node(p, JN_FOR, open);
    n->a = jp_target(p, 0);
    if (!jp_skip_name(p, "in")) jp_unexpected(p, "'in'");
    n->b = jp_tuple(p, 0, 0);
    if (jp_skip_name(p, "if")) n->c = jp_expr(p, 1);
    if (jp_is_name(jp_cur(p), "recursive")) jp_fail_at(p, jp_cur(p), "%s", "recursive loops are not supported");
    jp_block_end(p);
    static const char *const ends[] = {"endfor", "else", NULL};
    const char *end;
    p->loops++;
    struct jnode *body = jp_body(p, ends, open, &end);
    p->loops--;
    n->v = body->v, n->n = body->n;
    jp_block_end(p);
    if (!strcmp(end, "else")) jp_else(p, n, open, "endfor");
    return n;
}

static struct jnode *jp_if(struct jparse *p, const struct jtok *open) {
    struct jnode *n = jp_node(p, JN_IF, open);
    n->a = jp_tuple(p, 0, 0);
    jp_block_end(p);
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *end;
    struct jnode *body = jp_body(p, ends, open, &end);
    n->v = body->v, n->n = body->n;
    if (!strcmp(end, "elif")) { /* the rest is the else branch: one nested if */
        const struct jtok *at = jp_cur(p);
        n->w = jarena_alloc(p->a, sizeof *n->w);
        n->w[0] = jp_if(p, at);
        n->m = 1;
        return n;
    }
    jp_block_end(p);
    if (!strcmp(end, "else")) jp_else(p, n, open, "endif");
    return n;
}

static struct jnode *jp_set(struct jparse *p, const struct jtok *open) {
    struct jnode *n = jp_node(p, JN_SET, open);
    n->a = jp_target(p, 1);
    if (jp_skip_op(p, JOP_ASSIGN)) {
        n->b = jp_tuple(p, 1, 0);
        jp_block_end(p);
        return n;
    }
    if (jp_is_op(jp_cur(p), JOP_PIPE)) jp_fail_at(p, jp_cur(p), "%s", "filters on a {% set %} block are not supported");
    if (n->a->kind != JN_NAME) jp_unexpected(p, "'='");
    jp_block_end(p);
    static const char *const ends[] = {"endset", NULL};
    const char *end;
    struct jnode *body = jp_body(p, ends, open, &end);
    n->kind = JN_SET_BLOCK;
    n->v = body->v, n->n = body->n;
    jp_block_end(p);
    return n;
}

static struct jnode *jp_generation(struct jparse *p, const struct jtok *open) {
    jp_block_end(p);
    static const char *const ends[] = {"endgeneration", NULL};
    const char *end;
    struct jnode *body = jp_body(p, ends, open, &end);
    body->kind = JN_GENERATION;
    jp_block_end(p);
    return body;
}

/* jinja2's tags that lorad does not implement, named in the error. */
static const char *const jp_unsupported_tags[] = {"macro", "call", "filter", "block", "extends", "include", "import",
                                                  "from", "with", "autoescape", "print", "trans", "pluralize", "do",
                                                  "debug", "endmacro", "endcall", "endfilter", "endblock", NULL};

/* The statement after {% NAME: its node. */
static struct jnode *jp_statement(struct jparse *p, const struct jtok *open) {
    const struct jtok *t = jp_cur(p);
    char name[64];
    if (t->type != JT_NAME) jp_unexpected(p, "a tag name");
    snprintf(name, sizeof name, "%.*s", (int)(t->n > 40 ? 40 : t->n), t->p);
    jp_next(p);
    if (!strcmp(name, "for")) return jp_for(p, open);
    if (!strcmp(name, "if")) return jp_if(p, open);
    if (!strcmp(name, "set")) return jp_set(p, open);
    if (!strcmp(name, "generation")) return jp_generation(p, open);
    if (!strcmp(name, "break") || !strcmp(name, "continue")) {
        if (!p->loops) jp_fail_at(p, t, "'%s' outside a loop", name);
        jp_block_end(p);
        return jp_node(p, name[0] == 'b' ? JN_BREAK : JN_CONTINUE, open);
    }
    for (const char *const *u = jp_unsupported_tags; *u; u++)
        if (!strcmp(name, *u)) jp_fail_at(p, t, "the tag '%s' is not supported", name);
    jp_fail_at(p, t, "unexpected tag '%s'", name);
}

static struct jnode *jp_body(struct jparse *p, const char *const *ends, const struct jtok *open, const char **end) {
    struct jnode *body = jp_node(p, JN_BODY, jp_cur(p));
    struct jp_list stmts = {0};
    jp_enter(p);
    for (;;) {
        const struct jtok *t = jp_next(p);
        if (t->type == JT_EOF) {
            if (!ends) break;
            const char *const *e = ends;
            while (e[1]) e++; /* the closing tag is the last of ENDS */
            char msg[96];
            snprintf(msg, sizeof msg, "this tag is never closed with {%% %s %%}", *e);
            jp_fail_at(p, open, "%s", msg);
        } else if (t->type == JT_DATA) {
            struct jnode *d = jp_node(p, JN_DATA, t);
            d->name = t->p, d->name_n = t->n;
            jp_push(p, &stmts, d);
        } else if (t->type == JT_VAR_BEGIN) {
            struct jnode *o = jp_node(p, JN_OUTPUT, t);
            o->a = jp_tuple(p, 1, 0);
            if (jp_cur(p)->type != JT_VAR_END) jp_unexpected(p, "'}}'");
            jp_next(p);
            jp_push(p, &stmts, o);
        } else if (t->type == JT_BLOCK_BEGIN) {
            for (const char *const *e = ends; e && *e; e++)
                if (jp_is_name(jp_cur(p), *e)) {
                    *end = *e;
                    jp_next(p);
                    goto done;
                }
            jp_push(p, &stmts, jp_statement(p, t));
        } else {
            jp_fail_at(p, t, "%s", "expected text or a tag");
        }
    }
done:
    p->depth--;
    body->v = stmts.v, body->n = stmts.n;
    return body;
}

struct jnode *jinja_parse(struct jarena *a, const char *src, size_t n) {
    size_t count;
    struct jparse p = {.a = a};
    p.t = jinja_lex(a, src, n, &count);
    return jp_body(&p, NULL, NULL, NULL);
}
