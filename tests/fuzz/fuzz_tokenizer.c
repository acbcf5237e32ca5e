/*
 * fuzz_tokenizer.c: libFuzzer target for the Hugging Face tokenizer (storage/tokenizer.c
 * and its stages), which reads the tokenizer.json that comes with downloaded models and
 * encodes and decodes any text a user gives it.
 *
 * The input is tokenizer.json's text, then a NUL byte, then the bytes to encode (no NUL:
 * all of it is tokenizer.json and the text is a fixed sample). A refused file must leave
 * an error. An accepted tokenizer must keep the reader's and the encoder's promises:
 *   - text that is not valid UTF-8 is refused with an error, and so may be text a regex
 *     gives up on; nothing else is;
 *   - without the post-processor, every id has a token (the vocabulary's or an added one);
 *   - encoding the same text again, with the encoder's word cache now warm, gives the same
 *     ids, and with the post-processor the same ids inside its special tokens;
 *   - decoding those ids succeeds and gives valid UTF-8;
 *   - decoding ids taken from the input's bytes, some outside the vocabulary, succeeds with
 *     valid UTF-8 or fails with an error, and fails exactly when an id has no token.
 */
#include "fuzz_util.h"

#include "error.h"
#include "tokenizer.h"

static const char SAMPLE[] = "Hello, world! It's 2024:  don't\tstop\n\xe2\x96\x81 <s> \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd caf\xc3\xa9";

/* Whether A holds the N ids V at AT. */
static int ids_at(const struct tok_ids *a, size_t at, const int32_t *v, size_t n) {
    return n == 0 || (at + n <= a->n && memcmp(a->v + at, v, n * sizeof *v) == 0);
}

/* A decode that failed on known ids: only a regex (a Replace decoder's) may give up. */
static int regex_gave_up(void) { return strstr(err_msg(), "gave up") != NULL; }

/* Decodes the ids that the bytes of TEXT spell, two bytes an id, a few past the end of
 * the vocabulary. */
static void decode_bytes(const struct tokenizer *t, const char *text, size_t n, struct tok_buf *out) {
    struct tok_ids ids = {0};
    int unknown = 0;
    for (size_t i = 0; i + 1 < n && ids.n < 64; i += 2) {
        int32_t id = (int32_t)(((unsigned char)text[i] << 8 | (unsigned char)text[i + 1]) % (t->n_tokens + 3));
        unknown |= tokenizer_token(t, id) == NULL;
        tok_ids_push(&ids, id);
    }
    int rc = tokenizer_decode(t, ids.v, ids.n, (int)(n & 1), out);
    FUZZ_REQUIRE(unknown ? rc == -1 && err_msg()[0] != '\0' : rc == 0 || regex_gave_up());
    FUZZ_REQUIRE(rc != 0 || utf8_valid(out->p, out->n));
    tok_ids_free(&ids);
}

static void encode_checks(const struct tokenizer *t, const char *text, size_t n) {
    struct tok_encoder e;
    tok_encoder_init(&e, t);
    struct tok_ids plain = {0}, again = {0};
    struct tok_buf out = {0};
    int rc = tok_encode(&e, text, n, 0, &plain);
    FUZZ_REQUIRE(rc == 0 || err_msg()[0] != '\0');
    FUZZ_REQUIRE(utf8_valid(text, n) || rc != 0);
    if (rc == 0) {
        for (size_t i = 0; i < plain.n; i++) FUZZ_REQUIRE(tokenizer_token(t, plain.v[i]) != NULL);
        FUZZ_REQUIRE(tok_encode(&e, text, n, 0, &again) == 0 && again.n == plain.n && ids_at(&again, 0, plain.v, plain.n));
        again.n = 0;
        const struct tok_ids *before = &t->post.before, *after = &t->post.after;
        FUZZ_REQUIRE(tok_encode(&e, text, n, 1, &again) == 0 && again.n == before->n + plain.n + after->n);
        FUZZ_REQUIRE(ids_at(&again, 0, before->v, before->n) && ids_at(&again, before->n, plain.v, plain.n) &&
                     ids_at(&again, before->n + plain.n, after->v, after->n));
        rc = tokenizer_decode(t, plain.v, plain.n, 0, &out);
        FUZZ_REQUIRE(rc == 0 ? utf8_valid(out.p, out.n) : regex_gave_up());
    }
    decode_bytes(t, text, n, &out);
    tok_ids_free(&plain);
    tok_ids_free(&again);
    tok_buf_free(&out);
    tok_encoder_free(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_n = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : SAMPLE;
    size_t text_n = nul ? size - json_n - 1 : sizeof SAMPLE - 1;
    const char *dir = fuzz_dir_with("tokenizer.json", data, json_n);
    struct tokenizer t;
    if (tokenizer_open(&t, dir) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        return 0;
    }
    encode_checks(&t, text, text_n);
    tokenizer_free(&t);
    return 0;
}
