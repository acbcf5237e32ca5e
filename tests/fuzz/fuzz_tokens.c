/*
 * fuzz_tokens.c: libFuzzer target for token datasets (storage/tokens.c) in the llm.c
 * .bin format: tokens_open, tokens_validate and tokens_read_sample.
 *
 * The input is the whole .bin file. Header words 3 and 4, which the format leaves
 * unused, choose the sequence length T (1 + word3 % 512) and the vocabulary size
 * (word4, or 65536 when 0), so the committed seeds stay valid shards. After a
 * successful open the target validates the dataset, reads the first samples, the
 * last and two out-of-range ones, and checks every token read against the input bytes
 * (the shard is mmapped, outside ASan's view).
 *
 * Inputs that start with the HDF5 signature are skipped unless LORAD_FUZZ_HDF5=1 is
 * set: through libhdf5 they run at about a thousand per second and mostly exercise libhdf5
 * itself, which is not built with the fuzzer's instrumentation.
 */
#include "fuzz_util.h"

#include "error.h"
#include "tokens.h"

static const uint8_t h5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
static int fuzz_hdf5;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *e = getenv("LORAD_FUZZ_HDF5");
    fuzz_hdf5 = e && e[0] == '1';
    return 0;
}

/* Reads sample I and, for a .bin shard, checks it against the input bytes and, when
 * VOCAB is not 0 (the dataset passed tokens_validate), against the vocabulary. */
static void check_sample(const struct tokens *ds, const uint8_t *data, size_t size, int64_t i, int32_t T,
                         int32_t vocab, int32_t *tok, uint8_t *mask) {
    int64_t n = tokens_n_samples(ds, T);
    int rc = tokens_read_sample(ds, i, T, tok, mask, NULL);
    if (i < 0 || i >= n) {
        FUZZ_REQUIRE(rc == -1);
        return;
    }
    if (ds->format != TOKENS_FORMAT_BIN) return;
    FUZZ_REQUIRE(rc == 0);
    size_t tb = (size_t)ds->token_bytes;
    for (int32_t j = 0; j <= T; j++) {
        size_t at = 1024 + ((size_t)i * (size_t)T + (size_t)j) * tb;
        FUZZ_REQUIRE(at + tb <= size);
        uint32_t v = tb == 2 ? (uint32_t)(data[at] | data[at + 1] << 8) : fuzz_le32(data + at);
        FUZZ_REQUIRE(tok[j] == (v > INT32_MAX ? INT32_MAX : (int32_t)v));
        FUZZ_REQUIRE(mask == NULL || mask[j] == 1);
        FUZZ_REQUIRE(vocab == 0 || (tok[j] >= 0 && tok[j] < vocab));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int is_h5 = size >= 8 && memcmp(data, h5_signature, 8) == 0;
    if (is_h5 && !fuzz_hdf5) return -1; /* keep HDF5 inputs out of the corpus */
    int32_t T = 1, vocab = 65536;
    if (size >= 20) {
        T = 1 + (int32_t)(fuzz_le32(data + 12) % 512);
        uint32_t v = fuzz_le32(data + 16);
        if (v) vocab = (int32_t)(v % INT32_MAX) + 1;
    }

    struct tokens ds;
    /* libhdf5 cannot open a memfd by its /proc/self/fd name: HDF5 inputs go to a file */
    const char *path = is_h5 ? fuzz_path_with("tokens.h5", data, size) : fuzz_memfd_path(data, size);
    if (tokens_open(&ds, path) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        return 0;
    }
    FUZZ_REQUIRE(ds.n_tokens >= 0);
    if (ds.format == TOKENS_FORMAT_BIN) {
        FUZZ_REQUIRE(!is_h5 && ds.map_size == size);
        FUZZ_REQUIRE(size == 1024 + (size_t)ds.n_tokens * (size_t)ds.token_bytes);
        FUZZ_REQUIRE(ds.token_bytes == (fuzz_le32(data) == TOKENS_MAGIC_U16 ? 2 : 4));
    }

    int valid = tokens_validate(&ds, vocab, T) == 0;
    FUZZ_REQUIRE(valid || err_msg()[0] != '\0');
    int64_t n = tokens_n_samples(&ds, T);
    FUZZ_REQUIRE(n >= 0 && (!valid || n >= 1));
    int32_t *tok = malloc(((size_t)T + 1) * sizeof *tok);
    uint8_t *mask = malloc((size_t)T + 1);
    FUZZ_REQUIRE(tok && mask);
    int32_t v = valid ? vocab : 0;
    for (int64_t i = 0; i < n && i < 8; i++) check_sample(&ds, data, size, i, T, v, tok, i % 2 ? NULL : mask);
    check_sample(&ds, data, size, n - 1, T, v, tok, mask);
    check_sample(&ds, data, size, n, T, v, tok, mask);
    check_sample(&ds, data, size, -1, T, v, tok, mask);
    free(mask);
    free(tok);
    tokens_close(&ds);
    return 0;
}
