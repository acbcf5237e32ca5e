/*
 * bpe.c: the BPE model (bpe.h).
 */
#include "bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jsonio.h"

/* TOKEN's key in the vocabulary: itself, or under byte_level the bytes its characters
 * stand for. 0 when a byte-level token has a character that stands for no byte (no
 * input can reach it). */
static int token_key(const struct bpe *b, const struct byte_level_map *m, const char *token, size_t n,
                     struct tok_buf *key) {
    key->n = 0;
    if (!b->byte_level) {
        tok_buf_put(key, token, n);
        return 1;
    }
    for (size_t i = 0, k; i < n; i += k) {
        int byte = byte_level_byte(m, utf8_decode(token + i, n - i, &k));
        if (byte < 0) return 0;
        unsigned char c = (unsigned char)byte;
        tok_buf_put(key, &c, 1);
    }
    return 1;
}

static int vocab_parse(struct bpe *b, const json_t *vocab, const char *file, const struct byte_level_map *m,
                       char ***tokens, int32_t *n_tokens) {
    if (!json_is_object(vocab) || json_object_size(vocab) == 0) return err_set(file, "model: no \"vocab\" object");
    const char *tok;
    json_t *v;
    json_int_t top = -1;
    json_object_foreach((json_t *)vocab, tok, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24))
            return err_set(file, "model: vocab: \"%s\" has no id in [0, 16777216)", tok);
        if (json_integer_value(v) > top) top = json_integer_value(v);
    }
    *n_tokens = (int32_t)top + 1;
    *tokens = xcalloc((size_t)*n_tokens, sizeof **tokens);
    struct tok_buf key = {0};
    json_object_foreach((json_t *)vocab, tok, v) {
        int32_t id = (int32_t)json_integer_value(v);
        size_t n = strlen(tok);
        if ((*tokens)[id]) {
            tok_buf_free(&key);
            return err_set(file, "model: vocab: id %d belongs to two tokens", id);
        }
        (*tokens)[id] = xstrdup(tok);
        if (token_key(b, m, tok, n, &key)) strmap_put(&b->vocab, key.p, key.n, id);
    }
    tok_buf_free(&key);
    return 0;
}

/* The id of TOKEN (its vocabulary string); -1 with an error when it has none. */
static int32_t token_id(const struct bpe *b, const struct byte_level_map *m, const char *token, size_t n,
                        struct tok_buf *key, const char *file) {
    int32_t id;
    if (token_key(b, m, token, n, key) && strmap_get(&b->vocab, key->p, key->n, &id)) return id;
    err_set(file, "model: merges: '%.*s' is not in the vocabulary", (int)n, token);
    return -1;
}

/* One merge: A and B as strings ("a b", or the pair ["a", "b"]). */
static int merge_add(struct bpe *b, const struct byte_level_map *m, int32_t rank, const char *a, size_t na,
                     const char *bb, size_t nb, struct tok_buf *key, struct tok_buf *joined, const char *file) {
    int32_t ia = token_id(b, m, a, na, key, file), ib = ia < 0 ? -1 : token_id(b, m, bb, nb, key, file);
    if (ib < 0) return -1;
    size_t skip = strlen(b->prefix) && nb >= strlen(b->prefix) && !memcmp(bb, b->prefix, strlen(b->prefix))
                      ? strlen(b->prefix)
                      : 0;
    joined->n = 0;
    tok_buf_put(joined, a, na);
    tok_buf_put(joined, bb + skip, nb - skip);
    int32_t to = token_id(b, m, joined->p, joined->n, key, file);
    if (to < 0) return -1;
    int32_t pair[2] = {ia, ib};
    strmap_put(&b->merges, pair, sizeof pair, rank); /* a repeated pair takes its last rank, as Hugging Face's map */
    b->merge_to[rank] = to;
    return 0;
}

