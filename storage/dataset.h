/*
 * dataset.h: the inputs of `lorad prep` as examples.
 *
 * An input is a .txt file or a .jsonl file. A .txt file is one document (DATASET_CUT_FILE,
 * its bytes as they are) or documents between blank lines (DATASET_CUT_BLANK_LINES: a
 * blank line holds only spaces, tabs and carriage returns; a document is a run of other
 * lines joined by their newlines, without the last one's). A .jsonl file holds one JSON
 * object a line (blank lines are passed over), whose keys give its format:
 *   text        {"text": T}                                    T counts in the loss
 *   completion  {"prompt": P, "completion": C}                 C counts, P does not
 *   alpaca      {"instruction": I, "input": X, "output": O}    X optional; the prompt is
 *               DATASET_ALPACA_INPUT (or _NO_INPUT when X is absent, null or empty)
 *               with I and X filled in, as Stanford Alpaca's train.py writes it; O counts
 *   chat        {"messages": [{"role", "content"}, ...]}, or a prompt and a completion
 *               that are lists of messages (taken as one list, the prompt's length
 *               noted): an example_chat_fn renders them and says which spans count.
 *               A message is an object with a "role" string and, when it has one, a
 *               "content" that is a string, null or a list (of content parts)
 * Other keys are ignored. FORMAT_AUTO takes the first format whose keys a line has, in
 * the order chat, completion, alpaca, text (Alpaca datasets often carry a "text" too).
 *
 * An example is its text as consecutive segments, each counted in the loss or not.
 * Text is UTF-8: a line or document that is not is refused, as is a line that is not a
 * JSON object, or lacks its format's keys, or holds them with another type. Errors are
 * one line, "FILE:LINE: problem".
 */
#ifndef LORAD_DATASET_H
#define LORAD_DATASET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "lorad.pb-c.h"
#include "tok_text.h"

#define DATASET_ALPACA_INPUT                                                                                   \
    "Below is an instruction that describes a task, paired with an input that provides further context. "     \
    "Write a response that appropriately completes the request.\n\n### Instruction:\n%s\n\n### Input:\n%s\n\n" \
    "### Response:\n"
#define DATASET_ALPACA_NO_INPUT                                                                  \
    "Below is an instruction that describes a task. Write a response that appropriately completes " \
    "the request.\n\n### Instruction:\n%s\n\n### Response:\n"

/* A piece of an input: a .jsonl line or a .txt document, in the input's buffer. */
struct dataset_unit {
    const char *p;
    size_t n;
    int64_t line; /* the line its first byte is on, from 1 */
};

struct dataset_units {
    struct dataset_unit *v;
    size_t n, cap;
};

enum dataset_cut {
    DATASET_CUT_LINES,       /* .jsonl: each line but the blank ones */
    DATASET_CUT_FILE,        /* .txt: the whole file */
    DATASET_CUT_BLANK_LINES, /* .txt: the documents between blank lines */
};

/* Whether PATH names an input of prep (.jsonl or .txt) rather than a token file. */
int dataset_is_text(const char *path);

/* Appends the units of S (N bytes) to OUT. */
void dataset_cut(const char *s, size_t n, enum dataset_cut cut, struct dataset_units *out);
void dataset_units_free(struct dataset_units *u);

/* A place in an input, for errors. */
struct dataset_where {
    const char *file;
    int64_t line;
};

#define DATASET_WHERE_MAX 4200
/* "FILE:LINE" of W into BUF (DATASET_WHERE_MAX bytes); returns BUF. */
const char *dataset_where_text(const struct dataset_where *w, char *buf);
/* The .jsonl line LINE (N bytes, without its newline) at W as its JSON object (NULs
 * allowed in strings, duplicate keys refused); NULL with a "FILE:LINE: problem" error
 * when it is not UTF-8, not JSON or not an object. */
json_t *dataset_line_object(const char *line, size_t n, const struct dataset_where *w);

/* An example: TEXT in segments; segment i is bytes [seg[i-1].end, seg[i].end). */
struct example {
    struct tok_buf text;
    struct example_seg {
        size_t end;
        int counted;
    } *seg;
    size_t n_seg, cap;
};

/* Appends S (N bytes) to EX as a segment (joined to the last one when COUNTED is the same). */
void example_add(struct example *ex, const char *s, size_t n, int counted);
/* Empties EX, keeping its memory. */
void example_clear(struct example *ex);
void example_free(struct example *ex);

/* Byte ranges [begin, end) of a text, ascending and disjoint. */
struct example_spans {
    struct example_span {
        size_t begin, end;
    } *v;
    size_t n, cap;
};

void example_spans_add(struct example_spans *s, size_t begin, size_t end);
void example_spans_free(struct example_spans *s);

/* Renders the chat MESSAGES (a non-empty JSON array of objects, each with a "role"
 * string) as TEXT (appended to, from empty), with the byte spans of TEXT that count in
 * the loss in COUNTED. N_PROMPT: how many of MESSAGES are a prompt/completion line's
 * prompt (the rest its completion); 0 for a "messages" line. 0, or -1 with an error
 * whose thing is WHERE ("FILE:LINE"). The chat template plugs in here (chat_loss.h). */
typedef int example_chat_fn(void *ctx, const json_t *messages, size_t n_prompt, const char *where,
                            struct tok_buf *text, struct example_spans *counted);

/* How the lines of a dataset are read: their format, and where it was decided. */
struct example_reader {
    Lorad__Format format;  /* not FORMAT_AUTO */
    const char *origin;    /* "--format", or "FILE:LINE" of the line that decided it */
    example_chat_fn *chat; /* NULL: chat data is refused */
    void *chat_ctx;
};

/* "text", "completion", "chat", "alpaca" or "auto". */
const char *dataset_format_name(Lorad__Format f);
/* The format of the .jsonl line LINE (N bytes, without its newline) at W, from its keys.
 * -1 with an error when it is not a JSON object or its keys fit no format. */
int example_line_format(const char *line, size_t n, const struct dataset_where *w, Lorad__Format *out);
/* The .jsonl line LINE at W as EX (emptied first), in R's format. -1 with an error. */
int example_from_line(const struct example_reader *r, const char *line, size_t n, const struct dataset_where *w,
                      struct example *ex);
/* The .txt document S (N bytes) starting at W as EX (emptied first): one counted
 * segment. -1 with an error at the line of its first byte that is not UTF-8. */
int example_from_text(const char *s, size_t n, const struct dataset_where *w, struct example *ex);

#endif
