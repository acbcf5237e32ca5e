/*
 * tok_pretok.c: the pre-tokenizers (tok_pretok.h).
 */
#include "tok_pretok.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jsonio.h"
#include "tok_json.h"

/* GPT-2's split, which ByteLevel applies when use_regex is on. */
#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Rust's char::is_ascii_punctuation or a Unicode punctuation category. */
#define PUNCT_PATTERN "[\\p{P}!-/:-@\\[-`{-~]"

static int split_add(struct tok_pretok *pt, const char *re, enum tok_split_behavior behavior, int invert,
                     const char *file) {
    struct tok_pre_step *s = TOK_STEP_ADD(pt);
    s->kind = TOK_PRE_SPLIT;
    s->behavior = behavior;
    s->invert = invert;
    return tok_pattern_regex(&s->pattern, re, file);
}

static int behavior_parse(const json_t *j, const char *file, enum tok_split_behavior *out) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    const char *b = NULL;
    int rc = jsonio_get_string(j, "behavior", file, &b);
    if (rc <= 0) return rc < 0 ? -1 : 0; /* absent: the caller's default stays */
    for (int i = 0; i < 5; i++)
        if (!strcmp(b, names[i])) return *out = (enum tok_split_behavior)i, 0;
    return err_set(file, "pre_tokenizer: behavior '%s' is not one of Removed, Isolated, MergedWithPrevious, "
                         "MergedWithNext, Contiguous", b);
}

static int byte_level_parse(struct tok_pretok *pt, const json_t *j, const char *file) {
    int prefix = 1, regex = 1;
    if (jsonio_get_bool(j, "add_prefix_space", file, &prefix) < 0 || jsonio_get_bool(j, "use_regex", file, &regex) < 0)
        return -1;
    if (prefix) TOK_STEP_ADD(pt)->kind = TOK_PRE_PREFIX_SPACE;
    if (regex && split_add(pt, GPT2_PATTERN, TOK_SPLIT_ISOLATED, 0, file)) return -1;
    pt->byte_level = 1;
    return 0;
}

static int metaspace_parse(struct tok_pretok *pt, const json_t *j, const char *file) {
    struct tok_pre_step *s = TOK_STEP_ADD(pt);
    s->kind = TOK_PRE_METASPACE;
    const char *rep = "\xe2\x96\x81", *scheme = NULL;
    int prefix = 1, split = 1;
    if (jsonio_get_string(j, "replacement", file, &rep) < 0 || jsonio_get_bool(j, "split", file, &split) < 0 ||
        jsonio_get_bool(j, "add_prefix_space", file, &prefix) < 0 ||
        jsonio_get_string(j, "prepend_scheme", file, &scheme) < 0)
        return -1;
    if (strlen(rep) == 0 || strlen(rep) >= sizeof s->replacement)
        return err_set(file, "pre_tokenizer: Metaspace replacement '%s' is not one character", rep);
    strcpy(s->replacement, rep);
    s->split = split;
    s->prepend = prefix ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
    if (scheme && !strcmp(scheme, "first")) s->prepend = TOK_PREPEND_FIRST;
    else if (scheme && !strcmp(scheme, "never")) s->prepend = TOK_PREPEND_NEVER;
    else if (scheme && strcmp(scheme, "always"))
        return err_set(file, "pre_tokenizer: prepend_scheme '%s' is not always, first or never", scheme);
    return 0;
}

static int part_parse(void *ctx, const char *type, const json_t *j, const char *file) {
    struct tok_pretok *pt = ctx;
    if (pt->byte_level) {
        err_set(file, "pre_tokenizer: %s after ByteLevel is not supported", type);
        return err_hint("lorad maps bytes in the model, so ByteLevel must come last");
    }
    if (!strcmp(type, "ByteLevel")) return byte_level_parse(pt, j, file);
    if (!strcmp(type, "Metaspace")) return metaspace_parse(pt, j, file);
    if (!strcmp(type, "Whitespace")) return split_add(pt, "\\w+|[^\\w\\s]+", TOK_SPLIT_REMOVED, 1, file);
    if (!strcmp(type, "WhitespaceSplit")) return split_add(pt, "\\s", TOK_SPLIT_REMOVED, 0, file);
    if (!strcmp(type, "Digits")) {
        int individual = 0;
        if (jsonio_get_bool(j, "individual_digits", file, &individual) < 0) return -1;
        return split_add(pt, "\\p{N}", individual ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS, 0, file);
    }
    enum tok_split_behavior behavior = TOK_SPLIT_ISOLATED;
    if (!strcmp(type, "Punctuation"))
        return behavior_parse(j, file, &behavior) ? -1 : split_add(pt, PUNCT_PATTERN, behavior, 0, file);
    if (!strcmp(type, "Split")) {
        struct tok_pre_step *s = TOK_STEP_ADD(pt);
        s->kind = TOK_PRE_SPLIT;
        if (behavior_parse(j, file, &s->behavior) || jsonio_get_bool(j, "invert", file, &s->invert) < 0) return -1;
        return tok_pattern_parse(&s->pattern, json_object_get(j, "pattern"), file);
    }
    return 1;
}

int tok_pretok_parse(struct tok_pretok *pt, const json_t *j, const char *file) {
    memset(pt, 0, sizeof *pt);
    return tok_component_parse(j, file, "pre_tokenizer", "pretokenizers",
                               "ByteLevel, Split, Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit", part_parse,
                               pt);
}

void tok_pretok_free(struct tok_pretok *pt) {
    for (int i = 0; i < pt->n; i++) tok_pattern_free(&pt->steps[i].pattern);
    free(pt->steps);
    memset(pt, 0, sizeof *pt);
}