static int merges_parse(struct bpe *b, const json_t *merges, const char *file, const struct byte_level_map *m) {
    if (!json_is_array(merges)) return err_set(file, "model: no \"merges\" list");
    b->merge_to = xcalloc(json_array_size(merges) + 1, sizeof *b->merge_to);
    struct tok_buf key = {0}, joined = {0};
    size_t i;
    json_t *item;
    int rc = 0;
    json_array_foreach((json_t *)merges, i, item) {
        const char *a, *bb, *sp;
        size_t na, nb;
        if (json_is_string(item) && (sp = strchr(json_string_value(item), ' ')) && sp != json_string_value(item)) {
            a = json_string_value(item);
            na = (size_t)(sp - a);
            bb = sp + 1;
            nb = json_string_length(item) - na - 1;
        } else if (json_is_array(item) && json_array_size(item) == 2 && json_is_string(json_array_get(item, 0)) &&
                   json_is_string(json_array_get(item, 1))) {
            a = json_string_value(json_array_get(item, 0));
            na = json_string_length(json_array_get(item, 0));
            bb = json_string_value(json_array_get(item, 1));
            nb = json_string_length(json_array_get(item, 1));
        } else {
            rc = err_set(file, "model: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
            break;
        }
        if ((rc = merge_add(b, m, (int32_t)i, a, na, bb, nb, &key, &joined, file))) break;
    }
    tok_buf_free(&key);
    tok_buf_free(&joined);
    return rc;
}

/* The id of "<0xAB>" for each byte, or -1. */
static void fallback_ids(struct bpe *b) {
    for (int i = 0; i < 256; i++) {
        char t[8];
        snprintf(t, sizeof t, "<0x%02X>", i);
        if (!strmap_get(&b->vocab, t, strlen(t), &b->byte_id[i])) b->byte_id[i] = -1;
    }
}

static int options_parse(struct bpe *b, const json_t *model, const char *file) {
    const char *s = NULL;
    if (jsonio_get_bool(model, "byte_fallback", file, &b->byte_fallback) < 0 ||
        jsonio_get_bool(model, "fuse_unk", file, &b->fuse_unk) < 0 ||
        jsonio_get_bool(model, "ignore_merges", file, &b->ignore_merges) < 0)
        return -1;
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0))
        return err_set(file, "model: BPE dropout is not supported (it makes encoding random)");
    int rc = jsonio_get_string(model, "continuing_subword_prefix", file, &s);
    b->prefix = xstrdup(rc > 0 ? s : "");
    s = NULL;
    if (rc < 0 || (rc = jsonio_get_string(model, "end_of_word_suffix", file, &s)) < 0) return -1;
    b->suffix = xstrdup(rc > 0 ? s : "");
    if (b->byte_level && (b->prefix[0] || b->suffix[0]))
        return err_set(file, "model: continuing_subword_prefix or end_of_word_suffix with ByteLevel is not supported");
    return 0;
}

int bpe_parse(struct bpe *b, const json_t *model, const char *file, int byte_level, char ***tokens, int32_t *n_tokens) {
    memset(b, 0, sizeof *b);
    b->unk = -1;
    b->byte_level = byte_level;
    *tokens = NULL;
    *n_tokens = 0;
    struct byte_level_map m;
    byte_level_map_init(&m);
    if (options_parse(b, model, file) || vocab_parse(b, json_object_get(model, "vocab"), file, &m, tokens, n_tokens) ||
        merges_parse(b, json_object_get(model, "merges"), file, &m))
        return -1;
    const char *unk = NULL;
    int rc = jsonio_get_string(model, "unk_token", file, &unk);
    if (rc < 0) return -1;
    if (rc > 0 && !strmap_get(&b->vocab, unk, strlen(unk), &b->unk))
        return err_set(file, "model: unk_token '%s' is not in the vocabulary", unk);
    if (!byte_level) {
        fallback_ids(b);
        return 0;
    }
    for (int i = 0; i < 256; i++) {
        unsigned char c = (unsigned char)i;
        if (!strmap_get(&b->vocab, &c, 1, &b->byte_id[i])) b->byte_id[i] = -1;
    }
    return 0;
}

void bpe_free(struct bpe *b) {
    strmap_free(&b->vocab);
    strmap_free(&b->merges);
    free(b->merge_to);
    free(b->prefix);
    free(b->suffix);
    memset(b, 0, sizeof *b);
}

void bpe_work_free(struct bpe_work *w) {
    free(w->sym);
    free(w->heap);
    tok_buf_free(&w->buf);
    memset(w, 0, sizeof *w);
}

/* Appends symbol ID to the word in W (N symbols so far). */
static void sym_push(struct bpe_work *w, size_t *n, int32_t id) {
    if (*n == w->sym_cap) {
        w->sym_cap = w->sym_cap ? w->sym_cap * 2 : 64;
        w->sym = xrealloc(w->sym, w->sym_cap * sizeof *w->sym);
    }
    w->sym[*n] = (struct bpe_sym){.id = id, .prev = (int32_t)*n - 1, .next = (int32_t)*n + 1};
    (*n)++;
}

