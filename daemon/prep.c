/*
 * prep.c: `lorad prep` (prep.h). The inputs are cut into units (storage/dataset.h), the
 * units of each batch are read as examples and tokenized on --threads threads
 * (storage/example_tokens.h), then taken in input order into the outputs, so that the
 * result is the same for any number of threads. Chat data is rendered with the model's
 * chat template (storage/chat_loss.h says what counts), encoded without the
 * post-processor's tokens and given no EOS, as TRL does for conversational data: the
 * template's own end-of-turn tokens end the assistant's turns, and count. With --text,
 * one byte-level token per byte instead.
 */
#include "prep.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_loss.h"
#include "cli.h"
#include "clock.h"
#include "dataset.h"
#include "error.h"
#include "example_tokens.h"
#include "fileio.h"
#include "provenance.h"
#include "tok_config.h"
#include "tokens.h"

#define PREP_BATCH 8192           /* units tokenized between two takes */
#define PREP_UNITS_PER_THREAD 256 /* fewer units than this per thread do not pay for its tokenizer */
#define PREP_STOP_MAX 64          /* ids a chat's generation stops at, at most */

/* One output dataset: OUT or --val-out. */
struct prep_set {
    const char *path;
    uint32_t *tok;
    uint8_t *mask;
    size_t n, cap;
    int64_t *doc; /* each example's first token */
    size_t n_doc, cap_doc;
    int64_t counted;
};

struct prep_input {
    const char *path;
    char *data;
    size_t n;
    enum dataset_cut cut;
    struct dataset_units units;
};

/* One unit's work in a batch, on some thread. */
struct prep_slot {
    struct example ex;
    struct example_tokens tok;
    int failed;
    char err[1024];
};

struct prep {
    const Lorad__PrepSpec *spec;
    const char *dir; /* --model or --tokenizer */
    int n_threads;
    struct tokenizer *toks; /* one per thread: a tokenizer's regexes keep one match block each */
    struct tok_encoder *enc;
    struct example_eos eos;
    struct provenance prov;
    int has_prov;
    struct example_reader reader;
    char origin[DATASET_WHERE_MAX];
    int chat; /* chat data: the template and what it counts */
    struct tok_config config;
    struct chat_template template;
    struct chat_loss loss;
    int32_t stop[PREP_STOP_MAX]; /* the ids generation stops at: the EOS ids and tok_config_stop_ids */
    int n_stop;
    struct example_encoding encoding;
    struct prep_input *in;
    size_t n_in;
    struct prep_slot *slots;
    struct prep_set train, val;
    int64_t examples, bad, empty, truncated, boundary;
    int64_t uncounted, unstopped; /* chat examples counting no token, or no stop id */
    double t0, shown;  /* progress: the start, the last line */
    size_t done, total; /* input bytes */
    int line_open;
    int quiet; /* no progress line, no summary */
};

/* ---- the byte-level path: --text ---- */

static int prep_bytes(const Lorad__PrepSpec *spec) {
    size_t n;
    char *text = file_read_all(spec->text, &n);
    if (!text) return -1;
    if (n == 0) {
        free(text);
        return err_set(spec->text, "is empty");
    }
    uint32_t *tok = xmalloc(n * sizeof *tok);
    for (size_t i = 0; i < n; i++) tok[i] = (unsigned char)text[i];
    int rc = tokens_write_h5(spec->out, tok, (int64_t)n, NULL, NULL);
    if (rc == 0) fprintf(stderr, "lorad: wrote %zu byte-level tokens to %s\n", n, spec->out);
    free(tok);
    free(text);
    return rc;
}

/* ---- checks before any work ---- */

static int output_free(const char *path, const char *flag, int overwrite) {
    if (overwrite || access(path, F_OK) != 0) return 0;
    err_set(flag, "%s exists", path);
    return err_hint("--overwrite replaces it");
}

