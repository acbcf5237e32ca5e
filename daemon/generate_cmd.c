/*
 * generate_cmd.c: `lorad generate` (generate_cmd.h).
 */
#include "generate_cmd.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "decode.h"
#include "error.h"
#include "example_tokens.h"
#include "gemm.h"
#include "infer_cmd.h"
#include "provenance.h"
#include "text_stream.h"
#include "tok_config.h"

#define GEN_STOP_IDS_MAX 64

/* Why generation ended. */
enum gen_end { GEN_END_MAX_NEW, GEN_END_EOS, GEN_END_STOP, GEN_END_CONTEXT };

struct gen {
    const Lorad__GenerateSpec *s;
    struct model m;
    struct tokenizer t;
    int has_tok;          /* the model has a tokenizer: otherwise byte-level */
    struct tok_config c;
    struct tok_ids prompt; /* the prompt's ids */
    int32_t eos[GEN_STOP_IDS_MAX]; /* the ids generation ends at */
    int n_eos;
    size_t printed; /* bytes of text written */
    char last;      /* the last of them */
};

/* The ids generation ends at: generation_config.json's eos_token_id (an int or a list),
 * or else config.json's (example_eos_find), and the tokenizer's eos token. */
static int eos_find(struct gen *g) {
    if (tok_config_resolve(&g->c, &g->t, g->s->model)) return -1;
    g->n_eos = tok_config_stop_ids(&g->c, g->eos, GEN_STOP_IDS_MAX);
    if (g->c.n_gen_eos > 0) return 0;
    struct example_eos e;
    if (example_eos_find(&e, g->s->model, &g->t)) return -1;
    for (int i = 0; i < e.n && g->n_eos < GEN_STOP_IDS_MAX; i++) {
        int seen = 0;
        for (int k = 0; k < g->n_eos; k++) seen |= g->eos[k] == e.ids[i];
        if (!seen) g->eos[g->n_eos++] = e.ids[i];
    }
    return 0;
}

/* The model directory's tokenizer files and configuration; none: byte-level. */
static int tokenizer_load(struct gen *g) {
    const Lorad__GenerateSpec *s = g->s;
    struct provenance p;
    int has = provenance_read(&p, s->model);
    if (has < 0 || tok_config_read(&g->c, s->model, s->chat ? s->template_ : NULL)) return -1;
    if (has == 0) return 0;
    if (tokenizer_open(&g->t, s->model)) return -1;
    g->has_tok = 1;
    return eos_find(g);
}

/* The text the model continues: --prompt, or with --chat the chat template rendered for
 * it as the user's message, ending with the assistant's turn prompt. */
static int prompt_text(struct gen *g, struct tok_buf *text) {
    const char *prompt = g->s->prompt;
    if ((g->has_tok || g->s->chat) && !utf8_valid(prompt, strlen(prompt)))
        return err_set("--prompt", "is not valid UTF-8");
    if (!g->s->chat) {
        tok_buf_put(text, prompt, strlen(prompt));
        return 0;
    }
    struct chat_template ct;
    struct jinja_output out = {0};
    json_t *messages = json_pack("[{ssss}]", "role", "user", "content", prompt);
    int rc = chat_template_open(&ct, &g->c, g->s->model);
    if (rc == 0) rc = chat_template_render(&ct, messages, 1, &out);
    if (rc == 0) tok_buf_put(text, out.text.p ? out.text.p : "", out.text.n);
    chat_template_free(&ct);
    jinja_output_free(&out);
    json_decref(messages);
    return rc;
}

/* The prompt's ids: the tokenizer's, with its special tokens as Hugging Face's
 * tokenizer(prompt) adds them, or for a rendered chat without them, as
 * apply_chat_template(tokenize=True) (the template writes its own BOS); or its bytes. */
static int prompt_encode(struct gen *g) {
    const int32_t V = g->m.cfg.vocab_size, P = g->m.cfg.n_positions;
    struct tok_buf text = {0};
    int rc = prompt_text(g, &text);
    if (rc == 0 && g->has_tok) {
        struct tok_encoder e;
        tok_encoder_init(&e, &g->t);
        rc = tok_encode(&e, text.p, text.n, !g->s->chat, &g->prompt);
        tok_encoder_free(&e);
    } else if (rc == 0) {
        if (V < 256) rc = err_set(g->s->model, "has a vocabulary of %d, fewer than the 256 bytes of a byte-level prompt", V);
        for (size_t i = 0; i < text.n && rc == 0; i++) tok_ids_push(&g->prompt, (unsigned char)text.p[i]);
    }
    tok_buf_free(&text);
    const char *what = g->has_tok ? "tokens" : "bytes";
    for (size_t i = 0; i < g->prompt.n && rc == 0; i++)
        if (g->prompt.v[i] >= V)
            rc = err_set("--prompt", "encodes to token %d, outside the model's vocabulary of %d", g->prompt.v[i], V);
    if (rc == 0 && g->prompt.n == 0) rc = err_set("--prompt", "encodes to no tokens; the model needs one to continue");
    if (rc == 0 && g->prompt.n > (size_t)P)
        rc = err_set("--prompt", "has %zu %s; the model sees at most %d positions", g->prompt.n, what, P);
    return rc;
}

