/*
 * tokenizer.c: loading a tokenizer, the added tokens, and the encode and decode
 * pipelines (tokenizer.h).
 */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "error.h"
#include "fileio.h"
#include "jsonio.h"

#define CACHE_WORD_MAX 64       /* longer words are not cached */
#define CACHE_IDS_MAX (1 << 22) /* the cache starts afresh past this many ids */

static int added_parse(struct tokenizer *t, const json_t *list, const char *file) {
    if (!list || json_is_null(list)) return 0;
    if (!json_is_array(list)) return err_set(file, "added_tokens: not a list");
    t->added = xcalloc(json_array_size(list) + 1, sizeof *t->added);
    size_t i;
    const json_t *a;
    json_array_foreach(list, i, a) {
        struct tok_added *x = &t->added[t->n_added];
        const char *content = NULL;
        int32_t id = -1;
        if (jsonio_get_string(a, "content", file, &content) <= 0 || jsonio_get_i32(a, "id", file, &id) <= 0 || id < 0 ||
            id >= (1 << 24) || !content[0])
            return err_set(file, "added_tokens[%zu]: needs a non-empty \"content\" and an \"id\" in [0, 16777216)", i);
        x->normalized = 1;
        if (jsonio_get_bool(a, "special", file, &x->special) < 0 || jsonio_get_bool(a, "lstrip", file, &x->lstrip) < 0 ||
            jsonio_get_bool(a, "rstrip", file, &x->rstrip) < 0 ||
            jsonio_get_bool(a, "single_word", file, &x->single_word) < 0 ||
            jsonio_get_bool(a, "normalized", file, &x->normalized) < 0)
            return -1;
        x->content = xstrdup(content);
        x->len = strlen(content);
        x->id = id;
        t->n_added++;
    }
    return 0;
}

/* The id table grown to cover the added tokens, which name their ids. */
static void added_ids(struct tokenizer *t) {
    int32_t n = t->n_tokens;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id >= n) n = t->added[i].id + 1;
    t->token = xrealloc(t->token, (size_t)n * sizeof *t->token);
    memset(t->token + t->n_tokens, 0, (size_t)(n - t->n_tokens) * sizeof *t->token);
    t->special = xcalloc((size_t)n, 1);
    t->n_tokens = n;
    for (int i = 0; i < t->n_added; i++) {
        struct tok_added *a = &t->added[i];
        free(t->token[a->id]);
        t->token[a->id] = xstrdup(a->content);
        t->special[a->id] = (unsigned char)a->special;
        t->added_first[a->normalized][(unsigned char)a->content[0]] = 1;
    }
}

static int model_parse(struct tokenizer *t, const json_t *model, const char *file) {
    if (!json_is_object(model)) return err_set(file, "no \"model\" object");
    const char *type = NULL;
    if (jsonio_get_string(model, "type", file, &type) < 0) return -1;
    if (!type && json_object_get(model, "merges")) type = "BPE"; /* untagged, as serde reads it */
    if (!type || strcmp(type, "BPE")) {
        err_set(file, "model: type '%s' is not supported", type ? type : "(none)");
        return err_hint("lorad reads BPE models (GPT-2, Llama 2 and 3, Mistral, Qwen2)");
    }
    return bpe_parse(&t->bpe, model, file, t->pretok.byte_level, &t->token, &t->n_tokens);
}

/* The tokenizer described by ROOT (tokenizer.json's object), read from FILE. */
static int tokenizer_build(struct tokenizer *t, const json_t *root, const char *file) {
    if (tok_normalizer_parse(&t->normalizer, json_object_get(root, "normalizer"), file) ||
        tok_pretok_parse(&t->pretok, json_object_get(root, "pre_tokenizer"), file) ||
        model_parse(t, json_object_get(root, "model"), file) ||
        tok_post_parse(&t->post, json_object_get(root, "post_processor"), file) ||
        tok_decoder_parse(&t->decoder, json_object_get(root, "decoder"), file) ||
        added_parse(t, json_object_get(root, "added_tokens"), file))
        return -1;
    added_ids(t);
    return 0;
}

/* Merge LINE (LEN bytes, line NO of PATH) of merges.txt: "a b" with a, b and ab in
 * VOCAB (vocab.json's object). 0, or -1 with an error at PATH:NO. */
static int legacy_merge_check(const json_t *vocab, const char *line, size_t len, int64_t no, const char *path) {
    const char *sp = memchr(line, ' ', len);
    char where[4200];
    snprintf(where, sizeof where, "%s:%lld", path, (long long)no);
    if (!sp || sp == line || sp + 1 == line + len || memchr(sp + 1, ' ', (size_t)(line + len - sp - 1)))
        return err_set(where, "'%.*s' is not a merge \"a b\" of two tokens", (int)(len < 80 ? len : 80), line);
    const size_t na = (size_t)(sp - line), nb = len - na - 1;
    char *joined = xmalloc(na + nb);
    memcpy(joined, line, na);
    memcpy(joined + na, sp + 1, nb);
    const char *parts[3] = {line, sp + 1, joined};
    const size_t lens[3] = {na, nb, na + nb};
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        if (!json_object_getn(vocab, parts[i], lens[i]))
            rc = err_set(where, "'%.*s' is not in vocab.json", (int)(lens[i] < 80 ? lens[i] : 80), parts[i]);
    free(joined);
    return rc;
}

