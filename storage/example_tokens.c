/*
 * example_tokens.c: examples as ids and loss masks, and the EOS lookup
 * (example_tokens.h).
 */
#include "example_tokens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "jsonio.h"

/* The special tokens that end a text in the families lorad reads (GPT-2 and Qwen2,
 * Llama 2 and Mistral, Llama 3, Gemma); a chat's end-of-turn tokens are not among them. */
static const char *const eos_names[] = {"<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"};

/* config.json's eos_token_id (FILE's object ROOT) into EOS: 1, 0 when absent, -1. */
static int eos_from_config(struct example_eos *eos, const json_t *root, const char *file, const struct tokenizer *t) {
    const json_t *v = json_object_get(root, "eos_token_id");
    if (!v || json_is_null(v)) return 0;
    json_t *one = json_is_array(v) ? NULL : json_array();
    if (one) json_array_append((json_t *)one, (json_t *)v);
    const json_t *list = one ? one : v;
    size_t i, n = json_array_size(list);
    const json_t *id;
    int rc = n >= 1 && n <= EXAMPLE_EOS_MAX ? 1 : -1;
    json_array_foreach(list, i, id) {
        if (rc < 0) break;
        json_int_t x = json_integer_value(id);
        if (!json_is_integer(id) || x < 0 || x >= t->n_tokens || !t->token[x]) rc = -1;
        else eos->ids[eos->n++] = (int32_t)x;
    }
    json_decref(one);
    if (rc < 0) {
        err_set(file, "\"eos_token_id\" must be an id of the tokenizer or a list of 1 to %d of them", EXAMPLE_EOS_MAX);
        return err_hint("the tokenizer has %d tokens", t->n_tokens);
    }
    snprintf(eos->source, sizeof eos->source, "config.json eos_token_id");
    return 1;
}

/* The one special added token of T named as an EOS: 1, 0 when none, -1 when several. */
static int eos_from_added(struct example_eos *eos, const char *dir, const struct tokenizer *t) {
    const struct tok_added *found = NULL;
    for (int i = 0; i < t->n_added; i++)
        for (size_t k = 0; k < sizeof eos_names / sizeof eos_names[0] && t->added[i].special; k++) {
            if (strcmp(t->added[i].content, eos_names[k])) continue;
            if (found && found->id != t->added[i].id) {
                err_set(dir, "the tokenizer has several EOS tokens, %s and %s", found->content, t->added[i].content);
                return err_hint("put the one to append as eos_token_id in %s/config.json", dir);
            }
            found = &t->added[i];
        }
    if (!found) return 0;
    eos->ids[eos->n++] = found->id;
    snprintf(eos->source, sizeof eos->source, "the special token %s", found->content);
    return 1;
}

int example_eos_find(struct example_eos *eos, const char *dir, const struct tokenizer *t) {
    memset(eos, 0, sizeof *eos);
    char *file = path_join(dir, "config.json");
    int rc = 0;
    if (access(file, F_OK) == 0) {
        json_t *root = jsonio_read(file);
        rc = root ? eos_from_config(eos, root, file, t) : -1;
        json_decref(root);
    }
    free(file);
    if (rc == 0) rc = eos_from_added(eos, dir, t);
    return rc < 0 ? -1 : 0;
}

static void mask_fill(struct tok_buf *mask, size_t n, int counted) {
    char v = (char)(counted != 0);
    for (size_t i = 0; i < n; i++) tok_buf_put(mask, &v, 1);
}

/* The ids of the text before byte B alone: how many of IDS (N of them) they cover, at
 * least FROM; *BOUNDARY is set when they are not IDS's first ones. */
static int prefix_len(struct tok_encoder *e, const struct example *ex, size_t b, struct example_tokens *out, size_t n,
                      size_t from, size_t *k) {
    out->prefix.n = 0;
    if (tok_encode(e, ex->text.p, b, 0, &out->prefix)) return -1;
    size_t m = out->prefix.n;
    if (m > n || memcmp(out->prefix.v, out->ids.v, m * sizeof *out->ids.v)) out->boundary = 1;
    *k = m > n ? n : m < from ? from : m;
    return 0;
}

/* The mask of the text's N ids, segment by segment. */
static int text_mask(struct tok_encoder *e, const struct example *ex, int all, size_t n, struct example_tokens *out) {
    if (all) {
        mask_fill(&out->mask, n, 1);
        return 0;
    }
    size_t k0 = 0, k1;
    for (size_t i = 0; i < ex->n_seg; i++) {
        k1 = n;
        if (i + 1 < ex->n_seg && prefix_len(e, ex, ex->seg[i].end, out, n, k0, &k1)) return -1;
        mask_fill(&out->mask, k1 - k0, all || ex->seg[i].counted);
        k0 = k1;
    }
    return 0;
}

int example_encode(struct tok_encoder *e, const struct example *ex, const struct example_encoding *o,
                   struct example_tokens *out) {
    const struct tok_post *post = &e->t->post;
    out->ids.n = out->mask.n = 0;
    out->truncated = out->boundary = 0;
    mask_fill(&out->mask, post->before.n, 0);
    if (tok_encode(e, ex->text.p, ex->text.n, 0, &out->ids) || text_mask(e, ex, o->all, out->ids.n, out)) return -1;
    size_t n = out->ids.n;
    int32_t eos = o->eos && o->eos->n ? o->eos->ids[0] : -1;
    int ends = (n && out->ids.v[n - 1] == eos) || (post->after.n && post->after.v[post->after.n - 1] == eos);
    if (eos >= 0 && !ends) {
        tok_ids_push(&out->ids, eos);
        mask_fill(&out->mask, 1, 1);
    }
    if (post->before.n || post->after.n) tok_post_apply(post, &out->ids, 0); /* it memmoves from NULL ids */
    mask_fill(&out->mask, post->after.n, 1);
    CHECK(out->mask.n == out->ids.n);
    if (out->ids.n) out->mask.p[0] = 0;
    if (o->max_len > 0 && out->ids.n > (size_t)o->max_len) {
        out->ids.n = out->mask.n = (size_t)o->max_len;
        out->truncated = 1;
    }
    return 0;
}

void example_tokens_free(struct example_tokens *t) {
    tok_ids_free(&t->ids);
    tok_ids_free(&t->prefix);
    tok_buf_free(&t->mask);
    memset(t, 0, sizeof *t);
}