/* The flags that make sense together, and outputs that may be written. */
static int spec_check(const Lorad__PrepSpec *s) {
    if (s->n_data == 0) {
        err_set("--data", "is required");
        return err_hint("with --model or --tokenizer; or --text FILE for byte-level tokens");
    }
    if (s->val_split > 0 && !s->val_out[0]) return err_set("--val-split", "needs --val-out FILE.h5");
    if (s->val_out[0] && s->val_split == 0) return err_set("--val-out", "needs --val-split F");
    if (s->val_out[0] && strcmp(s->val_out, s->out) == 0) return err_set("--val-out", "is --out");
    if (output_free(s->out, "--out", s->overwrite)) return -1;
    return s->val_out[0] ? output_free(s->val_out, "--val-out", s->overwrite) : 0;
}

/* ---- set-up ---- */

/* One tokenizer and encoder per thread: as many threads as --threads asks, at most one
 * per PREP_UNITS_PER_THREAD units; the first loaded here, the others in parallel. */
static int threads_open(struct prep *p, size_t units) {
    int n = p->spec->threads ? p->spec->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    size_t most = units / PREP_UNITS_PER_THREAD + 1;
    n = n < 1 ? 1 : (size_t)n > most ? (int)most : n;
    p->n_threads = n; /* zeroed tokenizers and encoders free as they are */
    p->toks = xcalloc((size_t)n, sizeof *p->toks);
    p->enc = xcalloc((size_t)n, sizeof *p->enc);
    for (int i = 0; i < n; i++) tok_encoder_init(&p->enc[i], &p->toks[i]);
    if (tokenizer_open(&p->toks[0], p->dir)) return err_hint("a byte-level model takes lorad prep --text FILE");
    int failed = 0;
#pragma omp parallel for num_threads(n) reduction(+ : failed)
    for (int i = 1; i < n; i++) failed += tokenizer_open(&p->toks[i], p->dir) != 0;
    return failed ? err_set(p->dir, "the tokenizer changed while prep read it") : 0;
}

/* The ids a chat's generation stops at: the EOS ids, and those of tok_config_stop_ids. */
static int stop_ids_find(struct prep *p) {
    if (tok_config_resolve(&p->config, &p->toks[0], p->dir)) return -1;
    int32_t ids[PREP_STOP_MAX];
    int n = tok_config_stop_ids(&p->config, ids, PREP_STOP_MAX);
    for (int i = 0; i < p->eos.n + n && i < p->eos.n + PREP_STOP_MAX; i++) {
        int32_t id = i < p->eos.n ? p->eos.ids[i] : ids[i - p->eos.n];
        int seen = 0;
        for (int k = 0; k < p->n_stop; k++) seen |= p->stop[k] == id;
        if (!seen && p->n_stop < PREP_STOP_MAX) p->stop[p->n_stop++] = id;
    }
    return 0;
}

/* The tokenizers, the EOS ids, the tokenizer's fingerprint, and how examples are encoded. */
static int tokenizer_setup(struct prep *p, size_t units) {
    const Lorad__PrepSpec *s = p->spec;
    int append = s->add_eos && !p->chat;
    if (threads_open(p, units) || example_eos_find(&p->eos, p->dir, &p->toks[0])) return -1;
    if (p->chat && stop_ids_find(p)) return -1;
    if (append && p->eos.n == 0) {
        err_set(p->dir, "has no EOS token: no eos_token_id in config.json, and no special token <|endoftext|>, </s>, "
                        "<|end_of_text|> or <eos>");
        return err_hint("--add-eos off, or set eos_token_id in %s/config.json", p->dir);
    }
    if ((p->has_prov = provenance_read(&p->prov, p->dir)) < 0) return -1;
    p->encoding.eos = append ? &p->eos : NULL;
    p->encoding.max_len = s->max_len;
    p->encoding.no_post = p->chat;
    return 0;
}

/* A .txt or .jsonl input, read and cut. */
static int input_read(struct prep *p, const char *path, struct prep_input *in) {
    size_t len = strlen(path);
    int txt = len > 4 && !strcmp(path + len - 4, ".txt"), jsonl = len > 6 && !strcmp(path + len - 6, ".jsonl");
    if (!txt && !jsonl) return err_set(path, "is neither .txt nor .jsonl");
    in->path = path;
    if (!(in->data = file_read_all(path, &in->n))) return -1;
    if (txt && in->n == 0) return err_set(path, "is empty");
    in->cut = jsonl ? DATASET_CUT_LINES : p->spec->split == LORAD__SPLIT__SPLIT_BLANK_LINES ? DATASET_CUT_BLANK_LINES
                                                                                            : DATASET_CUT_FILE;
    dataset_cut(in->data, in->n, in->cut, &in->units);
    p->total += in->n;
    return 0;
}