/* GPT-2's legacy files as the tokenizer.json they stand for: a byte-level BPE with
 * GPT-2's split, and <|endoftext|> special as GPT2Tokenizer has it. Each merge line is
 * checked here, where its line number is known. */
static json_t *legacy_json(const char *dir, char **file) {
    char *vocab_path = path_join(dir, "vocab.json"), *merges_path = path_join(dir, "merges.txt");
    json_t *vocab = jsonio_read(vocab_path), *root = NULL;
    size_t n;
    char *text = vocab && json_is_object(vocab) ? file_read_all(merges_path, &n) : NULL;
    *file = xstrdup(merges_path);
    if (vocab && !json_is_object(vocab)) err_set(vocab_path, "is not a JSON object of token ids");
    if (text) {
        json_t *merges = json_array();
        int64_t no = 1;
        int bad = 0;
        for (char *line = text, *end; line < text + n && !bad; line = end + 1, no++) {
            end = memchr(line, '\n', (size_t)(text + n - line));
            if (!end) end = text + n;
            size_t len = (size_t)(end - line) - (end > line && end[-1] == '\r');
            if (!len || (line == text && !strncmp(line, "#version", 8))) continue;
            bad = legacy_merge_check(vocab, line, len, no, merges_path) != 0;
            json_array_append_new(merges, json_stringn(line, len));
        }
        if (bad) {
            json_decref(merges);
            free(text);
            json_decref(vocab);
            free(vocab_path);
            free(merges_path);
            return NULL;
        }
        json_int_t eot = json_integer_value(json_object_get(vocab, "<|endoftext|>"));
        root = json_pack("{s:{s:s, s:O, s:o}, s:{s:s, s:b, s:b}, s:{s:s}, s:{s:s}, s:[]}", "model", "type", "BPE", "vocab",
                         vocab, "merges", merges, "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0,
                         "use_regex", 1, "decoder", "type", "ByteLevel", "post_processor", "type", "ByteLevel",
                         "added_tokens");
        if (json_object_get(vocab, "<|endoftext|>"))
            json_array_append_new(json_object_get(root, "added_tokens"),
                                  json_pack("{s:I, s:s, s:b}", "id", eot, "content", "<|endoftext|>", "special", 1));
    }
    free(text);
    json_decref(vocab);
    free(vocab_path);
    free(merges_path);
    return root;
}

int tokenizer_open(struct tokenizer *t, const char *dir) {
    memset(t, 0, sizeof *t);
    char *file = path_join(dir, "tokenizer.json"), *legacy = path_join(dir, "vocab.json");
    json_t *root;
    if (access(file, F_OK) != 0 && access(legacy, F_OK) == 0) {
        free(file);
        root = legacy_json(dir, &file);
    } else if (!(root = jsonio_read(file)) && access(file, F_OK) != 0) {
        err_hint("the directory needs tokenizer.json, or GPT-2's vocab.json and merges.txt");
    }
    int rc = root ? tokenizer_build(t, root, file) : -1;
    json_decref(root);
    free(file);
    free(legacy);
    if (rc) tokenizer_free(t);
    return rc;
}

void tokenizer_free(struct tokenizer *t) {
    for (int32_t i = 0; i < t->n_tokens && t->token; i++) free(t->token[i]);
    free(t->token);
    free(t->special);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    tok_normalizer_free(&t->normalizer);
    tok_pretok_free(&t->pretok);
    bpe_free(&t->bpe);
    tok_post_free(&t->post);
    tok_decoder_free(&t->decoder);
    memset(t, 0, sizeof *t);
}

const char *tokenizer_token(const struct tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_tokens ? t->token[id] : NULL;
}

int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, int skip_special, struct tok_buf *out) {
    struct tok_pieces tokens = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *s = tokenizer_token(t, ids[i]);
        if (!s) rc = err_set("decode", "id %d is not in the vocabulary (%d ids)", ids[i], t->n_tokens);
        else if (!(skip_special && t->special[ids[i]])) tok_pieces_add(&tokens, s, strlen(s), 0);
    }
    if (rc == 0) rc = tok_decode(&t->decoder, &tokens, out);
    tok_pieces_free(&tokens);
    return rc;
}

void tok_encoder_init(struct tok_encoder *e, const struct tokenizer *t) {
    memset(e, 0, sizeof *e);
    e->t = t;
}

void tok_encoder_free(struct tok_encoder *e) {
    strmap_free(&e->cache);
    tok_ids_free(&e->cache_ids);
    bpe_work_free(&e->work);
    tok_pieces_free(&e->pieces);
    tok_pieces_free(&e->scratch[0]);
    tok_pieces_free(&e->scratch[1]);
    tok_buf_free(&e->normalized);
    memset(e, 0, sizeof *e);
}

