/*
 * test_tokens.c: token datasets (storage/tokens.c). llm.c .bin shards and HDF5 files are
 * read back sample by sample; HDF5 integer types other than uint32 are converted;
 * validation finds out-of-vocabulary tokens and too-short data; corrupt files fail with
 * one line naming the file; what lorad prep records is read back and checked against a
 * model (provenance.h); examples (/doc_offsets) become packed samples that count every
 * target exactly once. Files go to $LORAD_TEST_TMP/tokens. Exits 1 on any failure.
 */
#include "check.h"
#include "error.h"
#include "fileio.h"
#include "provenance.h"
#include "rng.h"
#include "tokens.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *tmp_dir; /* scratch_dir("tokens") */

static void put_le(unsigned char *p, uint32_t v, int bytes) {
    for (int b = 0; b < bytes; b++) p[b] = (unsigned char)(v >> (8 * b));
}

/* A .bin shard whose header says COUNT tokens, followed by the N_TOK tokens TOK. */
static void bin_put(const char *path, uint32_t magic, int32_t version, int32_t count, const uint32_t *tok,
                    int64_t n_tok) {
    int width = magic == TOKENS_MAGIC_U16 ? 2 : 4;
    size_t n = 1024 + (size_t)n_tok * (size_t)width;
    unsigned char *buf = xcalloc(n, 1);
    put_le(buf, magic, 4);
    put_le(buf + 4, (uint32_t)version, 4);
    put_le(buf + 8, (uint32_t)count, 4);
    for (int64_t k = 0; k < n_tok; k++) put_le(buf + 1024 + k * width, tok[k], width);
    scratch_put(path, buf, n);
    free(buf);
}

static void expect_open_fails(const char *path, const char *want) {
    struct tokens ds;
    EXPECT_ERROR(tokens_open(&ds, path), path, want);
    tokens_close(&ds); /* a failed open leaves DS closed; closing again is harmless */
}

/* Every sample of DS for seq T matches REF (tokens as int32) and REF_MASK (NULL: all 1). */
static void expect_samples(const struct tokens *ds, int32_t T, const int32_t *ref, const uint8_t *ref_mask) {
    int64_t n_samples = tokens_n_samples(ds, T);
    EXPECT(n_samples == (ds->n_tokens - 1) / T);
    int32_t *tok = xmalloc(((size_t)T + 1) * sizeof *tok);
    uint8_t *mask = xmalloc((size_t)T + 1);
    for (int64_t i = 0; i < n_samples; i++) {
        EXPECT(tokens_read_sample(ds, i, T, tok, mask, NULL) == 0);
        int bad = 0;
        for (int32_t j = 0; j <= T; j++)
            bad |= tok[j] != ref[i * T + j] || mask[j] != (ref_mask ? ref_mask[i * T + j] : 1);
        if (bad) fprintf(stderr, "FAIL %s: sample %lld differs\n", ds->path, (long long)i);
        checks_note(!bad);
        EXPECT(tokens_read_sample(ds, i, T, tok, NULL, NULL) == 0);
    }
    EXPECT_ERROR(tokens_read_sample(ds, n_samples, T, tok, mask, NULL), ds->path, "out of range");
    EXPECT_ERROR(tokens_read_sample(ds, -1, T, tok, mask, NULL), ds->path, "out of range");
    free(mask);
    free(tok);
}