/* The format from the first line that has one (earlier bad ones are skipped with
 * --skip-bad, and counted later); *FOUND is 0 when no line has one. */
static int format_detect(struct prep *p, Lorad__Format *f, int *found) {
    *found = 0;
    for (size_t i = 0; i < p->n_in && !*found; i++) {
        const struct prep_input *in = &p->in[i];
        for (size_t k = 0; k < in->units.n && !*found; k++) {
            const struct dataset_unit *u = &in->units.v[k];
            struct dataset_where w = {in->path, u->line};
            dataset_where_text(&w, p->origin);
            if (in->cut != DATASET_CUT_LINES) *f = LORAD__FORMAT__FORMAT_TEXT, *found = 1;
            else if (example_line_format(u->p, u->n, &w, f) == 0) *found = 1;
            else if (!p->spec->skip_bad) return -1;
        }
    }
    return 0;
}

/* Chat data: the model's chat template renders it, and says what counts. */
static int chat_setup(struct prep *p) {
    if (tok_config_read(&p->config, p->dir, p->spec->template_)) return -1;
    p->chat = 1; /* the config is held from here on */
    if (chat_template_open(&p->template, &p->config, p->dir)) return -1;
    chat_loss_init(&p->loss, &p->template, p->spec->train_on);
    p->reader.chat = chat_loss_render;
    p->reader.chat_ctx = &p->loss;
    return 0;
}

/* The reader: --format, or the first line's; every input must fit it. */
static int reader_setup(struct prep *p) {
    struct example_reader *r = &p->reader;
    int found = 1;
    r->format = p->spec->format;
    snprintf(p->origin, sizeof p->origin, "--format");
    if (r->format == LORAD__FORMAT__FORMAT_AUTO && format_detect(p, &r->format, &found)) return -1;
    r->origin = p->origin;
    if (!found) return err_set(p->in[0].path, "has no example"), err_hint("every line is malformed or blank");
    if (r->format == LORAD__FORMAT__FORMAT_CHAT && chat_setup(p)) return -1;
    if (!p->chat && p->spec->template_[0])
        return err_set("--template", "%s: only chat data is rendered by a chat template, and the data is %s (as %s "
                                     "says)", p->spec->template_, dataset_format_name(r->format), p->origin),
               err_hint("drop --template");
    for (size_t i = 0; i < p->n_in; i++)
        if (p->in[i].cut != DATASET_CUT_LINES && r->format != LORAD__FORMAT__FORMAT_TEXT)
            return err_set(p->in[i].path, "holds text, but the data is %s (as %s says)", dataset_format_name(r->format),
                           p->origin);
    if (r->format == LORAD__FORMAT__FORMAT_TEXT && p->spec->train_on == LORAD__LOSS__LOSS_COMPLETION)
        return err_set("--train-on", "completion: text data has no completion"), err_hint("--train-on all");
    if (!p->chat && p->spec->train_on == LORAD__LOSS__LOSS_ASSISTANT)
        return err_set("--train-on", "assistant: only chat data has assistant turns, and the data is %s (as %s says)",
                       dataset_format_name(r->format), p->origin),
               err_hint("--train-on completion or all");
    p->encoding.all = r->format == LORAD__FORMAT__FORMAT_TEXT || p->spec->train_on == LORAD__LOSS__LOSS_ALL;
    return 0;
}

static int prep_open(struct prep *p) {
    const Lorad__PrepSpec *s = p->spec;
    const char *dirs[] = {s->model, s->tokenizer}, *flags[] = {"--model", "--tokenizer"};
    int d = cli_one_of(dirs, flags, 2);
    if (d < 0) return -1;
    p->dir = dirs[d];
    p->n_in = s->n_data;
    p->in = xcalloc(p->n_in, sizeof *p->in);
    size_t units = 0;
    for (size_t i = 0; i < p->n_in; units += p->in[i++].units.n)
        if (input_read(p, s->data[i], &p->in[i])) return -1;
    if (reader_setup(p) || tokenizer_setup(p, units)) return -1;
    p->slots = xcalloc(PREP_BATCH, sizeof *p->slots);
    p->train.path = p->spec->out;
    p->val.path = p->spec->val_out;
    return 0;
}