/* --stop: every string non-empty, and valid UTF-8 where the text is. */
static int stops_check(const struct gen *g) {
    for (size_t i = 0; i < g->s->n_stop; i++)
        if (g->has_tok && !utf8_valid(g->s->stop[i], strlen(g->s->stop[i])))
            return err_set("--stop", "'%s' is not valid UTF-8", g->s->stop[i]);
    return 0;
}

static int is_eos(const struct gen *g, int32_t id) {
    for (int i = 0; i < g->n_eos; i++)
        if (g->eos[i] == id) return 1;
    return 0;
}

/* Writes the N bytes of P to stdout now. */
static void out_put(struct gen *g, const char *p, size_t n) {
    fwrite(p, 1, n, stdout);
    fflush(stdout);
    g->printed += n;
    g->last = p[n - 1];
}

/* Decodes after the prompt until an end; the new tokens' count in *COUNT and, for
 * GEN_END_STOP, the stop string's index in *STOP. */
static int generate_loop(struct gen *g, struct decoder *d, enum gen_end *end, int32_t *count, size_t *stop) {
    const Lorad__GenerateSpec *s = g->s;
    const int32_t V = g->m.cfg.vocab_size, P = g->m.cfg.n_positions;
    struct text_stream ts;
    text_stream_init(&ts, g->has_tok ? &g->t : NULL, (const char *const *)s->stop, s->n_stop);
    struct tok_buf piece = {0};
    const float *logits = NULL;
    for (size_t i = 0; i < g->prompt.n; i++) logits = decoder_step(d, g->prompt.v[i]);
    int rc = 0, found = 0;
    *end = GEN_END_MAX_NEW;
    for (*count = 0; *count < s->max_new && rc == 0;) {
        int32_t next = decoder_pick(logits, V, (float)s->temperature, s->top_k, s->seed, d->pos);
        ++*count;
        if (s->ids) printf("%s%d", *count > 1 ? " " : "", next), fflush(stdout);
        if (is_eos(g, next)) {
            *end = GEN_END_EOS;
            break;
        }
        piece.n = 0;
        found = text_stream_push(&ts, next, &piece);
        if (found > 0) *end = GEN_END_STOP, *stop = (size_t)found - 1;
        if (!s->ids && piece.n) out_put(g, piece.p, piece.n);
        if (found) break;
        if (d->pos == P) { /* the model sees no further position */
            if (*count < s->max_new) *end = GEN_END_CONTEXT;
            break;
        }
        logits = decoder_step(d, next);
    }
    if (found < 0) rc = -1;
    piece.n = 0;
    text_stream_finish(&ts, &piece);
    if (rc == 0 && !s->ids && piece.n) out_put(g, piece.p, piece.n);
    text_stream_free(&ts);
    tok_buf_free(&piece);
    return rc;
}

/* Why generation ended, on stderr, on a line of its own after the text. */
static void end_report(const struct gen *g, enum gen_end end, int32_t count, size_t stop) {
    const Lorad__GenerateSpec *s = g->s;
    if (s->ids) putchar('\n');
    fflush(stdout);
    const char *nl = s->ids || g->printed == 0 || g->last == '\n' ? "" : "\n";
    if (end == GEN_END_CONTEXT)
        fprintf(stderr, "%slorad: generate: stopped after %d of --max-new %d tokens: the model sees at most %d positions\n",
                nl, (int)count, (int)s->max_new, (int)g->m.cfg.n_positions);
    else if (end == GEN_END_EOS)
        fprintf(stderr, "%slorad: generate: ended at the EOS token after %d new tokens\n", nl, (int)count);
    else if (end == GEN_END_MAX_NEW)
        fprintf(stderr, "%slorad: generate: ended at --max-new %d tokens\n", nl, (int)count);
    if (end != GEN_END_STOP) return;
    json_t *str = json_string(s->stop[stop]);
    char *quoted = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL; /* a stop string's newline stays on the line */
    fprintf(stderr, "%slorad: generate: ended at --stop %s after %d new tokens\n", nl, quoted ? quoted : "(bytes)",
            (int)count);
    free(quoted);
    json_decref(str);
}

int generate_cmd(const struct command_call *call) {
    struct gen g = {.s = (const Lorad__GenerateSpec *)call->spec[0]};
    const Lorad__GenerateSpec *s = g.s;
    if (s->template_[0] && !s->chat) return err_set("--template", "names a chat template; it needs --chat");
    gemm_set_threads(s->threads ? s->threads : comm_node_cores(call->comm));
    if (infer_model_open(&g.m, s->model, s->adapter, 1, 1)) return -1;
    int rc = tokenizer_load(&g);
    if (rc == 0) rc = stops_check(&g);
    if (rc == 0) rc = prompt_encode(&g);
    if (rc == 0) {
        struct decoder d;
        decoder_init(&d, &g.m, g.m.cfg.n_positions);
        enum gen_end end;
        int32_t count = 0;
        size_t stop = 0;
        rc = generate_loop(&g, &d, &end, &count, &stop);
        if (rc == 0) end_report(&g, end, count, stop);
        decoder_free(&d);
    }
    tok_ids_free(&g.prompt);
    if (g.has_tok) tokenizer_free(&g.t);
    tok_config_free(&g.c);
    model_free(&g.m);
    return rc;
}
