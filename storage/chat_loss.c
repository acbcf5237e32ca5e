/*
 * chat_loss.c: the counted spans of a rendered chat (chat_loss.h).
 */
#include "chat_loss.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

void chat_loss_init(struct chat_loss *l, const struct chat_template *t, Lorad__Loss loss) {
    l->t = t;
    l->loss = loss;
    l->generation = chat_loss_has_generation(t->c->chat_template);
}

/* transformers' re.search(r"\{\%-?\s*generation\s*-?\%\}", chat_template). */
int chat_loss_has_generation(const char *src) {
    for (const char *p = src; (p = strstr(p, "{%")); p++) {
        const char *q = p + 2 + (p[2] == '-');
        while (isspace((unsigned char)*q)) q++;
        if (strncmp(q, "generation", 10)) continue;
        for (q += 10; isspace((unsigned char)*q); q++) {}
        q += *q == '-';
        if (q[0] == '%' && q[1] == '}') return 1;
    }
    return 0;
}

/* The first N of MESSAGES rendered into OUT (overwritten), with the generation prompt
 * when GEN; a failure is refiled under WHERE. */
static int render(const struct chat_loss *l, const json_t *messages, size_t n, int gen, const char *where,
                  struct jinja_output *out) {
    json_t *head = json_array();
    for (size_t i = 0; i < n; i++) json_array_append(head, json_array_get(messages, i));
    jinja_output_free(out);
    int rc = chat_template_render(l->t, head, gen, out);
    json_decref(head);
    if (rc == 0) return 0;
    char why[1024];
    snprintf(why, sizeof why, "%s", err_msg()); /* err_set writes over err_msg() */
    return err_set(where, "%s", why);
}

/* Whether A starts B. */
static int starts(const struct jinja_output *a, const struct jinja_output *b) {
    return a->text.n <= b->text.n && (a->text.n == 0 || memcmp(a->text.p, b->text.p, a->text.n) == 0);
}

static int span_cmp(const void *a, const void *b) {
    const struct jinja_span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The generation blocks' spans of FULL, sorted, the overlapping ones joined. */
static void generation_spans(struct jinja_output *full, struct example_spans *counted) {
    if (full->n_spans > 1) qsort(full->spans, full->n_spans, sizeof *full->spans, span_cmp);
    for (size_t i = 0; i < full->n_spans; i++) {
        struct jinja_span s = full->spans[i];
        if (s.end <= s.start) continue;
        struct example_span *last = counted->n ? &counted->v[counted->n - 1] : NULL;
        if (last && s.start <= last->end) last->end = s.end > last->end ? s.end : last->end;
        else example_spans_add(counted, s.start, s.end);
    }
}

/* Why A (messages[:I] rendered with the generation prompt) and B (messages[:I+1]
 * rendered) give message I no span in FULL, into WHY; 0 when they do. END: where the
 * last span ends. */
static int turn_problem(const struct jinja_output *a, const struct jinja_output *b, const struct jinja_output *full,
                        size_t end, size_t i, char *why, size_t n) {
    if (!starts(a, b))
        snprintf(why, n, "messages[:%zu] with the generation prompt does not begin messages[:%zu]", i, i + 1);
    else if (!starts(b, full)) snprintf(why, n, "messages[:%zu] does not begin the whole conversation", i + 1);
    else if (a->text.n < end)
        snprintf(why, n, "messages[:%zu] with the generation prompt ends inside the last span", i);
    else return 0;
    return 1;
}

/* Each assistant message's span in FULL: what rendering it adds past the generation
 * prompt (chat_loss.h). */
static int turn_spans(const struct chat_loss *l, const json_t *messages, const struct jinja_output *full,
                      const char *where, struct example_spans *counted) {
    struct jinja_output a = {0}, b = {0};
    size_t end = 0;
    int rc = 0;
    for (size_t i = 0; i < json_array_size(messages) && rc == 0; i++) {
        const char *role = json_string_value(json_object_get(json_array_get(messages, i), "role"));
        if (!role || strcmp(role, "assistant")) continue;
        char why[160];
        if (render(l, messages, i, 1, where, &a) || render(l, messages, i + 1, 0, where, &b)) rc = -1;
        else if (turn_problem(&a, &b, full, end, i, why, sizeof why)) {
            err_set(where, "the chat template does not render turn by turn (%s), so message %zu, an assistant's, has "
                           "no span", why, i + 1);
            rc = err_hint("--train-on all, or a template with {%% generation %%} blocks");
        } else if (b.text.n > a.text.n) {
            example_spans_add(counted, a.text.n, b.text.n);
            end = b.text.n;
        }
    }
    jinja_output_free(&a);
    jinja_output_free(&b);
    return rc;
}

/* The completion's span in FULL: past the prompt's N_PROMPT messages rendered with the
 * generation prompt. */
static int completion_span(const struct chat_loss *l, const json_t *messages, size_t n_prompt,
                           const struct jinja_output *full, const char *where, struct example_spans *counted) {
    struct jinja_output prompt = {0};
    int rc = render(l, messages, n_prompt, 1, where, &prompt);
    if (rc == 0 && !starts(&prompt, full)) {
        err_set(where, "the chat template renders the prompt with the generation prompt as other than the start of "
                       "the whole conversation, so the completion cannot be found");
        rc = err_hint("--train-on all");
    }
    if (rc == 0 && full->text.n > prompt.text.n) example_spans_add(counted, prompt.text.n, full->text.n);
    jinja_output_free(&prompt);
    return rc;
}

int chat_loss_render(void *ctx, const json_t *messages, size_t n_prompt, const char *where, struct tok_buf *text,
                     struct example_spans *counted) {
    const struct chat_loss *l = ctx;
    Lorad__Loss loss = l->loss;
    if (loss == LORAD__LOSS__LOSS_AUTO) loss = n_prompt ? LORAD__LOSS__LOSS_COMPLETION : LORAD__LOSS__LOSS_ASSISTANT;
    if (loss == LORAD__LOSS__LOSS_COMPLETION && !n_prompt) {
        err_set(where, "--train-on completion: a \"messages\" line has no completion");
        return err_hint("\"prompt\" and \"completion\" lists of messages, or --train-on assistant");
    }
    struct jinja_output full = {0};
    int rc = render(l, messages, json_array_size(messages), 0, where, &full);
    if (rc == 0 && loss == LORAD__LOSS__LOSS_COMPLETION)
        rc = completion_span(l, messages, n_prompt, &full, where, counted);
    else if (rc == 0 && loss == LORAD__LOSS__LOSS_ASSISTANT && l->generation)
        generation_spans(&full, counted);
    else if (rc == 0 && loss == LORAD__LOSS__LOSS_ASSISTANT)
        rc = turn_spans(l, messages, &full, where, counted);
    if (rc == 0) tok_buf_put(text, full.text.p ? full.text.p : "", full.text.n);
    jinja_output_free(&full);
    return rc;
}