static void set_free(struct prep_set *s) {
    free(s->tok);
    free(s->mask);
    free(s->doc);
}

static void prep_free(struct prep *p) {
    for (int i = 0; i < p->n_threads; i++) {
        tok_encoder_free(&p->enc[i]);
        tokenizer_free(&p->toks[i]);
    }
    free(p->enc);
    free(p->toks);
    for (size_t i = 0; i < p->n_in; i++) {
        free(p->in[i].data);
        dataset_units_free(&p->in[i].units);
    }
    free(p->in);
    for (size_t i = 0; p->slots && i < PREP_BATCH; i++) {
        example_free(&p->slots[i].ex);
        example_tokens_free(&p->slots[i].tok);
    }
    free(p->slots);
    if (p->chat) {
        chat_template_free(&p->template);
        tok_config_free(&p->config);
    }
    set_free(&p->train);
    set_free(&p->val);
}

/* ---- the work ---- */

/* Unit U of input IN as SLOT's example and tokens, with encoder E (any thread). */
static void slot_work(const struct prep *p, struct tok_encoder *e, const struct prep_input *in,
                      const struct dataset_unit *u, struct prep_slot *slot) {
    struct dataset_where w = {in->path, u->line};
    int rc = in->cut == DATASET_CUT_LINES ? example_from_line(&p->reader, u->p, u->n, &w, &slot->ex)
                                          : example_from_text(u->p, u->n, &w, &slot->ex);
    if (rc == 0 && example_encode(e, &slot->ex, &p->encoding, &slot->tok)) {
        char thing[DATASET_WHERE_MAX];
        snprintf(slot->err, sizeof slot->err, "%s", err_msg()); /* err_set writes over err_msg() */
        rc = err_set(dataset_where_text(&w, thing), "%s", slot->err);
    }
    slot->failed = rc != 0;
    if (rc) snprintf(slot->err, sizeof slot->err, "%s", err_msg());
}

/* Example I (in input order) goes to --val-out: the fraction F, evenly spread. */
static int is_val(int64_t i, double f) { return floor((double)(i + 1) * f) > floor((double)i * f); }

static void set_append(struct prep_set *s, const struct example_tokens *t) {
    if (s->n + t->ids.n > s->cap) {
        s->cap = (s->n + t->ids.n) * 2;
        s->tok = xrealloc(s->tok, s->cap * sizeof *s->tok);
        s->mask = xrealloc(s->mask, s->cap);
    }
    if (s->n_doc == s->cap_doc) {
        s->cap_doc = s->cap_doc ? s->cap_doc * 2 : 1024;
        s->doc = xrealloc(s->doc, s->cap_doc * sizeof *s->doc);
    }
    s->doc[s->n_doc++] = (int64_t)s->n;
    for (size_t i = 0; i < t->ids.n; i++) {
        s->tok[s->n + i] = (uint32_t)t->ids.v[i];
        s->mask[s->n + i] = (uint8_t)t->mask.p[i];
        s->counted += t->mask.p[i] != 0;
    }
    s->n += t->ids.n;
}

/* A chat example counting no token, or none that generation stops at, is counted. */
static void chat_tally(struct prep *p, const struct example_tokens *t) {
    int counted = 0, stops = 0;
    for (size_t i = 0; i < t->ids.n; i++) {
        if (!t->mask.p[i]) continue;
        counted = 1;
        for (int k = 0; k < p->n_stop && !stops; k++) stops = t->ids.v[i] == p->stop[k];
    }
    p->uncounted += !counted;
    p->unstopped += counted && !stops;
}

/* SLOT's result into the outputs, in input order. */
static int slot_take(struct prep *p, const struct prep_slot *slot) {
    if (slot->failed) {
        if (!p->spec->skip_bad) return err_restore(slot->err);
        p->bad++;
        return 0;
    }
    if (slot->tok.ids.n == 0) {
        p->empty++;
        return 0;
    }
    set_append(is_val(p->examples, p->spec->val_split) ? &p->val : &p->train, &slot->tok);
    p->examples++;
    p->truncated += slot->tok.truncated;
    p->boundary += slot->tok.boundary;
    if (p->chat) chat_tally(p, &slot->tok);
    return 0;
}