/* A word's ids, from the cache or the model (then cached). */
static void word_encode(struct tok_encoder *e, const char *w, size_t n, struct tok_ids *out) {
    int32_t at;
    if (n <= CACHE_WORD_MAX && strmap_get(&e->cache, w, n, &at)) {
        for (int32_t k = 0; k < e->cache_ids.v[at]; k++) tok_ids_push(out, e->cache_ids.v[at + 1 + k]);
        return;
    }
    size_t from = out->n;
    bpe_encode(&e->t->bpe, w, n, out, &e->work);
    if (n > CACHE_WORD_MAX) return;
    if (e->cache_ids.n + out->n - from + 1 > CACHE_IDS_MAX) { /* full: start afresh */
        strmap_free(&e->cache);
        e->cache_ids.n = 0;
    }
    strmap_put(&e->cache, w, n, (int32_t)e->cache_ids.n);
    tok_ids_push(&e->cache_ids, (int32_t)(out->n - from));
    for (size_t k = from; k < out->n; k++) tok_ids_push(&e->cache_ids, out->v[k]);
}

/* Normalized text between added tokens: pre-tokenized and encoded. */
static int text_encode(struct tok_encoder *e, const char *s, size_t n, int first, struct tok_ids *out) {
    tok_pieces_clear(&e->pieces);
    if (tok_pretok_split(&e->t->pretok, s, n, first, &e->pieces, e->scratch)) return -1;
    for (size_t i = 0; i < e->pieces.n; i++)
        word_encode(e, e->pieces.text.p + e->pieces.v[i].off, e->pieces.v[i].len, out);
    return 0;
}

/* Where the character that ends S[0, n) starts (N > 0). */
static size_t char_before(const char *s, size_t n) {
    size_t a = n - 1;
    while (a > 0 && ((unsigned char)s[a] & 0xC0) == 0x80) a--;
    return a;
}

/* The code point that ends S[0, n), or -1 when N is 0. */
static int32_t last_char(const char *s, size_t n) {
    size_t k;
    return n ? utf8_decode(s + char_before(s, n), n - char_before(s, n), &k) : -1;
}

static int is_word_char(int32_t c) {
    if (c < 0) return 0;
    utf8proc_category_t cat = utf8proc_category(c);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

/* The longest added token of the class NORMALIZED at S[i..n), or NULL. */
static const struct tok_added *added_at(const struct tokenizer *t, const char *s, size_t n, size_t i, int normalized) {
    const struct tok_added *best = NULL;
    if (!t->added_first[normalized][(unsigned char)s[i]]) return NULL;
    for (int k = 0; k < t->n_added; k++) {
        const struct tok_added *a = &t->added[k];
        if (a->normalized == normalized && a->content[0] == s[i] && a->len <= n - i && (!best || a->len > best->len) &&
            memcmp(s + i, a->content, a->len) == 0)
            best = a;
    }
    return best;
}

/* S split on the added tokens of class NORMALIZED, leftmost-longest as Hugging Face's
 * Aho-Corasick, with single_word, lstrip and rstrip: each token's id goes to OUT, each
 * stretch of text between to TEXT (with FIRST: it starts the input). */
static int added_split(struct tok_encoder *e, const char *s, size_t n, int normalized, int first, struct tok_ids *out,
                       int (*text)(struct tok_encoder *, const char *, size_t, int, struct tok_ids *)) {
    size_t done = 0, k;
    for (size_t i = 0; i < n;) {
        const struct tok_added *a = added_at(e->t, s, n, i, normalized);
        if (!a) {
            i++;
            continue;
        }
        size_t start = i, stop = i + a->len;
        i = stop;
        if (a->single_word && (is_word_char(last_char(s, start)) || (stop < n && is_word_char(utf8_decode(s + stop, n - stop, &k)))))
            continue;
        while (a->lstrip && start > done && uni_is_space(last_char(s, start))) start = char_before(s, start);
        while (a->rstrip && stop < n && uni_is_space(utf8_decode(s + stop, n - stop, &k))) stop += k;
        if (start > done && text(e, s + done, start - done, first && done == 0, out)) return -1;
        tok_ids_push(out, a->id);
        done = stop;
    }
    return done < n ? text(e, s + done, n - done, first && done == 0, out) : 0;
}

/* Raw text between non-normalized added tokens: normalized, then split on the
 * normalized added tokens. */
static int normalized_encode(struct tok_encoder *e, const char *s, size_t n, int first, struct tok_ids *out) {
    if (tok_normalize(&e->t->normalizer, s, n, &e->normalized)) return -1;
    return added_split(e, e->normalized.p, e->normalized.n, 1, first, out, text_encode);
}

int tok_encode(struct tok_encoder *e, const char *text, size_t n, int add_special, struct tok_ids *out) {
    size_t valid = utf8_valid_prefix(text, n);
    if (valid < n) return err_set("text", "byte %zu is not valid UTF-8", valid);
    size_t from = out->n;
    if (added_split(e, text, n, 0, 1, out, normalized_encode)) return -1;
    if (add_special) tok_post_apply(&e->t->post, out, from);
    return 0;
}
