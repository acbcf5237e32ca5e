/*
 * byte_tokenizer.h: the tokenizer of lorad's byte-level models (`lorad init-model
 * --vocab 256`, the bundled examples/base), written as Hugging Face files that
 * tokenizer.h (and transformers) read:
 *   tokenizer.json         a byte-level BPE without merges, so the ids of a text are its
 *                          UTF-8 bytes, one each, as `lorad prep --text` writes them
 *                          (GPT-2's byte alphabet in the vocabulary; no normalizer, no
 *                          post-processor); ids 0..252 are the bytes 0x00..0xFC;
 *   tokenizer_config.json  ChatML: the special tokens, eos_token <|im_end|> (where a
 *                          chat's generation stops), pad_token <|endoftext|>, no BOS, and
 *                          a chat template whose {% generation %} blocks hold each
 *                          assistant turn's content and its <|im_end|>.
 * The special tokens take the ids of the three bytes UTF-8 never uses, 0xFD..0xFF, so
 * the vocabulary stays 256 and a model pretrained on text has never been shown them:
 * <|im_start|> 253, <|im_end|> 254, <|endoftext|> 255 (an EOS prep finds by name).
 */
#ifndef LORAD_BYTE_TOKENIZER_H
#define LORAD_BYTE_TOKENIZER_H

#define BYTE_TOKENIZER_VOCAB 256

/* The chat template of tokenizer_config.json. */
extern const char byte_tokenizer_chat_template[];

/* Writes DIR/tokenizer.json and DIR/tokenizer_config.json, each atomically. Either file
 * already there is refused unless OVERWRITE. 0, or -1 with an error naming the file. */
int byte_tokenizer_write(const char *dir, int overwrite);

#endif
