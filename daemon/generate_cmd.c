/*
 * generate_cmd.c: `lorad generate` (generate_cmd.h).
 */
#include "generate_cmd.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "cli.h"
#include "dataset.h"
#include "decode.h"
#include "error.h"
#include "example_tokens.h"
#include "gemm.h"
#include "infer_cmd.h"
#include "prompts.h"
#include "provenance.h"
#include "text_stream.h"
#include "tok_config.h"

#define GEN_STOP_IDS_MAX 64

/* Why generation ended. */
enum gen_end { GEN_END_MAX_NEW, GEN_END_EOS, GEN_END_STOP, GEN_END_CONTEXT };
static const char *const gen_end_names[] = {"max_new", "eos", "stop", "context"};

struct gen {
    const Lorad__GenerateSpec *s;
    struct model m;
    struct tokenizer t;
    int has_tok;          /* the model has a tokenizer: otherwise byte-level */
    struct tok_config c;
    int32_t eos[GEN_STOP_IDS_MAX]; /* the ids generation ends at */
    int n_eos;
    int stream;     /* --prompt: each piece to stdout as it comes */
    size_t printed; /* bytes of text written */
    char last;      /* the last of them */
};

/* One sequence: its prompt, where it is, and what it made. */
struct gen_seq {
    const char *prompt;   /* as given */
    const char *where;    /* "--prompt", or FILE:LINE, while it is read (seqs_make) */
    const char *adapter;  /* its adapter's NAME (--prompts), or NULL */
    int32_t set;          /* its adapter set of the model, or -1 */
    struct tok_ids ids;   /* the prompt's ids, then the new ones */
    size_t n_prompt, fed; /* the prompt's count; the ids fed to the model */
    double *logprob;      /* (ids.cap) each new token's log-probability */
    struct text_stream ts;
    struct tok_buf text;  /* --prompts: the text so far */
    enum gen_end end;
    size_t stop;          /* GEN_END_STOP: which --stop */
    int32_t slot;         /* its decoder slot while it runs, or -1 */
    int done;
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

/* The text Q continues: its prompt, or with --chat the chat template rendered for it as
 * the user's message, ending with the assistant's turn prompt. */
static int prompt_text(struct gen *g, const struct gen_seq *q, struct tok_buf *text) {
    if ((g->has_tok || g->s->chat) && !utf8_valid(q->prompt, strlen(q->prompt)))
        return err_set(q->where, "is not valid UTF-8");
    if (!g->s->chat) {
        tok_buf_put(text, q->prompt, strlen(q->prompt));
        return 0;
    }
    struct chat_template ct;
    struct jinja_output out = {0};
    json_t *messages = json_pack("[{ssss}]", "role", "user", "content", q->prompt);
    int rc = chat_template_open(&ct, &g->c, g->s->model);
    if (rc == 0) rc = chat_template_render(&ct, messages, 1, &out);
    if (rc == 0) tok_buf_put(text, out.text.p ? out.text.p : "", out.text.n);
    chat_template_free(&ct);
    jinja_output_free(&out);
    json_decref(messages);
    return rc;
}

/* Q's prompt ids: the tokenizer's, with its special tokens as Hugging Face's
 * tokenizer(prompt) adds them, or for a rendered chat without them, as
 * apply_chat_template(tokenize=True) (the template writes its own BOS); or its bytes. */
static int prompt_encode(struct gen *g, struct gen_seq *q) {
    const int32_t V = g->m.cfg.vocab_size, P = g->m.cfg.n_positions;
    struct tok_buf text = {0};
    int rc = prompt_text(g, q, &text);
    if (rc == 0 && g->has_tok) {
        struct tok_encoder e;
        tok_encoder_init(&e, &g->t);
        rc = tok_encode(&e, text.p, text.n, !g->s->chat, &q->ids);
        tok_encoder_free(&e);
    } else if (rc == 0) {
        if (V < 256) rc = err_set(g->s->model, "has a vocabulary of %d, fewer than the 256 bytes of a byte-level prompt", V);
        for (size_t i = 0; i < text.n && rc == 0; i++) tok_ids_push(&q->ids, (unsigned char)text.p[i]);
    }
    tok_buf_free(&text);
    const char *what = g->has_tok ? "tokens" : "bytes";
    for (size_t i = 0; i < q->ids.n && rc == 0; i++)
        if (q->ids.v[i] >= V)
            rc = err_set(q->where, "encodes to token %d, outside the model's vocabulary of %d", q->ids.v[i], V);
    if (rc == 0 && q->ids.n == 0) rc = err_set(q->where, "encodes to no tokens; the model needs one to continue");
    if (rc == 0 && q->ids.n > (size_t)P)
        rc = err_set(q->where, "has %zu %s; the model sees at most %d positions", q->ids.n, what, P);
    q->n_prompt = q->ids.n;
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

/* TEXT (N bytes) of Q: to stdout at once (--prompt), or kept for its line. */
static void seq_text(struct gen *g, struct gen_seq *q, const char *text, size_t n) {
    if (!n) return;
    if (g->stream && !g->s->ids) out_put(g, text, n);
    else if (!g->stream) tok_buf_put(&q->text, text, n);
}

/* Q ends with END: what its text stream held back goes out with it. */
static int seq_end(struct gen *g, struct gen_seq *q, enum gen_end end) {
    q->end = end;
    q->done = 1;
    struct tok_buf rest = {0};
    text_stream_finish(&q->ts, &rest);
    seq_text(g, q, rest.p, rest.n);
    tok_buf_free(&rest);
    return 1;
}

/* The log-probability of token ID under LOGITS (V). */
static double log_softmax_at(const float *logits, int32_t V, int32_t id) {
    float maxv = logits[0];
    for (int32_t i = 1; i < V; i++) maxv = logits[i] > maxv ? logits[i] : maxv;
    double sum = 0.0;
    for (int32_t i = 0; i < V; i++) sum += exp((double)logits[i] - maxv);
    return (double)logits[id] - maxv - log(sum);
}

/* After the model saw POS positions of Q, whose last LOGITS (V) are at hand: picks Q's
 * next token, or ends Q. Returns 1 when Q ended, 0 when its new token is to be fed,
 * -1 with an error. */
static int seq_pick(struct gen *g, struct gen_seq *q, const float *logits, int32_t pos) {
    const Lorad__GenerateSpec *s = g->s;
    const int32_t V = g->m.cfg.vocab_size, count = (int32_t)(q->ids.n - q->n_prompt);
    if (count == s->max_new) return seq_end(g, q, GEN_END_MAX_NEW); /* --max-new 0 */
    int32_t next = decoder_pick(logits, V, (float)s->temperature, s->top_k, s->seed, pos);
    const size_t cap = q->ids.cap;
    tok_ids_push(&q->ids, next);
    if (!q->logprob || q->ids.cap != cap) q->logprob = xrealloc(q->logprob, q->ids.cap * sizeof *q->logprob);
    q->logprob[q->ids.n - 1] = log_softmax_at(logits, V, next);
    if (g->stream && s->ids) printf("%s%d", count ? " " : "", next), fflush(stdout);
    if (is_eos(g, next)) return seq_end(g, q, GEN_END_EOS);
    struct tok_buf piece = {0};
    int found = text_stream_push(&q->ts, next, &piece);
    seq_text(g, q, piece.p, piece.n);
    tok_buf_free(&piece);
    if (found < 0) return -1;
    if (found > 0) q->stop = (size_t)found - 1;
    if (found > 0) return seq_end(g, q, GEN_END_STOP);
    if (count + 1 == s->max_new) return seq_end(g, q, GEN_END_MAX_NEW);
    if (pos == g->m.cfg.n_positions) return seq_end(g, q, GEN_END_CONTEXT); /* the model sees no further position */
    return 0;
}

/* Why generation ended, on stderr, on a line of its own after the text (--prompt). */
static void end_report(const struct gen *g, const struct gen_seq *q) {
    const Lorad__GenerateSpec *s = g->s;
    const int count = (int)(q->ids.n - q->n_prompt);
    if (s->ids) putchar('\n');
    fflush(stdout);
    const char *nl = s->ids || g->printed == 0 || g->last == '\n' ? "" : "\n";
    if (q->end == GEN_END_CONTEXT)
        fprintf(stderr, "%slorad: generate: stopped after %d of --max-new %d tokens: the model sees at most %d positions\n",
                nl, count, (int)s->max_new, (int)g->m.cfg.n_positions);
    else if (q->end == GEN_END_EOS)
        fprintf(stderr, "%slorad: generate: ended at the EOS token after %d new tokens\n", nl, count);
    else if (q->end == GEN_END_MAX_NEW)
        fprintf(stderr, "%slorad: generate: ended at --max-new %d tokens\n", nl, count);
    if (q->end != GEN_END_STOP) return;
    json_t *str = json_string(s->stop[q->stop]);
    char *quoted = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL; /* a stop string's newline stays on the line */
    fprintf(stderr, "%slorad: generate: ended at --stop %s after %d new tokens\n", nl, quoted ? quoted : "(bytes)",
            count);
    free(quoted);
    json_decref(str);
}

/* Q's line of --prompts output: its adapter, prompt, text (null when not UTF-8), new
 * ids, their log-probabilities and why it ended. */
static void seq_print(const struct gen_seq *q) {
    json_t *ids = json_array(), *lp = json_array();
    for (size_t i = q->n_prompt; i < q->ids.n; i++) {
        json_array_append_new(ids, json_integer(q->ids.v[i]));
        json_array_append_new(lp, json_real(q->logprob[i]));
    }
    json_t *o = json_object();
    json_object_set_new(o, "adapter", q->adapter ? json_string(q->adapter) : json_null());
    json_object_set_new(o, "prompt", json_string(q->prompt));
    json_object_set_new(o, "text", utf8_valid(q->text.p ? q->text.p : "", q->text.n)
                                       ? json_stringn(q->text.p ? q->text.p : "", q->text.n)
                                       : json_null());
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "logprobs", lp);
    json_object_set_new(o, "end", json_string(gen_end_names[q->end]));
    char *text = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(o);
}

/* Decodes the N sequences of Q, up to the decoder's slots at a time, each step one row
 * for every running sequence (the base's rows first, then each adapter set's), a
 * waiting sequence taking the slot of one that ended. --prompts prints each line once
 * it and every line before it are done. */
static int generate_run(struct gen *g, struct decoder *d, struct gen_seq *q, int32_t n) {
    int32_t *tokens = xcalloc((size_t)d->slots, sizeof *tokens), *slot = xcalloc((size_t)d->slots, sizeof *slot);
    int32_t *row_seq = xcalloc((size_t)d->slots, sizeof *row_seq), *free_slots = xcalloc((size_t)d->slots, sizeof *free_slots);
    int32_t next = 0, printed = 0, n_free = d->slots;
    for (int32_t i = 0; i < d->slots; i++) free_slots[i] = d->slots - 1 - i;
    int rc = 0;
    while (rc == 0 && printed < n) {
        for (; next < n && n_free > 0; next++) { /* the waiting take the free slots */
            q[next].slot = free_slots[--n_free];
            d->pos[q[next].slot] = 0;
        }
        int32_t rows = 0;
        struct lora_rows lr = {.n_sets = g->m.n_sets};
        for (int32_t set = -1; set < g->m.n_sets; set++) {
            if (set >= 0) lr.row0[set] = rows;
            for (int32_t i = 0; i < next; i++) {
                if (q[i].done || q[i].slot < 0 || q[i].set != set) continue;
                row_seq[rows] = i;
                slot[rows] = q[i].slot;
                tokens[rows++] = q[i].ids.v[q[i].fed];
            }
        }
        lr.row0[g->m.n_sets] = rows;
        const float *logits = rows ? decoder_step(d, tokens, slot, rows, g->m.n_sets ? &lr : NULL) : NULL;
        for (int32_t r = 0; r < rows && rc == 0; r++) {
            struct gen_seq *s = &q[row_seq[r]];
            if (++s->fed < s->n_prompt) continue; /* still reading its prompt */
            int ended = seq_pick(g, s, logits + (size_t)r * g->m.cfg.vocab_size, d->pos[s->slot]);
            if (ended < 0) rc = -1;
            if (ended == 1) {
                free_slots[n_free++] = s->slot;
                s->slot = -1;
            }
        }
        for (; rc == 0 && printed < next && q[printed].done; printed++) {
            if (g->stream) end_report(g, &q[printed]);
            else seq_print(&q[printed]);
        }
    }
    free(tokens), free(slot), free(row_seq), free(free_slots);
    return rc;
}

/* --prompts' adapters, NAME=DIR each: their names and directories, in the flag's order. */
static int adapters_named(const Lorad__GenerateSpec *s, const char **names, char **dirs) {
    for (size_t i = 0; i < s->n_adapter; i++) {
        char *eq = strchr(s->adapter[i], '=');
        if (!eq || eq == s->adapter[i] || !eq[1]) {
            err_set("--adapter", "'%s' is not NAME=DIR", s->adapter[i]);
            return err_hint("with --prompts each adapter has a name the lines use: --adapter math=runs/math/adapter");
        }
        names[i] = s->adapter[i];
        dirs[i] = eq + 1;
        *eq = '\0';
        for (size_t k = 0; k < i; k++)
            if (!strcmp(names[k], names[i])) return err_set("--adapter", "names '%s' twice", names[i]);
    }
    return 0;
}

/* The sequences of --prompts (each line's, its adapter set found by name) or of --prompt. */
static int seqs_make(struct gen *g, const struct prompts *p, const char *const *names, struct gen_seq **out,
                     int32_t *n) {
    const Lorad__GenerateSpec *s = g->s;
    *n = g->stream ? 1 : p->n;
    struct gen_seq *q = *out = xcalloc((size_t)*n, sizeof *q);
    char where[DATASET_WHERE_MAX]; /* the line at hand, for its errors */
    for (int32_t i = 0; i < *n; i++) {
        q[i].slot = -1;
        q[i].set = -1;
        text_stream_init(&q[i].ts, g->has_tok ? &g->t : NULL, (const char *const *)s->stop, s->n_stop);
    }
    int rc = 0;
    for (int32_t i = 0; i < *n && rc == 0; i++) {
        if (g->stream) {
            q[i].prompt = s->prompt;
            q[i].where = "--prompt";
        } else {
            const struct dataset_where w = {s->prompts, p->v[i].line};
            q[i].prompt = p->v[i].prompt;
            q[i].where = dataset_where_text(&w, where);
            q[i].adapter = p->v[i].adapter;
            for (int32_t k = 0; k < (int32_t)s->n_adapter && q[i].adapter; k++)
                if (!strcmp(names[k], q[i].adapter)) q[i].set = k;
            if (q[i].adapter && q[i].set < 0) {
                err_set(q[i].where, "\"adapter\" '%s' is none of the --adapter names", q[i].adapter);
                rc = err_hint("give it as --adapter %s=DIR, or use null for the base model", q[i].adapter);
            }
        }
        if (rc == 0) rc = prompt_encode(g, &q[i]);
        q[i].where = NULL; /* errors name it only while it is read */
    }
    return rc;
}

static void seqs_free(struct gen_seq *q, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        tok_ids_free(&q[i].ids);
        free(q[i].logprob);
        text_stream_free(&q[i].ts);
        tok_buf_free(&q[i].text);
    }
    free(q);
}