/* One updating line on a terminal, a line every 10 s otherwise; nothing the first second. */
static void progress_show(struct prep *p) {
    double now = clock_now();
    int tty = isatty(STDERR_FILENO);
    if (p->quiet || now - p->t0 < 1 || now - p->shown < (tty ? 0.25 : 10)) return;
    p->shown = now;
    fprintf(stderr, "%sprep: %.1f of %.1f MB (%.0f%%), %lld examples, %lld tokens%s", tty ? "\r\033[K" : "",
            p->done / 1e6, p->total / 1e6, 100.0 * p->done / (p->total ? p->total : 1), (long long)p->examples,
            (long long)(p->train.n + p->val.n), tty ? "" : "\n");
    p->line_open = tty;
}

/* Every unit of IN, batch by batch; BASE: the input bytes before IN. */
static int input_run(struct prep *p, const struct prep_input *in, size_t base) {
    for (size_t start = 0; start < in->units.n; start += PREP_BATCH) {
        size_t n = in->units.n - start < PREP_BATCH ? in->units.n - start : PREP_BATCH;
        int threads = (size_t)p->n_threads < n ? p->n_threads : (int)n;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
        for (size_t k = 0; k < n; k++)
            slot_work(p, &p->enc[omp_get_thread_num()], in, &in->units.v[start + k], &p->slots[k]);
        for (size_t k = 0; k < n; k++)
            if (slot_take(p, &p->slots[k])) return -1;
        const struct dataset_unit *last = &in->units.v[start + n - 1];
        p->done = base + (size_t)(last->p + last->n - in->data);
        progress_show(p);
    }
    return 0;
}

/* ---- the outputs ---- */

