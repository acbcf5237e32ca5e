/*
 * test_text_stream.c: generated ids as streamed text (storage/text_stream.c): each piece
 * is what the test computes by hand from the decoder's rules (nothing of an unfinished
 * byte-fallback run, an incomplete character or a possible stop string goes out early),
 * the pieces joined equal the decode of every id, and a stop string ends the text
 * where it begins. The tokenizer is a small byte-fallback one written to
 * $LORAD_TEST_TMP/text_stream. Exits 1 on any failure.
 */
#include "check.h"
#include "text_stream.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FFFD "\xef\xbf\xbd"

/* <unk> 0, <0x00>..<0xFF> 1..256, "a" 257, "\u2581" 258; Replace, ByteFallback, Fuse. */
static void tokenizer_write(const char *dir) {
    char *vocab = xcalloc(1, 16384);
    strcat(vocab, "{\"<unk>\": 0");
    for (int b = 0; b < 256; b++) sprintf(vocab + strlen(vocab), ", \"<0x%02X>\": %d", b, b + 1);
    strcat(vocab, ", \"a\": 257, \"\\u2581\": 258}");
    char *json = xcalloc(1, 20000);
    snprintf(json, 20000,
             "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": null, \"pre_tokenizer\": null,"
             " \"post_processor\": null, \"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
             "{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"},"
             "{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}]},"
             " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true, \"fuse_unk\": true,"
             " \"vocab\": %s, \"merges\": []}}",
             vocab);
    char *path = path_join(dir, "tokenizer.json");
    scratch_put(path, json, strlen(json));
    free(path);
    free(json);
    free(vocab);
}

/* Pushes the N ids IDS; piece i must be WANT[i]; the pieces and the finish join to the
 * decode of IDS up to the stop (JOINED). Returns the last push's result. */
static int stream_check(const struct tokenizer *t, const char *const *stop, size_t n_stop, const int32_t *ids,
                        size_t n, const char *const *want, const char *joined) {
    struct text_stream s;
    text_stream_init(&s, t, stop, n_stop);
    struct tok_buf piece = {0}, all = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        piece.n = 0;
        tok_buf_put(&piece, "", 0);
        rc = text_stream_push(&s, ids[i], &piece);
        EXPECT(piece.n == strlen(want[i]) && memcmp(piece.p, want[i], piece.n) == 0);
        tok_buf_put(&all, piece.p, piece.n);
    }
    text_stream_finish(&s, &all);
    tok_buf_put(&all, "", 0);
    EXPECT(strcmp(all.p, joined) == 0);
    tok_buf_free(&piece);
    tok_buf_free(&all);
    text_stream_free(&s);
    return rc;
}

int main(void) {
    const char *dir = scratch_dir("text_stream");
    tokenizer_write(dir);
    struct tokenizer t;
    if (!EXPECT(tokenizer_open(&t, dir) == 0)) return check_finish();
    enum { A = 257, SP = 258 };
    /* a run that makes é, then an invalid byte joins it: three U+FFFD, out when "a" ends the run */
    const int32_t run[] = {A, 1 + 0xC3, 1 + 0xA9, 1 + 0x80, A};
    const char *run_want[] = {"a", "", "", "", FFFD FFFD FFFD "a"};
    EXPECT(stream_check(&t, NULL, 0, run, 5, run_want, "a" FFFD FFFD FFFD "a") == 0);
    /* é completed, the run ended by "a"; a run still open at the end comes out at finish */
    const int32_t ok[] = {1 + 0xC3, 1 + 0xA9, A, 1 + 0xE2, 1 + 0x82};
    const char *ok_want[] = {"", "", "\xc3\xa9" "a", "", ""};
    EXPECT(stream_check(&t, NULL, 0, ok, 5, ok_want, "\xc3\xa9" "a" FFFD FFFD) == 0);
    /* a stop string across tokens: " " is held (it may begin " a"), then the text ends before it */
    const char *stops[] = {"zz", " a"};
    const int32_t st[] = {A, SP, A, A};
    const char *st_want[] = {"a", "", ""};
    EXPECT(stream_check(&t, stops, 2, st, 3, st_want, "a") == 2);
    /* a held tail that is not a stop string after all goes out with the next piece */
    const int32_t nst[] = {A, SP, SP};
    const char *nst_want[] = {"a", "", " "};
    EXPECT(stream_check(&t, stops, 2, nst, 3, nst_want, "a  ") == 0);
    /* byte-level: bytes as they are (an incomplete character too), <|N|> past 255 */
    const int32_t bl[] = {0xC3, 300, 'h'};
    const char *bl_want[] = {"\xc3", "<|300|>", "h"};
    EXPECT(stream_check(NULL, NULL, 0, bl, 3, bl_want, "\xc3<|300|>h") == 0);
    tokenizer_free(&t);
    return check_finish();
}