static void test_bin_u16(void) {
    enum { N = 37, T = 4 };
    uint32_t tok[N];
    int32_t ref[N];
    for (int k = 0; k < N; k++) ref[k] = (int32_t)(tok[k] = (uint32_t)(k * 1009 + 40000) % 65536);
    char *path = path_join(tmp_dir, "u16.bin");
    bin_put(path, TOKENS_MAGIC_U16, 1, N, tok, N);
    struct tokens ds;
    EXPECT(tokens_open(&ds, path) == 0);
    EXPECT(ds.format == TOKENS_FORMAT_BIN && ds.token_bytes == 2 && ds.n_tokens == N && !ds.has_mask);
    EXPECT(tokens_n_samples(&ds, T) == 9);
    expect_samples(&ds, T, ref, NULL);
    EXPECT(tokens_validate(&ds, 65536, T) == 0);
    int first = 0;
    while (ref[first] < 50257) first++;
    char want[128];
    snprintf(want, sizeof want, "token %d at position %d is outside the vocabulary (size 50257)", ref[first], first);
    EXPECT_ERROR(tokens_validate(&ds, 50257, T), path, want);
    tokens_close(&ds);
    tokens_close(&ds);
    free(path);
}

static void test_bin_u32(void) {
    enum { N = 50, T = 7 };
    uint32_t tok[N];
    int32_t ref[N];
    for (int k = 0; k < N; k++) ref[k] = (int32_t)(tok[k] = 100000u + (uint32_t)k * 3);
    tok[41] = 0xffffffffu; /* beyond int32: reads saturate */
    ref[41] = INT32_MAX;
    char *path = path_join(tmp_dir, "u32.bin");
    bin_put(path, TOKENS_MAGIC_U32, 2, N, tok, N);
    struct tokens ds;
    EXPECT(tokens_open(&ds, path) == 0);
    EXPECT(ds.format == TOKENS_FORMAT_BIN && ds.token_bytes == 4 && ds.n_tokens == N);
    expect_samples(&ds, T, ref, NULL);
    EXPECT_ERROR(tokens_validate(&ds, 200000, T), path, "token >= 2147483647 at position 41");
    tokens_close(&ds);
    free(path);
}

/* The exact messages other layers and users see. */
static void test_validate_messages(void) {
    uint32_t tok[20] = {0};
    tok[12] = 70000;
    char *bin = path_join(tmp_dir, "data.bin");
    bin_put(bin, TOKENS_MAGIC_U32, 2, 20, tok, 20);
    struct tokens ds;
    EXPECT(tokens_open(&ds, bin) == 0);
    EXPECT_ERROR(tokens_validate(&ds, 50257, 8), bin,
                 "data.bin: token 70000 at position 12 is outside the vocabulary (size 50257)");
    EXPECT(tokens_validate(&ds, 70001, 19) == 0);
    EXPECT_ERROR(tokens_validate(&ds, 70001, 20), bin, "20 tokens is shorter than one sample (seq 20 needs 21)");
    EXPECT_ERROR(tokens_validate(&ds, 70001, 0), bin, "sequence length 0");
    tokens_close(&ds);

    char *h5 = path_join(tmp_dir, "data.h5");
    EXPECT(tokens_write_h5(h5, tok, 5, NULL, NULL) == 0);
    EXPECT(tokens_open(&ds, h5) == 0);
    EXPECT_ERROR(tokens_validate(&ds, 50257, 8), h5, "data.h5: 5 tokens is shorter than one sample (seq 8 needs 9)");
    EXPECT(tokens_n_samples(&ds, 8) == 0);
    tokens_close(&ds);
    free(h5);
    free(bin);
}