/* An unknown character: unk (fused with an unk just before when fuse_unk), or nothing. */
static void unk_push(const struct bpe *b, struct bpe_work *w, size_t *n) {
    if (b->unk < 0) return; /* no unk_token: Hugging Face drops the character */
    if (b->fuse_unk && *n && w->sym[*n - 1].id == b->unk) return;
    sym_push(w, n, b->unk);
}

/* The initial symbols of WORD: its bytes under byte_level, else its characters (with
 * the prefix on all but the first, the suffix on the last), falling back to bytes. */
static size_t symbols(const struct bpe *b, const char *word, size_t n, struct bpe_work *w) {
    size_t count = 0;
    if (b->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = b->byte_id[(unsigned char)word[i]];
            if (id >= 0) sym_push(w, &count, id);
            else unk_push(b, w, &count);
        }
        return count;
    }
    for (size_t i = 0, k; i < n; i += k) {
        k = utf8_char_len((unsigned char)word[i]);
        if (k > n - i) k = n - i;
        w->buf.n = 0;
        if (i > 0) tok_buf_put(&w->buf, b->prefix, strlen(b->prefix));
        tok_buf_put(&w->buf, word + i, k);
        if (i + k == n) tok_buf_put(&w->buf, b->suffix, strlen(b->suffix));
        int32_t id;
        if (strmap_get(&b->vocab, w->buf.p, w->buf.n, &id)) {
            sym_push(w, &count, id);
            continue;
        }
        int all = b->byte_fallback;
        for (size_t j = 0; j < k && all; j++) all = b->byte_id[(unsigned char)word[i + j]] >= 0;
        if (all)
            for (size_t j = 0; j < k; j++) sym_push(w, &count, b->byte_id[(unsigned char)word[i + j]]);
        else
            unk_push(b, w, &count);
    }
    return count;
}

static int pair_less(const struct bpe_pair *x, const struct bpe_pair *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(struct bpe_work *w, size_t *n, struct bpe_pair p) {
    if (*n == w->heap_cap) {
        w->heap_cap = w->heap_cap ? w->heap_cap * 2 : 64;
        w->heap = xrealloc(w->heap, w->heap_cap * sizeof *w->heap);
    }
    size_t i = (*n)++;
    while (i > 0 && pair_less(&p, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = p;
}

static struct bpe_pair heap_pop(struct bpe_work *w, size_t *n) {
    struct bpe_pair top = w->heap[0], last = w->heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && pair_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!pair_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (*n) w->heap[i] = last;
    return top;
}

/* Queues the merge of the symbol at POS with its next, when the merges have one. */
static void pair_queue(const struct bpe *b, struct bpe_work *w, size_t *heap_n, int32_t pos, size_t count) {
    if (pos < 0 || w->sym[pos].next >= (int32_t)count) return;
    int32_t pair[2] = {w->sym[pos].id, w->sym[w->sym[pos].next].id}, rank;
    if (strmap_get(&b->merges, pair, sizeof pair, &rank))
        heap_push(w, heap_n, (struct bpe_pair){.rank = rank, .pos = pos, .left = pair[0], .right = pair[1]});
}

void bpe_encode(const struct bpe *b, const char *word, size_t n, struct tok_ids *out, struct bpe_work *w) {
    int32_t id;
    if (b->ignore_merges && strmap_get(&b->vocab, word, n, &id)) {
        tok_ids_push(out, id);
        return;
    }
    size_t count = symbols(b, word, n, w), heap_n = 0;
    for (size_t i = 0; i + 1 < count; i++) pair_queue(b, w, &heap_n, (int32_t)i, count);
    while (heap_n) {
        struct bpe_pair p = heap_pop(w, &heap_n);
        struct bpe_sym *s = &w->sym[p.pos];
        if (s->id != p.left || s->next >= (int32_t)count || w->sym[s->next].id != p.right) continue; /* stale */
        int32_t gone = s->next;
        s->id = b->merge_to[p.rank];
        s->next = w->sym[gone].next;
        w->sym[gone].id = -1; /* merged away */
        if (s->next < (int32_t)count) w->sym[s->next].prev = p.pos;
        pair_queue(b, w, &heap_n, s->prev, count);
        pair_queue(b, w, &heap_n, p.pos, count);
    }
    for (int32_t i = 0; i < (int32_t)count && count; i = w->sym[i].next) tok_ids_push(out, w->sym[i].id);
}