/* The spans of S that PATTERN matches and those between them, in order. */
struct segments {
    struct segment {
        size_t a, b;
        int match;
    } *v;
    size_t n, cap;
};

static void segment_add(struct segments *sg, size_t a, size_t b, int match) {
    if (sg->n == sg->cap) {
        sg->cap = sg->cap ? sg->cap * 2 : 32;
        sg->v = xrealloc(sg->v, sg->cap * sizeof *sg->v);
    }
    sg->v[sg->n++] = (struct segment){a, b, match};
}

static int segments_find(const struct tok_pattern *p, const char *s, size_t n, struct segments *sg) {
    size_t at = 0, from = 0, a, b;
    int found;
    sg->n = 0;
    while (from <= n && (found = tok_pattern_find(p, s, n, from, &a, &b)) == 1) {
        if (a == b) { /* an empty match splits nothing */
            from = a + (a < n ? utf8_char_len((unsigned char)s[a]) : 1);
            continue;
        }
        if (a > at) segment_add(sg, at, a, 0);
        segment_add(sg, a, b, 1);
        at = from = b;
    }
    if (from <= n && found < 0) return -1;
    if (at < n) segment_add(sg, at, n, 0);
    return 0;
}

/* Hugging Face's split: the segments folded by BEHAVIOR, the matches removed or kept. */
static void segments_fold(struct segments *sg, enum tok_split_behavior behavior, int invert) {
    size_t k = 0;
    int previous = 0;
    if (invert)
        for (size_t i = 0; i < sg->n; i++) sg->v[i].match = !sg->v[i].match;
    if (behavior == TOK_SPLIT_MERGED_WITH_NEXT) { /* folded from the end */
        for (size_t i = sg->n; i-- > 0;) {
            struct segment s = sg->v[i];
            if (s.match && !previous && k) sg->v[sg->n - k].a = s.a;
            else sg->v[sg->n - ++k] = (struct segment){s.a, s.b, s.match};
            previous = s.match;
        }
        memmove(sg->v, sg->v + sg->n - k, k * sizeof *sg->v);
        sg->n = k;
        return;
    }
    for (size_t i = 0; i < sg->n; i++) {
        struct segment s = sg->v[i];
        int merge = behavior == TOK_SPLIT_CONTIGUOUS ? s.match == previous
                    : behavior == TOK_SPLIT_MERGED_WITH_PREVIOUS ? s.match && !previous
                                                                  : 0;
        previous = s.match;
        if (behavior == TOK_SPLIT_REMOVED && s.match) continue;
        if (merge && k) sg->v[k - 1].b = s.b;
        else sg->v[k++] = s;
    }
    sg->n = k;
}

/* One step over the pieces of IN, into OUT. */
static int step_apply(const struct tok_pre_step *st, const struct tok_pieces *in, struct tok_pieces *out,
                      struct segments *sg, struct tok_buf *tmp) {
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->text.p + in->v[i].off;
        size_t n = in->v[i].len;
        int first = in->v[i].first;
        if (n == 0) continue;
        if (st->kind == TOK_PRE_PREFIX_SPACE) {
            tmp->n = 0;
            if (s[0] != ' ') tok_buf_put(tmp, " ", 1);
            tok_buf_put(tmp, s, n);
            tok_pieces_add(out, tmp->p, tmp->n, first);
            continue;
        }
        const struct tok_pattern *p = &st->pattern;
        if (st->kind == TOK_PRE_METASPACE) { /* spaces become the replacement, then the prefix */
            struct tok_pattern space = {.literal = " ", .literal_len = 1};
            tmp->n = 0;
            size_t r = strlen(st->replacement);
            int starts = n >= 1 && (s[0] == ' ' || (n >= r && !memcmp(s, st->replacement, r)));
            if (!starts && (st->prepend == TOK_PREPEND_ALWAYS || (st->prepend == TOK_PREPEND_FIRST && first)))
                tok_buf_put(tmp, st->replacement, r);
            tok_pattern_replace(&space, s, n, st->replacement, tmp);
            if (!st->split) {
                tok_pieces_add(out, tmp->p, tmp->n, first);
                continue;
            }
            s = tmp->p;
            n = tmp->n;
        }
        struct tok_pattern rep = {.literal = (char *)st->replacement, .literal_len = strlen(st->replacement)};
        if (st->kind == TOK_PRE_METASPACE) p = &rep;
        if (segments_find(p, s, n, sg)) return -1;
        segments_fold(sg, st->kind == TOK_PRE_METASPACE ? TOK_SPLIT_MERGED_WITH_NEXT : st->behavior,
                      st->kind == TOK_PRE_SPLIT && st->invert);
        for (size_t k = 0; k < sg->n; k++)
            if (sg->v[k].b > sg->v[k].a) tok_pieces_add(out, s + sg->v[k].a, sg->v[k].b - sg->v[k].a, first && sg->v[k].a == 0);
    }
    return 0;
}

int tok_pretok_split(const struct tok_pretok *pt, const char *s, size_t n, int first, struct tok_pieces *out,
                     struct tok_pieces scratch[2]) {
    if (pt->n == 0) {
        if (n) tok_pieces_add(out, s, n, first);
        return 0;
    }
    struct segments sg = {0};
    struct tok_buf tmp = {0};
    tok_pieces_clear(&scratch[0]);
    tok_pieces_add(&scratch[0], s, n, first);
    int rc = 0;
    for (int i = 0; i < pt->n && rc == 0; i++) {
        struct tok_pieces *from = &scratch[i % 2], *to = i + 1 == pt->n ? out : &scratch[(i + 1) % 2];
        if (to != out) tok_pieces_clear(to);
        rc = step_apply(&pt->steps[i], from, to, &sg, &tmp);
    }
    free(sg.v);
    tok_buf_free(&tmp);
    return rc;
}