/* Round trip through tokens_write_h5, large enough for two chunks and two validate blocks. */
static void test_h5_round_trip(void) {
    const int64_t n = (1 << 20) + 77;
    const int32_t T = 1000;
    uint32_t *tok = xmalloc((size_t)n * sizeof *tok);
    int32_t *ref = xmalloc((size_t)n * sizeof *ref);
    uint8_t *mask = xmalloc((size_t)n), *ref_mask = xmalloc((size_t)n);
    for (int64_t k = 0; k < n; k++) {
        ref[k] = (int32_t)(tok[k] = (uint32_t)(k * 7919 % 50257));
        mask[k] = (uint8_t)(k % 5 == 0 ? 0 : k % 5 * 60); /* 0, 60, 120, 180, 240 */
        ref_mask[k] = mask[k] != 0;
    }
    char *path = path_join(tmp_dir, "round.h5");
    struct tokens ds;
    EXPECT(tokens_write_h5(path, tok, 10, NULL, NULL) == 0); /* replaced below */
    EXPECT(tokens_write_h5(path, tok, n, NULL, NULL) == 0);
    EXPECT(tokens_open(&ds, path) == 0);
    EXPECT(ds.format == TOKENS_FORMAT_HDF5 && ds.n_tokens == n && !ds.has_mask);
    expect_samples(&ds, T, ref, NULL);
    EXPECT(tokens_validate(&ds, 50257, T) == 0);
    tokens_close(&ds);

    tok[(1 << 20) + 3] = 50257;
    EXPECT(tokens_write_h5(path, tok, n, mask, NULL) == 0);
    ref[(1 << 20) + 3] = 50257;
    EXPECT(tokens_open(&ds, path) == 0);
    EXPECT(ds.n_tokens == n && ds.has_mask);
    expect_samples(&ds, T, ref, ref_mask);
    EXPECT_ERROR(tokens_validate(&ds, 50257, T), path, "token 50257 at position 1048579 ");
    tokens_close(&ds);
    EXPECT_NO_TEMPORARIES(tmp_dir);

    char *nowhere = path_join(tmp_dir, "no/such/dir/x.h5");
    EXPECT_ERROR(tokens_write_h5(nowhere, tok, n, NULL, NULL), nowhere, "cannot");
    EXPECT_ERROR(tokens_write_h5(path, tok, 0, NULL, NULL), path, "no tokens");
    free(nowhere);
    free(path);
    free(ref_mask);
    free(mask);
    free(ref);
    free(tok);
}

/* Dataset NAME of TYPE (file and memory alike) and RANK dims (0: scalar) in file F. */
static void h5_put(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data) {
    hid_t space = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    CHECK(space >= 0);
    hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(d >= 0);
    CHECK(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Sclose(space);
}

static hid_t h5_create(const char *path) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0);
    return f;
}

/* PATH: an HDF5 file of N tokens TOK of TYPE and, unless MASK is NULL, a loss mask of MASK_TYPE. */
static void h5_tokens_put(const char *path, hsize_t n, hid_t type, const void *tok, hid_t mask_type, const void *mask) {
    hid_t f = h5_create(path);
    h5_put(f, "/tokens", type, 1, &n, tok);
    if (mask) h5_put(f, "/loss_mask", mask_type, 1, &n, mask);
    H5Fclose(f);
}

/* PATH opens and fails validation (vocabulary 30000, seq T) with WANT. */
static void expect_invalid(const char *path, int32_t T, const char *want) {
    struct tokens ds;
    EXPECT(tokens_open(&ds, path) == 0);
    EXPECT_ERROR(tokens_validate(&ds, 30000, T), path, want);
    tokens_close(&ds);
}

/* /tokens as int16 and int64, /loss_mask as int32 and int64: converted on read. */
static void test_h5_types(void) {
    enum { N = 30, T = 4 };
    int16_t t16[N];
    int64_t t64[N], m64[N];
    int32_t ref[N], m32[N];
    uint8_t ref_mask[N];
    for (int k = 0; k < N; k++) {
        ref[k] = k * 1000;
        t16[k] = (int16_t)ref[k];
        t64[k] = ref[k];
        m32[k] = k % 3 == 0 ? 0 : k % 3 == 1 ? -1 : 256; /* nonzero either side of a byte */
        m64[k] = k % 3 == 0 ? 0 : (int64_t)1 << 40;
        ref_mask[k] = k % 3 != 0;
    }
    char *p16 = path_join(tmp_dir, "int16.h5"), *p64 = path_join(tmp_dir, "int64.h5");
    h5_tokens_put(p16, N, H5T_NATIVE_INT16, t16, H5T_NATIVE_INT32, m32);
    h5_tokens_put(p64, N, H5T_NATIVE_INT64, t64, H5T_NATIVE_INT64, m64);
    const char *paths[] = {p16, p64};
    for (int k = 0; k < 2; k++) {
        struct tokens ds;
        EXPECT(tokens_open(&ds, paths[k]) == 0);
        expect_samples(&ds, T, ref, ref_mask);
        EXPECT(tokens_validate(&ds, 30000, T) == 0);
        tokens_close(&ds);
    }

    t16[9] = -3;
    h5_tokens_put(p16, N, H5T_NATIVE_INT16, t16, 0, NULL);
    expect_invalid(p16, T, "token -3 at position 9 ");
    t64[20] = 5000000000;
    h5_tokens_put(p64, N, H5T_NATIVE_INT64, t64, 0, NULL);
    expect_invalid(p64, T, "token >= 2147483647 at position 20 ");
    free(p64);
    free(p16);
}

