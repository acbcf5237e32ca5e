/*
 * tok_decode.h: the "decoder" of tokenizer.json, which turns token strings back into
 * text: ByteLevel (printable stand-ins back to bytes, invalid UTF-8 as U+FFFD as Rust's
 * from_utf8_lossy), ByteFallback (<0xAB> tokens to bytes), Fuse, Strip, Replace,
 * Metaspace and Sequence, chained in order. Other types are refused by name.
 */
#ifndef LORAD_TOK_DECODE_H
#define LORAD_TOK_DECODE_H

#include <jansson.h>

#include "tok_pattern.h"
#include "tok_text.h"

enum tok_dec_kind {
    TOK_DEC_BYTE_LEVEL,
    TOK_DEC_BYTE_FALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
    TOK_DEC_REPLACE,
    TOK_DEC_METASPACE,
};

struct tok_decoder {
    struct tok_dec_step {
        enum tok_dec_kind kind;
        char text[8];               /* Strip: the character; Metaspace: the replacement */
        int start, stop;            /* Strip */
        int prepend;                /* Metaspace: its prepend_scheme is not "never" */
        struct tok_replace replace; /* Replace */
    } *steps;
    int n;
};

/* Reads J (null: none, tokens joined with spaces) of FILE. */
int tok_decoder_parse(struct tok_decoder *d, const json_t *j, const char *file);
void tok_decoder_free(struct tok_decoder *d);
/* OUT = the text of the token strings TOKENS. -1 with an error when a regex gives up. */
int tok_decode(const struct tok_decoder *d, const struct tok_pieces *tokens, struct tok_buf *out);

#endif
