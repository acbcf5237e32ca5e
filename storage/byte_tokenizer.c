/*
 * byte_tokenizer.c: the byte-level models' tokenizer files (byte_tokenizer.h).
 */
#include "byte_tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "tok_text.h"

#define FIRST_SPECIAL 253 /* the byte 0xFD: it and the two above never occur in UTF-8 */

static const char *const specials[BYTE_TOKENIZER_VOCAB - FIRST_SPECIAL] = {"<|im_start|>", "<|im_end|>",
                                                                           "<|endoftext|>"};

const char byte_tokenizer_chat_template[] =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* An added token as tokenizer.json lists it. */
static json_t *added_token(int id) {
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", specials[id - FIRST_SPECIAL],
                     "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

/* The byte level's pre-tokenizer or decoder object. */
static json_t *byte_level(void) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                     "use_regex", 0);
}

static json_t *tokenizer_json(void) {
    struct byte_level_map m;
    byte_level_map_init(&m);
    json_t *vocab = json_object(), *added = json_array();
    for (int id = 0; id < BYTE_TOKENIZER_VOCAB; id++) {
        char c[5] = {0};
        if (id < FIRST_SPECIAL) utf8_encode(m.chr[id], c);
        json_object_set_new(vocab, id < FIRST_SPECIAL ? c : specials[id - FIRST_SPECIAL], json_integer(id));
        if (id >= FIRST_SPECIAL) json_array_append_new(added, added_token(id));
    }
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:[]}", "type", "BPE", "dropout",
                              "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                              "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges");
    return json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:n, s:o, s:o}", "version", "1.0", "truncation", "padding",
                     "added_tokens", added, "normalizer", "pre_tokenizer", byte_level(), "post_processor", "decoder",
                     byte_level(), "model", model);
}

static json_t *config_json(void) {
    json_t *decoder = json_object();
    for (int id = FIRST_SPECIAL; id < BYTE_TOKENIZER_VOCAB; id++) {
        json_t *t = added_token(id);
        json_object_del(t, "id");
        char key[8];
        snprintf(key, sizeof key, "%d", id);
        json_object_set_new(decoder, key, t);
    }
    return json_pack("{s:b, s:b, s:o, s:n, s:s, s:s, s:n, s:[s, s], s:b, s:s, s:s}", "add_bos_token", 0,
                     "add_eos_token", 0, "added_tokens_decoder", decoder, "bos_token", "eos_token", specials[1],
                     "pad_token", specials[2], "unk_token", "additional_special_tokens", specials[0], specials[1],
                     "clean_up_tokenization_spaces", 0, "tokenizer_class", "PreTrainedTokenizerFast", "chat_template",
                     byte_tokenizer_chat_template);
}

/* ROOT (taken) as DIR/NAME, indented, with a final newline. */
static int json_write(const char *dir, const char *name, json_t *root) {
    char *path = path_join(dir, name), *text = json_dumps(root, JSON_INDENT(2));
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    memcpy(text + n, "\n", 2);
    int rc = file_write_atomic(path, text, n + 1);
    free(text);
    free(path);
    json_decref(root);
    return rc;
}

int byte_tokenizer_write(const char *dir, int overwrite) {
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2 && !overwrite; i++) {
        char *path = path_join(dir, names[i]);
        int there = access(path, F_OK) == 0;
        if (there) err_set(path, "exists"), err_hint("--overwrite replaces it");
        free(path);
        if (there) return -1;
    }
    if (json_write(dir, names[0], tokenizer_json())) return -1;
    return json_write(dir, names[1], config_json());
}