static void test_bin_corrupt(void) {
    uint32_t tok[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    unsigned char junk[500] = "hello, not a token file";
    char *path = path_join(tmp_dir, "bad.bin");
    bin_put(path, 12345, 1, 10, tok, 10);
    expect_open_fails(path, "bad magic 12345 (hint: expected an llm.c .bin shard");
    bin_put(path, TOKENS_MAGIC_U16, 1, 10, tok, 9);
    expect_open_fails(path, "header says 10 tokens (1044 bytes) but the file has 1042 bytes");
    scratch_put(path, NULL, 0);
    expect_open_fails(path, "0 bytes is shorter than a .bin header");
    scratch_put(path, junk, sizeof junk);
    expect_open_fails(path, "500 bytes is shorter than a .bin header");
    bin_put(path, TOKENS_MAGIC_U32, 2, -1, tok, 0);
    expect_open_fails(path, "header says -1 tokens");
    bin_put(path, TOKENS_MAGIC_U32, 2, INT32_MAX, tok, 10);
    expect_open_fails(path, "header says 2147483647 tokens");
    memcpy(junk, "\x89HDF\r\n\x1a\n", 8); /* signature, then garbage */
    scratch_put(path, junk, sizeof junk);
    expect_open_fails(path, "cannot open as HDF5");
    expect_open_fails(tmp_dir, "not a regular file");
    char *missing = path_join(tmp_dir, "missing.bin");
    expect_open_fails(missing, "cannot open");
    free(missing);
    free(path);
}

static void test_h5_corrupt(void) {
    int32_t t[20] = {0};
    float fl[10] = {0};
    hsize_t d10 = 10, d9 = 9, d2x5[2] = {2, 5};
    char *path = path_join(tmp_dir, "bad.h5");
    hid_t f = h5_create(path);
    h5_put(f, "/other", H5T_NATIVE_INT32, 1, &d10, t);
    H5Fclose(f);
    expect_open_fails(path, "no /tokens dataset");

    f = h5_create(path);
    h5_put(f, "/tokens", H5T_NATIVE_INT32, 2, d2x5, t);
    H5Fclose(f);
    expect_open_fails(path, "/tokens has 2 dimensions, expected 1");

    f = h5_create(path);
    h5_put(f, "/tokens", H5T_NATIVE_INT32, 0, NULL, t);
    H5Fclose(f);
    expect_open_fails(path, "/tokens has 0 dimensions, expected 1");

    f = h5_create(path);
    h5_put(f, "/tokens", H5T_NATIVE_FLOAT, 1, &d10, fl);
    H5Fclose(f);
    expect_open_fails(path, "/tokens does not hold integers");

    f = h5_create(path);
    H5Gclose(H5Gcreate2(f, "/tokens", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(f);
    expect_open_fails(path, "/tokens is not a readable dataset");

    f = h5_create(path);
    h5_put(f, "/tokens", H5T_NATIVE_INT32, 1, &d10, t);
    h5_put(f, "/loss_mask", H5T_NATIVE_UINT8, 1, &d9, t);
    H5Fclose(f);
    expect_open_fails(path, "/loss_mask has 9 entries but /tokens has 10");

    f = h5_create(path);
    h5_put(f, "/tokens", H5T_NATIVE_INT32, 1, &d10, t);
    h5_put(f, "/loss_mask", H5T_NATIVE_FLOAT, 1, &d10, fl);
    H5Fclose(f);
    expect_open_fails(path, "/loss_mask does not hold integers");
    free(path);
}

/* What lorad prep records is read back, and provenance_check refuses a file of another
 * tokenizer or a larger vocabulary, naming the file and both sides. */
static void test_provenance(void) {
    uint32_t tok[12] = {0, 5, 9, 2, 7, 7, 1, 3, 8, 4, 6, 2};
    int64_t docs[3] = {0, 4, 9}, eos[2] = {9, 8};
    char *path = path_join(tmp_dir, "prep.h5"), *model = path_join(tmp_dir, "model");
    char *tj = path_join(model, "tokenizer.json");
    EXPECT(dir_make(model) == 0);
    scratch_put(tj, "{\"model\": {}}", 13);
    struct provenance p;
    EXPECT(provenance_read(&p, model) == 1 && provenance_is_fingerprint(p.fingerprint) &&
           !strcmp(p.files, "tokenizer.json"));
    struct tokens_meta meta = {.doc_offsets = docs, .n_docs = 3, .vocab_size = 10, .eos_ids = eos, .n_eos = 2,
                               .fingerprint = p.fingerprint, .sources = "[\"a.jsonl\"]"};
    EXPECT(tokens_write_h5(path, tok, 12, NULL, &meta) == 0);
    struct tokens ds;
    EXPECT(tokens_open(&ds, path) == 0);
    EXPECT(ds.vocab_size == 10 && ds.fingerprint && !strcmp(ds.fingerprint, p.fingerprint));
    EXPECT(provenance_check(&ds, model, 10) == 0 && provenance_check(&ds, tmp_dir, 12) == 0);
    EXPECT_ERROR(provenance_check(&ds, model, 9), path, "a vocabulary of 10 tokens, more than the model's 9");
    scratch_put(tj, "{\"model\": {} }", 14); /* another file, another fingerprint */
    EXPECT_ERROR(provenance_check(&ds, model, 10), path, "another tokenizer");
    tokens_close(&ds);
    meta.fingerprint = "not hex";
    EXPECT(tokens_write_h5(path, tok, 12, NULL, &meta) == 0);
    expect_open_fails(path, "tokenizer_fingerprint is not 16 hex digits");
    meta.fingerprint = NULL;
    meta.vocab_size = -3;
    EXPECT(tokens_write_h5(path, tok, 12, NULL, &meta) == 0);
    expect_open_fails(path, "vocab_size is not a positive integer");
    EXPECT(provenance_read(&p, tmp_dir) == 0);
    free(tj);
    free(model);
    free(path);
}

/* Every planned sample of a file of random examples (lengths 0 to 3T+3, a mask) for
 * each PACK and TRUNCATE: tokens, mask and starts as packing.h says, and every target of
 * the file (a token after its example's first, its mask byte set; with TRUNCATE only the
 * first T of each example) counted in exactly one sample. Packing needs fewer samples. */
static void test_packing(void) {
    enum { T = 12, DOCS = 300 };
    int64_t docs[DOCS], n = 0;
    for (int d = 0; d < DOCS; d++) docs[d] = n, n += (int64_t)(rng_bits(7, (uint64_t)d) % (3 * T + 4));
    uint32_t *tok = xcalloc((size_t)n, sizeof *tok);
    uint8_t *mask = xcalloc((size_t)n, 1);
    for (int64_t i = 0; i < n; i++) tok[i] = (uint32_t)(rng_bits(8, (uint64_t)i) % 1000), mask[i] = i % 5 != 2;
    for (int d = 1; d < DOCS; d++) /* an empty example now and then */
        if (d % 50 == 0) docs[d] = docs[d - 1];
    char *path = path_join(tmp_dir, "packed.h5");
    struct tokens_meta meta = {.doc_offsets = docs, .n_docs = DOCS};
    EXPECT(tokens_write_h5(path, tok, n, mask, &meta) == 0);
    int32_t *counted = xcalloc((size_t)n, sizeof *counted), stok[T + 1], start[T + 1];
    uint8_t smask[T + 1];
    int64_t samples[2] = {0, 0};
    for (int truncate = 0; truncate <= 1; truncate++)
        for (int pack = 0; pack <= 1; pack++) {
            struct tokens ds;
            EXPECT(tokens_open(&ds, path) == 0 && ds.n_docs == DOCS);
            tokens_plan(&ds, T, pack, truncate);
            EXPECT(tokens_planned(&ds) && tokens_validate(&ds, 1000, T) == 0);
            const struct packing *p = &ds.plan;
            memset(counted, 0, (size_t)n * sizeof *counted);
            int ok = 1;
            for (int64_t i = 0; i < tokens_n_samples(&ds, T); i++) {
                EXPECT(tokens_read_sample(&ds, i, T, stok, smask, start) == 0);
                int32_t o = 0;
                for (int64_t k = p->first[i]; k < p->first[i + 1]; k++) {
                    const struct pack_piece pc = p->pieces[k];
                    for (int32_t j = 0; j < pc.n; j++) {
                        ok &= start[o + j] == o && stok[o + j] == (int32_t)tok[pc.begin + j];
                        ok &= smask[o + j] == (j > 0 && mask[pc.begin + j]);
                        counted[pc.begin + j] += smask[o + j];
                    }
                    o += pc.n;
                }
                ok &= o <= T + 1 && (pack || p->first[i + 1] - p->first[i] == 1);
                for (int32_t j = o; j <= T; j++) ok &= smask[j] == 0 && start[j] == o;
            }
            for (int d = 0; d < DOCS; d++) {
                const int64_t b = docs[d], e = d + 1 < DOCS ? docs[d + 1] : n;
                for (int64_t j = b; j < e; j++)
                    ok &= counted[j] == (j > b && mask[j] && (!truncate || j - b <= T));
            }
            printf("packing pack %d truncate %d: %lld samples, %lld split %s\n", pack, truncate,
                   (long long)p->n_samples, (long long)p->n_split, ok ? "ok" : "FAIL");
            EXPECT(ok && p->n_split > 0);
            samples[pack] = p->n_samples;
            tokens_close(&ds);
            if (pack) EXPECT(samples[1] < samples[0]);
        }
    /* offsets that do not start at 0, or go back, or run past the tokens, or outnumber them */
    const int64_t bad[3][3] = {{2, 5, 9}, {0, 9, 4}, {0, 4, n}};
    const char *want[3] = {"/doc_offsets starts at 2, not 0", "/doc_offsets[2] = 4 is not in [9,",
                           "is not in [4, "};
    for (int i = 0; i < 3; i++) {
        meta = (struct tokens_meta){.doc_offsets = bad[i], .n_docs = 3};
        EXPECT(tokens_write_h5(path, tok, n, NULL, &meta) == 0);
        expect_open_fails(path, want[i]);
    }
    meta = (struct tokens_meta){.doc_offsets = docs, .n_docs = 3};
    EXPECT(tokens_write_h5(path, tok, 2, NULL, &meta) == 0);
    expect_open_fails(path, "/doc_offsets has 3 entries but /tokens has 2");
    free(counted), free(tok), free(mask), free(path);
}

int main(void) {
    tmp_dir = scratch_dir("tokens");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    test_bin_u16();
    test_bin_u32();
    test_validate_messages();
    test_h5_round_trip();
    test_h5_types();
    test_bin_corrupt();
    test_h5_corrupt();
    test_provenance();
    test_packing();
    return check_finish();
}