/* The input paths as a JSON list, for the sources attribute; the caller frees. */
static char *sources_json(const Lorad__PrepSpec *s) {
    json_t *a = json_array();
    for (size_t i = 0; i < s->n_data; i++) json_array_append_new(a, json_string(s->data[i]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

/* What counts in the loss: as the train_on attribute records it (WORDS 0), or as the
 * summary says it. */
static const char *loss_name(const struct prep *p, int words) {
    static const char *const names[][2] = {{"all", "every token"},
                                           {"completion", "the completion"},
                                           {"assistant", "the assistant's turns"},
                                           {"auto", "the assistant's turns (of prompt/completion lines, the completion)"}};
    Lorad__Loss l = p->spec->train_on;
    int k = p->encoding.all                                   ? 0
            : !p->chat || l == LORAD__LOSS__LOSS_COMPLETION ? 1
            : l == LORAD__LOSS__LOSS_ASSISTANT              ? 2
                                                            : 3;
    return names[k][words];
}

static int set_write(const struct prep *p, const struct prep_set *s, const char *sources) {
    int64_t eos[EXAMPLE_EOS_MAX];
    for (int i = 0; i < p->eos.n; i++) eos[i] = p->eos.ids[i];
    struct tokens_meta meta = {
        .doc_offsets = s->doc,
        .n_docs = (int64_t)s->n_doc,
        .vocab_size = p->toks[0].n_tokens,
        .eos_ids = eos,
        .n_eos = p->eos.n,
        .fingerprint = p->has_prov ? p->prov.fingerprint : NULL,
        .tokenizer_files = p->has_prov ? p->prov.files : NULL,
        .sources = sources,
        .format = dataset_format_name(p->reader.format),
        .train_on = loss_name(p, 0),
    };
    return tokens_write_h5(s->path, s->tok, (int64_t)s->n, s->mask, &meta);
}

static int prep_write(const struct prep *p) {
    if (p->examples == 0) return err_set(p->in[0].path, "no examples"), err_hint("every example is malformed or empty");
    if (p->val.path[0] && p->val.n_doc == 0)
        return err_set("--val-split", "%g of %lld examples leaves no validation example", p->spec->val_split,
                       (long long)p->examples),
               err_hint("a larger fraction, or more data");
    char *sources = sources_json(p->spec);
    int rc = set_write(p, &p->train, sources);
    if (rc == 0 && p->val.path[0]) rc = set_write(p, &p->val, sources);
    free(sources);
    return rc;
}

/* How the assistant's spans were found, and the chat examples that will not teach to stop. */
static void chat_summary(const struct prep *p) {
    if (!p->encoding.all && p->spec->train_on != LORAD__LOSS__LOSS_COMPLETION)
        fprintf(stderr, "lorad: prep: the assistant's spans %s\n", p->loss.generation ? "are the template's "
                "{% generation %} blocks" : "are what each assistant message adds to the rendering, turn by turn");
    if (p->uncounted)
        fprintf(stderr, "lorad: prep: %lld examples count no token (no assistant turn, or --max-len cut it off)\n",
                (long long)p->uncounted);
    if (!p->unstopped) return;
    fprintf(stderr, "lorad: prep: warning: in %lld examples no counted token is one generation stops at (",
            (long long)p->unstopped);
    for (int i = 0; i < p->n_stop; i++) fprintf(stderr, "%s%d", i ? ", " : "", p->stop[i]);
    fprintf(stderr, "%s): a model trained on them may not learn to stop; name the template's end of turn in "
                    "generation_config.json's eos_token_id\n", p->n_stop ? "" : "none");
}

static void summary_print(const struct prep *p) {
    if (p->line_open) fputc('\n', stderr);
    int64_t tokens = (int64_t)(p->train.n + p->val.n), counted = p->train.counted + p->val.counted;
    fprintf(stderr, "lorad: prep: %lld example%s (%zu in %s", (long long)p->examples, p->examples == 1 ? "" : "s",
            p->train.n_doc, p->train.path);
    if (p->val.path[0]) fprintf(stderr, ", %zu in %s", p->val.n_doc, p->val.path);
    fprintf(stderr, "), %lld tokens, %.1f%% of them counted in the loss\n", (long long)tokens,
            100.0 * (double)counted / (double)tokens);
    fprintf(stderr, "lorad: prep: %lld truncated to --max-len, %lld malformed lines skipped, %lld empty examples "
                    "dropped\n", (long long)p->truncated, (long long)p->bad, (long long)p->empty);
    fprintf(stderr, "lorad: prep: format %s (%s), loss on %s, ", dataset_format_name(p->reader.format), p->origin,
            loss_name(p, 1));
    if (p->encoding.eos) fprintf(stderr, "EOS %d appended (%s)\n", p->eos.ids[0], p->eos.source);
    else fprintf(stderr, "no EOS appended%s\n", p->chat ? " (the chat template ends the turns, as in TRL)" : "");
    if (p->boundary && !p->chat)
        fprintf(stderr, "lorad: prep: in %lld examples a token spans the prompt's end; masked by the prompt's own token "
                        "count, as TRL does\n", (long long)p->boundary);
    if (p->boundary && p->chat)
        fprintf(stderr, "lorad: prep: in %lld examples a token spans the edge of a counted span; the edge falls after "
                        "the tokens of the text before it alone, as TRL places a prompt's end\n",
                (long long)p->boundary);
    if (p->chat) chat_summary(p);
}

int prep_dataset(const Lorad__PrepSpec *spec, int quiet) {
    if (spec->text[0]) {
        if (spec->n_data || spec->model[0] || spec->tokenizer[0])
            return err_set("--text", "writes byte-level tokens; give it without --data, --model or --tokenizer");
        return output_free(spec->out, "--out", spec->overwrite) ? -1 : prep_bytes(spec);
    }
    struct prep p = {.spec = spec, .t0 = clock_now(), .quiet = quiet};
    int rc = spec_check(spec) || prep_open(&p) ? -1 : 0;
    size_t base = 0;
    for (size_t i = 0; i < p.n_in && rc == 0; base += p.in[i++].n) rc = input_run(&p, &p.in[i], base);
    if (rc == 0) rc = prep_write(&p);
    if (rc == 0 && !quiet) summary_print(&p);
    else if (p.line_open) fputc('\n', stderr);
    prep_free(&p);
    return rc;
}

int prep_run(const struct command_call *call) { return prep_dataset((const Lorad__PrepSpec *)call->spec[0], 0); }
