/*
 * tokenize_speed.c: times lorad's encoder (storage/tokenizer.h) on one text, as
 * bench/tokenizer.py compares it with tiktoken and tokenizers.js: the whole file is one
 * input, encoded by tok_encode without the post-processor's special tokens (what
 * `lorad tokenize --file F --add-special off` runs), on one thread. The tokenizer's load and
 * the file's read are timed apart and left out of the encode time; each repetition starts
 * from a fresh encoder, so its word cache starts empty every time.
 *
 * usage: tokenize_speed DIR FILE [--repeat N] [--ids OUT]
 *
 * Prints one JSON line: {"bytes", "ids", "load_s", "encode_s": [one per repetition]}.
 * With --ids, writes the ids of the last repetition to OUT as little-endian int32, for
 * the benchmark to compare with the other encoders' ids.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "fileio.h"
#include "tokenizer.h"

static void ids_write(const char *path, const struct tok_ids *ids) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    for (size_t i = 0; i < ids->n; i++) {
        uint32_t v = (uint32_t)ids->v[i];
        unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
        fwrite(le, 1, 4, f);
    }
    if (fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tokenize_speed DIR FILE [--repeat N] [--ids OUT]\n");
        return 2;
    }
    int repeat = 3;
    const char *ids_path = NULL;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ids")) ids_path = argv[i + 1];
    }
    if (repeat < 1) repeat = 1;
    struct tokenizer t;
    double t0 = clock_now();
    if (tokenizer_open(&t, argv[1])) err_exit();
    double load_s = clock_now() - t0;
    size_t n;
    char *text = file_read_all(argv[2], &n);
    if (!text) err_exit();
    struct tok_ids ids = {0};
    printf("{\"bytes\": %zu, \"load_s\": %.6f, \"encode_s\": [", n, load_s);
    for (int r = 0; r < repeat; r++) {
        struct tok_encoder e;
        tok_encoder_init(&e, &t);
        ids.n = 0;
        double a = clock_now();
        if (tok_encode(&e, text, n, 0, &ids)) err_exit();
        printf("%s%.6f", r ? ", " : "", clock_now() - a);
        tok_encoder_free(&e);
    }
    printf("], \"ids\": %zu}\n", ids.n);
    if (ids_path) ids_write(ids_path, &ids);
    tok_ids_free(&ids);
    free(text);
    tokenizer_free(&t);
    return 0;
}
