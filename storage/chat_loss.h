/*
 * chat_loss.h: the bytes of a rendered chat that count in the loss: prep's chat
 * renderer (dataset.h's example_chat_fn), on a model's chat template (chat.h).
 *
 * The text is the template's rendering of the whole conversation, without the
 * generation prompt, as apply_chat_template(messages, tokenize=False) gives it. What
 * counts in it, by --train-on:
 *   assistant  the assistant's turns. When the template has {% generation %} blocks
 *              (transformers' test: the source matches {%-? generation -?%}), the spans
 *              those blocks render, as return_assistant_tokens_mask takes them. Without
 *              them, turn by turn: for each assistant message i, A = the rendering of
 *              messages[:i] with the generation prompt and B = that of messages[:i+1]
 *              without it; the span is B past A, i.e. what message i adds to the
 *              conversation minus the opening of the assistant's turn that
 *              add_generation_prompt writes. That needs A to start B and B to start the
 *              whole text (a template that renders earlier turns otherwise once the
 *              conversation goes on, or a turn's text differently once it is not the last,
 *              is refused: --train-on all, or a template with {% generation %}).
 *   completion for a prompt/completion line whose values are message lists (TRL's
 *              conversational prompt-completion): the text past the prompt's own
 *              rendering with the generation prompt, which must start it.
 *   all        nothing marked: every token counts (prep says so to example_tokens.h).
 * auto is assistant for a "messages" line and completion for a prompt/completion line.
 * Spans come out ascending and disjoint (overlapping or nested generation blocks are
 * joined). Errors are one line naming the line ("FILE:LINE: ...").
 */
#ifndef LORAD_CHAT_LOSS_H
#define LORAD_CHAT_LOSS_H

#include "chat.h"
#include "dataset.h"
#include "lorad.pb-c.h"

struct chat_loss {
    const struct chat_template *t;
    Lorad__Loss loss;
    int generation; /* the template has {% generation %} blocks */
};

/* L renders with T (which must outlive it) and counts as LOSS says. */
void chat_loss_init(struct chat_loss *l, const struct chat_template *t, Lorad__Loss loss);
/* Whether the template source SRC has a {% generation %} tag, as transformers tests it. */
int chat_loss_has_generation(const char *src);
/* An example_chat_fn; CTX is a const struct chat_loss. Thread-safe. */
int chat_loss_render(void *ctx, const json_t *messages, size_t n_prompt, const char *where, struct tok_buf *text,
                     struct example_spans *counted);

#endif