/* --prompt or --prompts, and the flags that go with only one of them. */
static int mode_check(const Lorad__GenerateSpec *s) {
    const char *const values[2] = {s->prompt, s->prompts}, *const flags[2] = {"--prompt", "--prompts"};
    const int mode = cli_one_of(values, flags, 2);
    if (mode < 0) return -1;
    if (s->template_[0] && !s->chat) return err_set("--template", "names a chat template; it needs --chat");
    if (mode == 0 && s->n_adapter > 1) {
        err_set("--adapter", "is given %zu times; --prompt takes one", s->n_adapter);
        return err_hint("use --prompts FILE.jsonl for several adapters");
    }
    if (mode == 1 && s->ids) return err_set("--ids", "has no meaning with --prompts, whose lines hold the ids");
    return mode;
}

int generate_cmd(const struct command_call *call) {
    struct gen g = {.s = (const Lorad__GenerateSpec *)call->spec[0]};
    const Lorad__GenerateSpec *s = g.s;
    const int mode = mode_check(s);
    if (mode < 0) return -1;
    g.stream = mode == 0;
    gemm_set_threads(s->threads ? s->threads : comm_node_cores(call->comm));
    const char **names = xcalloc(s->n_adapter + 1, sizeof *names);
    char **dirs = xcalloc(s->n_adapter + 1, sizeof *dirs);
    struct prompts p = {0};
    int rc = g.stream ? 0 : adapters_named(s, names, dirs);
    if (rc == 0 && !g.stream) rc = prompts_read(&p, s->prompts);
    /* the decoder's slots: one row each a step, which the model's adapter rows must hold */
    const int32_t slots = g.stream ? 1 : (p.n < s->batch ? p.n : s->batch);
    if (rc == 0)
        rc = infer_model_open(&g.m, s->model, g.stream ? s->adapter : dirs, (int32_t)s->n_adapter, g.stream, slots, 1,
                              0);
    if (rc) {
        free(names), free(dirs);
        prompts_free(&p);
        return -1;
    }
    struct gen_seq *q = NULL;
    int32_t n = 0;
    rc = tokenizer_load(&g);
    if (rc == 0) rc = stops_check(&g);
    if (rc == 0) rc = seqs_make(&g, &p, names, &q, &n);
    if (rc == 0) {
        size_t longest = 0;
        for (int32_t i = 0; i < n; i++) longest = q[i].n_prompt > longest ? q[i].n_prompt : longest;
        const int64_t need = (int64_t)longest + s->max_new, P = g.m.cfg.n_positions;
        struct decoder d;
        decoder_init(&d, &g.m, slots, (int32_t)(need < P ? need : P));
        rc = generate_run(&g, &d, q, n);
        decoder_free(&d);
    }
    seqs_free(q, n);
    free(names), free(dirs);
    prompts_free(&p);
    if (g.has_tok) tokenizer_free(&g.t);
    tok_config_free(&g.c);
    model_free(&g.m);
    return rc;
}
