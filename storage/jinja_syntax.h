/*
 * jinja_syntax.h: a chat template's tokens (jinja_lex.c) and syntax tree
 * (jinja_parse.c), as jinja2 reads them in the environment Hugging Face transformers
 * builds: trim_blocks and lstrip_blocks on, the loopcontrols extension, and the
 * {% generation %} tag of transformers' AssistantTracker.
 *
 * Every token and node carries its template line and column (1-based, columns in
 * bytes), which every error names.
 */
#ifndef LORAD_JINJA_SYNTAX_H
#define LORAD_JINJA_SYNTAX_H

#include <stddef.h>
#include <stdint.h>

#include "jinja_value.h"

enum jtok_type {
    JT_EOF,
    JT_DATA,
    JT_VAR_BEGIN,
    JT_VAR_END,
    JT_BLOCK_BEGIN,
    JT_BLOCK_END,
    JT_NAME,
    JT_STRING, /* p, n: the decoded value */
    JT_INT,
    JT_FLOAT,
    JT_OP,
};

enum jop {
    JOP_ADD,
    JOP_SUB,
    JOP_DIV,
    JOP_FLOORDIV,
    JOP_MUL,
    JOP_MOD,
    JOP_POW,
    JOP_TILDE,
    JOP_LBRACKET,
    JOP_RBRACKET,
    JOP_LPAREN,
    JOP_RPAREN,
    JOP_LBRACE,
    JOP_RBRACE,
    JOP_EQ,
    JOP_NE,
    JOP_GT,
    JOP_GTEQ,
    JOP_LT,
    JOP_LTEQ,
    JOP_ASSIGN,
    JOP_DOT,
    JOP_COLON,
    JOP_PIPE,
    JOP_COMMA,
    JOP_SEMICOLON,
    /* not tokens: the operators `in` and `not in` of comparisons */
    JOP_IN,
    JOP_NOTIN,
};

struct jtok {
    uint8_t type, op;
    int line, col;
    const char *p; /* data, a name, or a string's value */
    size_t n;
    int64_t i;
    double f;
};

/* The tokens of the template SRC (N bytes of UTF-8), ending with JT_EOF, in A.
 * Syntax errors unwind through A with "line L:C: problem". */
struct jtok *jinja_lex(struct jarena *a, const char *src, size_t n, size_t *count);

enum jnode_kind {
    /* expressions */
    JN_CONST, /* value */
    JN_NAME,  /* name */
    JN_LIST,  /* v: items */
    JN_TUPLE, /* v: items */
    JN_DICT,  /* v: keys, w: values */
    JN_GETATTR, /* a.name */
    JN_GETITEM, /* a[b] */
    JN_SLICE,   /* a:b:c, each may be NULL */
    JN_CALL,    /* a(v..., w...) */
    JN_FILTER,  /* a | name(v..., w...); builtin: its id */
    JN_TEST,    /* a is [not] name(v..., w...); builtin: its id */
    JN_KWARG,   /* name=a */
    JN_NOT,
    JN_NEG,
    JN_POS,
    JN_BINOP,   /* a op b */
    JN_AND,
    JN_OR,
    JN_COMPARE, /* a ops[0] v[0] ops[1] v[1] ... */
    JN_COND,    /* a if b else c (c may be NULL) */
    JN_NSREF,   /* name.attr, a {% set %} target */
    /* statements */
    JN_BODY,   /* v: statements */
    JN_DATA,   /* name: the text */
    JN_OUTPUT, /* {{ a }} */
    JN_IF,     /* if a: v, else w */
    JN_FOR,    /* for a in b [if c]: v, else w */
    JN_SET,    /* set a = b */
    JN_SET_BLOCK, /* set a: v */
    JN_GENERATION, /* v */
    JN_BREAK,
    JN_CONTINUE,
};

struct jnode {
    uint8_t kind, op, negate;
    int builtin;
    int line, col;
    struct jnode *a, *b, *c;
    struct jnode **v, **w;
    size_t n, m;
    uint8_t *ops; /* JN_COMPARE: n operators */
    const char *name;
    size_t name_n;
    const char *attr; /* JN_NSREF */
    size_t attr_n;
    struct jv value;
};

/* The template SRC (N bytes) as a JN_BODY, in A; errors unwind through A. */
struct jnode *jinja_parse(struct jarena *a, const char *src, size_t n);

#endif
