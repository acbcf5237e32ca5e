/*
 * generate_cmd.h: `lorad generate`: decoding with a KV cache from a prompt. A model with
 * a tokenizer (tokenizer.json, or vocab.json + merges.txt) takes --prompt as text,
 * encoded by it, or with --chat rendered by its chat template as a user's message; the
 * new tokens stream to stdout as text as they come (storage/text_stream.h). Generation
 * ends at the model's EOS ids, a --stop string, --max-new or the end of the context,
 * and says which on stderr. A model without one is byte-level: the prompt's bytes are
 * its tokens, and each new token is printed as its byte (<|N|> past 255).
 *
 * --prompts FILE.jsonl (storage/prompts.h) decodes many prompts together instead, each
 * line through its --adapter NAME=DIR (unmerged, an adapter set of the model) or the base,
 * up to --batch at a time in the decoder's slots, and prints one JSON line per prompt in
 * the file's order: its adapter, prompt, text, ids, log-probabilities and end.
 */
#ifndef LORAD_GENERATE_CMD_H
#define LORAD_GENERATE_CMD_H

#include "command.h"

/* CALL->spec[0]: a GenerateSpec. Returns 0, or -1 with an error. */
command_fn generate_cmd;

#endif
