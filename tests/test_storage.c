/*
 * test_storage.c: tests of storage/: the file helpers, safetensors write/read round trips,
 * the half-precision conversions against hand-derived bit patterns, many malformed
 * safetensors files (each must fail with one line naming the file, never crash),
 * config.json and PEFT adapter_config.json. Files go to $LORAD_TEST_TMP. Prints each
 * failed check and exits non-zero when any failed.
 */
#include "check.h"
#include "error.h"
#include "fileio.h"
#include "hf_config.h"
#include "peft.h"
#include "safetensors.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tmp_dir; /* scratch_dir("storage") */

/* TMP_DIR/NAME into OUT (PATH_CHARS bytes). */
#define PATH_CHARS 1200
static char *tmp_path(char *out, const char *name) {
    snprintf(out, PATH_CHARS, "%s/%s", tmp_dir, name);
    return out;
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A safetensors file: length word LEN, HEADER_LEN header bytes, DATA_LEN zero bytes. */
static void write_st(const char *path, uint64_t len, const char *header, size_t header_len, size_t data_len) {
    size_t n = 8 + header_len + data_len;
    uint8_t *buf = xcalloc(n, 1);
    put_u64(buf, len);
    memcpy(buf + 8, header, header_len);
    scratch_put(path, buf, n);
    free(buf);
}

static int contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

/* ---- fileio ---- */

static void test_fileio(void) {
    checks_case = "fileio";
    char path[PATH_CHARS], dir[PATH_CHARS];
    size_t len = 99;
    EXPECT(file_write_atomic(tmp_path(path, "hello.txt"), "hello\n", 6) == 0);
    char *text = file_read_all(path, &len);
    EXPECT(text && len == 6 && strcmp(text, "hello\n") == 0);
    free(text);
    EXPECT(file_write_atomic(path, "", 0) == 0);
    text = file_read_all(path, &len);
    EXPECT(text && len == 0 && text[0] == '\0');
    free(text);
    EXPECT_NO_TEMPORARIES(tmp_dir);
    EXPECT(file_read_all(tmp_path(path, "missing.txt"), &len) == NULL && error_names(path, ""));
    EXPECT(file_read_all(tmp_dir, &len) == NULL && error_names(tmp_dir, ""));
    EXPECT(dir_make(tmp_path(dir, "a/b//c/")) == 0);
    EXPECT(dir_make(dir) == 0);
    EXPECT(file_write_atomic(tmp_path(path, "a/b/c/f"), "x", 1) == 0);
    EXPECT_ERROR(dir_make(path), path, "");
    EXPECT_ERROR(file_write_atomic(tmp_path(path, "nodir/f"), "x", 1), path, "");
    char *joined = path_join("x/y", "config.json");
    EXPECT(strcmp(joined, "x/y/config.json") == 0);
    free(joined);
}

/* ---- half precision ---- */

/* f32 bit patterns with their f16 and bf16 encodings, worked out from the IEEE
 * definitions (round to nearest, ties to even; NaN kept NaN with the quiet bit set). */
static const struct {
    uint32_t f32;
    uint16_t f16, bf16;
} half_cases[] = {
    {0x3F800000, 0x3C00, 0x3F80}, /* 1 */
    {0xC0000000, 0xC000, 0xC000}, /* -2 */
    {0x3F000000, 0x3800, 0x3F00}, /* 0.5 */
    {0x00000000, 0x0000, 0x0000}, /* 0 */
    {0x80000000, 0x8000, 0x8000}, /* -0 */
    {0x40490FDB, 0x4248, 0x4049}, /* pi: both round down */
    {0x3EAAAAAB, 0x3555, 0x3EAB}, /* 1/3: f16 down, bf16 up */
    {0x477FE000, 0x7BFF, 0x4780}, /* 65504, the largest f16 */
    {0xC77FE000, 0xFBFF, 0xC780}, /* -65504 */
    {0x477FEF00, 0x7BFF, 0x4780}, /* 65519: below the f16 halfway point */
    {0x477FF000, 0x7C00, 0x4780}, /* 65520: tie, goes to the even neighbour 65536 = inf */
    {0x49742400, 0x7C00, 0x4974}, /* 1e6: f16 overflow */
    {0x7F7FFFFF, 0x7C00, 0x7F80}, /* FLT_MAX: both overflow */
    {0x7F800000, 0x7C00, 0x7F80}, /* inf */
    {0xFF800000, 0xFC00, 0xFF80}, /* -inf */
    {0x3F801000, 0x3C00, 0x3F80}, /* 1 + 2^-11: f16 tie, even is 1 */
    {0x3F803000, 0x3C02, 0x3F80}, /* 1 + 3*2^-11: f16 tie, even is 1 + 2^-9 */
    {0x3F801001, 0x3C01, 0x3F80}, /* 1 + 2^-11 + 2^-23: above half, up */
    {0x3F808000, 0x3C04, 0x3F80}, /* 1 + 2^-8: bf16 tie, even is 1 */
    {0x3F818000, 0x3C0C, 0x3F82}, /* 1 + 3*2^-8: bf16 tie, even is 1 + 2^-6 */
    {0x3F808001, 0x3C04, 0x3F81}, /* 1 + 2^-8 + 2^-23: bf16 above half, up */
    {0x38800000, 0x0400, 0x3880}, /* 2^-14, the smallest normal f16 */
    {0x387FC000, 0x03FF, 0x3880}, /* 1023*2^-24, the largest subnormal f16 */
    {0x387FE000, 0x0400, 0x3880}, /* 1023.5*2^-24: tie, even is 0x400 */
    {0x33800000, 0x0001, 0x3380}, /* 2^-24, the smallest subnormal f16 */
    {0x33000000, 0x0000, 0x3300}, /* 2^-25: tie, even is 0 */
    {0x33000001, 0x0001, 0x3300}, /* just above 2^-25: up */
    {0x33400000, 0x0001, 0x3340}, /* 1.5*2^-25: up */
    {0x33C00000, 0x0002, 0x33C0}, /* 1.5*2^-24: tie between 1 and 2 */
    {0x34200000, 0x0002, 0x3420}, /* 2.5*2^-24: tie between 2 and 3 */
    {0x34600000, 0x0004, 0x3460}, /* 3.5*2^-24: tie between 3 and 4 */
    {0x00000001, 0x0000, 0x0000}, /* smallest f32 subnormal */
    {0x807FFFFF, 0x8000, 0x8080}, /* largest f32 subnormal, negative: bf16 up to -2^-126 */
    {0x7FC00000, 0x7E00, 0x7FC0}, /* quiet NaN */
    {0xFFC00000, 0xFE00, 0xFFC0}, /* negative quiet NaN */
    {0x7F800001, 0x7E00, 0x7FC0}, /* signalling NaN whose payload is below both formats */
    {0x7FA00000, 0x7F00, 0x7FE0}, /* signalling NaN with a payload: kept, quietened */
};

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void test_half_known(void) {
    checks_case = "half: known bit patterns";
    for (size_t i = 0; i < sizeof half_cases / sizeof half_cases[0]; i++) {
        float f = float_of(half_cases[i].f32);
        uint16_t h = f32_to_f16(f), b = f32_to_bf16(f);
        if (!EXPECT(h == half_cases[i].f16 && b == half_cases[i].bf16))
            fprintf(stderr, "  f32 0x%08X: f16 0x%04X (want 0x%04X), bf16 0x%04X (want 0x%04X)\n",
                    half_cases[i].f32, h, half_cases[i].f16, b, half_cases[i].bf16);
    }
    EXPECT(f16_to_f32(0x3C00) == 1.0f);
    EXPECT(f16_to_f32(0x0001) == 0x1p-24f);
    EXPECT(f16_to_f32(0x03FF) == 1023 * 0x1p-24f);
    EXPECT(f16_to_f32(0x7BFF) == 65504.0f);
    EXPECT(f16_to_f32(0x3555) == 0.333251953125f);
    EXPECT(f16_to_f32(0x4248) == 3.140625f);
    EXPECT(f16_to_f32(0xFC00) == -INFINITY);
    EXPECT(isnan(f16_to_f32(0x7E00)) && isnan(f16_to_f32(0x7C01)));
    EXPECT(bits_of(f16_to_f32(0x8000)) == 0x80000000u);
    EXPECT(bf16_to_f32(0x3F80) == 1.0f);
    EXPECT(bf16_to_f32(0x4049) == 3.140625f);
    EXPECT(bf16_to_f32(0x0080) == 0x1p-126f);
    EXPECT(bf16_to_f32(0x0001) == 0x1p-133f);
    EXPECT(bf16_to_f32(0xFF80) == -INFINITY);
}

static int f16_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }
static int bf16_is_nan(uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x7F); }

/* Every 16-bit pattern survives a trip through float32 (NaNs come back quietened). */
static void test_half_exhaustive(void) {
    checks_case = "half: all 65536 patterns";
    int bad_f16 = 0, bad_bf16 = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        uint16_t want_f16 = f16_is_nan(h) ? (uint16_t)(h | 0x200) : h;
        uint16_t want_bf16 = bf16_is_nan(h) ? (uint16_t)(h | 0x40) : h;
        bad_f16 += f32_to_f16(f16_to_f32(h)) != want_f16;
        bad_bf16 += f32_to_bf16(bf16_to_f32(h)) != want_bf16;
    }
    EXPECT(bad_f16 == 0);
    EXPECT(bad_bf16 == 0);
}

#ifdef __FLT16_MAX__
/* The compiler's _Float16 conversion rounds to nearest even too: compare on a sweep of
 * float32 bit patterns. */
static void test_half_vs_compiler(void) {
    checks_case = "half: against _Float16";
    int bad = 0;
    for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += 4099) {
        float f = float_of((uint32_t)u);
        if (isnan(f)) continue;
        _Float16 ref = (_Float16)f;
        uint16_t ref_bits;
        memcpy(&ref_bits, &ref, sizeof ref_bits);
        if (f32_to_f16(f) != ref_bits && bad++ < 5)
            fprintf(stderr, "  f32 0x%08X: f16 0x%04X, compiler 0x%04X\n", (uint32_t)u, f32_to_f16(f), ref_bits);
    }
    EXPECT(bad == 0);
}
#endif

/* ---- safetensors round trip ---- */

static const float rt_a[6] = {1.0f, -2.0f, 3.5f, 1e-3f, 65504.0f, -0.0f};
static const float rt_b[4] = {1.0f, 0.333333f, -65504.0f, 1e-7f};
static const float rt_c[4] = {1.0f, 3.14159f, -1e30f, 0x1p-126f};
static const float rt_s[1] = {42.0f};

static void rt_entries(struct st_write_entry *e) {
    e[0] = (struct st_write_entry){"a", rt_a, 2, {2, 3}, ST_DTYPE_F32};
    e[1] = (struct st_write_entry){"b", rt_b, 1, {4}, ST_DTYPE_F16};
    e[2] = (struct st_write_entry){"c", rt_c, 2, {2, 2}, ST_DTYPE_BF16};
    e[3] = (struct st_write_entry){"empty", NULL, 2, {0, 5}, ST_DTYPE_F32};
    e[4] = (struct st_write_entry){"scalar", rt_s, 0, {0}, ST_DTYPE_F32};
}

/* The value V comes back as stored in DTYPE. */
static float stored(enum st_dtype dtype, float v) {
    if (dtype == ST_DTYPE_F16) return f16_to_f32(f32_to_f16(v));
    if (dtype == ST_DTYPE_BF16) return bf16_to_f32(f32_to_bf16(v));
    return v;
}

static void check_rt_tensor(const struct safetensors *st, const struct st_write_entry *e) {
    const struct st_tensor *t = safetensors_find(st, e->name);
    if (!EXPECT(t != NULL)) return;
    EXPECT(t->dtype == e->dtype && st_tensor_expect_shape(st, t, e->ndim, e->shape) == 0);
    float out[8];
    EXPECT(t->numel <= 8 && st_tensor_to_f32(t, out) == 0);
    for (int64_t i = 0; i < t->numel && i < 8; i++) EXPECT(bits_of(out[i]) == bits_of(stored(e->dtype, e->data[i])));
}

/* The file starts with the reference layout: the length word, then compact JSON in our
 * order, padded with spaces to a multiple of 8. */
static void check_rt_bytes(const char *path) {
    static const char want[] = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"lorad test\"},"
                               "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                               "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                               "\"c\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]},"
                               "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[40,40]},"
                               "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]}}";
    size_t len;
    char *raw = file_read_all(path, &len);
    if (!EXPECT(raw && len > 8)) {
        free(raw);
        return;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(uint8_t)raw[i] << (8 * i);
    size_t n = sizeof want - 1;
    EXPECT(hlen % 8 == 0 && hlen >= n && hlen - n < 8 && len == 8 + hlen + 44);
    EXPECT(len > 8 + n && memcmp(raw + 8, want, n) == 0);
    for (size_t i = 8 + n; i < 8 + hlen && i < len; i++) EXPECT(raw[i] == ' ');
    free(raw);
}

static void test_st_roundtrip(void) {
    checks_case = "safetensors: round trip";
    char path[PATH_CHARS];
    struct st_write_entry e[5];
    rt_entries(e);
    const char *meta[] = {"format", "pt", "note", "lorad test"};
    EXPECT(safetensors_write(tmp_path(path, "rt.safetensors"), e, 5, meta, 2) == 0);
    EXPECT_NO_TEMPORARIES(tmp_dir);
    check_rt_bytes(path);
    struct safetensors st;
    if (!EXPECT(safetensors_open(&st, path) == 0)) return;
    EXPECT(st.n_tensors == 5);
    for (int i = 0; i < 5; i++) check_rt_tensor(&st, &e[i]);
    for (int32_t i = 1; i < st.n_tensors; i++)
        EXPECT((const char *)st.tensors[i - 1].data <= (const char *)st.tensors[i].data);
    EXPECT(safetensors_find(&st, "missing") == NULL);
    const struct st_tensor *a = safetensors_find(&st, "a");
    int64_t wrong[2] = {3, 2};
    EXPECT(a && st_tensor_expect_shape(&st, a, 2, wrong) == -1);
    char want[PATH_CHARS + 100];
    snprintf(want, sizeof want, "%s: tensor a has shape [2, 3], expected [3, 2]", path);
    EXPECT(strcmp(err_msg(), want) == 0);
    EXPECT(a && st_tensor_expect_shape(&st, a, 1, wrong) == -1);
    safetensors_close(&st);
    EXPECT(st.map == NULL && st.tensors == NULL && st.path == NULL);
    safetensors_close(&st);
}

static void test_st_write_errors(void) {
    checks_case = "safetensors: write errors";
    char path[PATH_CHARS];
    struct st_write_entry e[5];
    rt_entries(e);
    tmp_path(path, "bad_write.safetensors");
    struct st_write_entry dup[2] = {e[0], e[0]};
    EXPECT_ERROR(safetensors_write(path, dup, 2, NULL, 0), path, "");
    struct st_write_entry f64 = e[0];
    f64.dtype = ST_DTYPE_F64;
    EXPECT_ERROR(safetensors_write(path, &f64, 1, NULL, 0), path, "");
    struct st_write_entry reserved = e[0];
    reserved.name = "__metadata__";
    EXPECT_ERROR(safetensors_write(path, &reserved, 1, NULL, 0), path, "");
    struct st_write_entry negative = e[0];
    negative.shape[1] = -3;
    EXPECT_ERROR(safetensors_write(path, &negative, 1, NULL, 0), path, "");
    struct st_write_entry huge = e[3];
    huge.shape[0] = INT64_MAX / 2;
    huge.shape[1] = 3;
    EXPECT_ERROR(safetensors_write(path, &huge, 1, NULL, 0), path, "");
    const char *bad_meta[] = {"k", "\xff\xfe"};
    EXPECT_ERROR(safetensors_write(path, e, 1, bad_meta, 1), path, "");
    EXPECT(access(path, F_OK) != 0);
    EXPECT_ERROR(safetensors_write(tmp_path(path, "nodir/x.safetensors"), e, 1, NULL, 0), path, "");
    EXPECT_NO_TEMPORARIES(tmp_dir);
}

/* A file written by hand as the reference writer lays it out, with an integer tensor and
 * tensors listed out of data order. */
static void test_st_handmade(void) {
    checks_case = "safetensors: hand-made file";
    char path[PATH_CHARS];
    static const char header[] = "{\"z\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
                                 "\"__metadata__\":{\"foo\":\"bar\"},"
                                 "\"y\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                                 "\"e\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[24,24]}}  ";
    uint8_t buf[8 + sizeof header - 1 + 24] = {0};
    size_t hlen = sizeof header - 1;
    put_u64(buf, hlen);
    memcpy(buf + 8, header, hlen);
    uint8_t *data = buf + 8 + hlen;
    put_u64(data, 0x4009000000000000ull); /* 3.125 as a double */
    for (int i = 0; i < 4; i++) data[8 + 4 * i] = (uint8_t)(i + 1);
    scratch_put(tmp_path(path, "handmade.safetensors"), buf, sizeof buf);
    struct safetensors st;
    if (!EXPECT(safetensors_open(&st, path) == 0)) return;
    EXPECT(st.n_tensors == 3 && strcmp(st.tensors[0].name, "y") == 0 && strcmp(st.tensors[1].name, "z") == 0);
    const struct st_tensor *z = safetensors_find(&st, "z"), *y = safetensors_find(&st, "y");
    float out[4];
    EXPECT(z && z->dtype == ST_DTYPE_I32 && z->numel == 4 && z->nbytes == 16 && ((const uint8_t *)z->data)[4] == 2);
    EXPECT(z && st_tensor_to_f32(z, out) == -1 && contains(err_msg(), "z"));
    EXPECT(y && st_tensor_to_f32(y, out) == 0 && out[0] == 3.125f);
    EXPECT(st_dtype_size(ST_DTYPE_BF16) == 2 && strcmp(st_dtype_name(ST_DTYPE_BOOL), "BOOL") == 0);
    safetensors_close(&st);
}

/* ---- malformed safetensors ---- */

#define T_F32_1(name, offsets) "\"" name "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" offsets "}"

static const struct {
    const char *name;
    const char *header;
    size_t data_len;
} bad_headers[] = {
    {"not_json", "hello world", 0},
    {"empty_header", "", 4},
    {"json_array", "[1,2]", 0},
    {"json_string", "\"x\"", 0},
    {"json_truncated", "{\"a\":{\"dtype\":\"F32\"", 0},
    {"trailing_garbage", "{} x", 0},
    {"invalid_utf8", "{\"\xff\":{}}", 0},
    {"unknown_dtype", "{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
    {"dtype_not_string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
    {"dtype_missing", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
    {"negative_shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4},
    {"real_shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4},
    {"shape_not_array", "{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4},
    {"shape_missing", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4},
    {"too_many_dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4},
    {"shape_overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                       "\"data_offsets\":[0,4]}}", 4},
    {"bytes_overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4},
    {"huge_integer", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4},
    {"offsets_gap", "{" T_F32_1("a", "[0,4]") "," T_F32_1("b", "[8,12]") "}", 12},
    {"offsets_overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12},
    {"offsets_same", "{" T_F32_1("a", "[0,4]") "," T_F32_1("b", "[0,4]") "}", 4},
    {"offsets_out_of_range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4},
    {"offsets_backwards", "{" T_F32_1("a", "[4,0]") "}", 4},
    {"offsets_three", "{" T_F32_1("a", "[0,4,4]") "}", 4},
    {"offsets_one", "{" T_F32_1("a", "[4]") "}", 4},
    {"offsets_negative", "{" T_F32_1("a", "[-4,0]") "}", 4},
    {"offsets_real", "{" T_F32_1("a", "[0,4.0]") "}", 4},
    {"offsets_missing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4},
    {"wrong_byte_length", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4},
    {"truncated_data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8},
    {"trailing_bytes", "{" T_F32_1("a", "[0,4]") "}", 8},
    {"data_without_tensors", "{}", 4},
    {"duplicate_keys", "{" T_F32_1("a", "[0,4]") "," T_F32_1("a", "[4,8]") "}", 8},
    {"entry_not_object", "{\"a\":5}", 0},
    {"metadata_not_object", "{\"__metadata__\":\"x\"}", 0},
    {"metadata_null", "{\"__metadata__\":null}", 0},
    {"metadata_not_string", "{\"__metadata__\":{\"k\":1}}", 0},
};

/* PATH must fail to open with one line naming it, leaving ST zeroed. */
static void expect_open_fails(const char *path) {
    struct safetensors st;
    int rc = safetensors_open(&st, path);
    if (!EXPECT(rc == -1 && error_names(path, "") && st.map == NULL && st.tensors == NULL)) {
        fprintf(stderr, "  %s: rc %d, error \"%s\"\n", path, rc, err_msg());
        if (rc == 0) safetensors_close(&st);
    }
}

static void test_st_malformed(void) {
    checks_case = "safetensors: malformed files";
    char path[PATH_CHARS], name[128];
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        snprintf(name, sizeof name, "bad_%s.safetensors", bad_headers[i].name);
        size_t n = strlen(bad_headers[i].header);
        write_st(tmp_path(path, name), n, bad_headers[i].header, n, bad_headers[i].data_len);
        expect_open_fails(path);
    }
    static const char nul_header[] = "{\"a\":\0{}}";
    write_st(tmp_path(path, "bad_nul_in_header.safetensors"), sizeof nul_header - 1, nul_header, sizeof nul_header - 1, 0);
    expect_open_fails(path);
    scratch_put(tmp_path(path, "bad_empty.safetensors"), "", 0);
    expect_open_fails(path);
    scratch_put(tmp_path(path, "bad_7_bytes.safetensors"), "\x02\0\0\0\0\0\0", 7);
    expect_open_fails(path);
    write_st(tmp_path(path, "bad_huge_header_len.safetensors"), 999999, "{}", 2, 110);
    expect_open_fails(path);
    EXPECT(contains(err_msg(), "header length 999999 exceeds file size 120"));
    write_st(tmp_path(path, "bad_max_header_len.safetensors"), UINT64_MAX, "{}", 2, 0);
    expect_open_fails(path);
    write_st(tmp_path(path, "bad_short_header_len.safetensors"), 1, "{}", 2, 0);
    expect_open_fails(path);
    expect_open_fails(tmp_path(path, "does_not_exist.safetensors"));
    expect_open_fails(tmp_dir);
}

/* Every prefix of a valid file fails, and corrupted bytes never crash the reader. */
static void test_st_corrupted(void) {
    checks_case = "safetensors: truncated and corrupted";
    char src[PATH_CHARS], path[PATH_CHARS];
    size_t len;
    char *good = file_read_all(tmp_path(src, "rt.safetensors"), &len);
    if (!EXPECT(good != NULL)) return;
    tmp_path(path, "corrupt.safetensors");
    for (size_t n = 0; n < len; n++) {
        scratch_put(path, good, n);
        expect_open_fails(path);
    }
    static const char json_chars[] = "{}[]\",:0-9 e";
    uint8_t *buf = xmalloc(len + 1);
    uint32_t seed = 12345;
    int opened = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, good, len);
        for (int k = 0; k <= iter % 4; k++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = (seed >> 8) % (iter % 2 ? len : 8 + 160); /* often inside the header */
            buf[at] = iter % 3 ? (uint8_t)(seed >> 24) : (uint8_t)json_chars[(seed >> 24) % (sizeof json_chars - 1)];
        }
        scratch_put(path, buf, len);
        struct safetensors st;
        if (safetensors_open(&st, path) == 0) {
            opened++;
            safetensors_close(&st);
        } else {
            EXPECT(error_names(path, ""));
        }
    }
    EXPECT(opened > 0);
    free(buf);
    free(good);
}

/* ---- config.json ---- */

/* Writes TEXT as NAME in a fresh directory TMP_DIR/SUB and returns the directory. */
static char *write_in_dir(char *dir, const char *sub, const char *name, const char *text) {
    char path[PATH_CHARS + 64];
    CHECK(dir_make(tmp_path(dir, sub)) == 0);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(file_write_atomic(path, text, strlen(text)) == 0);
    return dir;
}

/* A JSON file that must be refused, with a word the one-line error must contain. */
struct bad_json {
    const char *name;
    const char *json;
    const char *mention;
};

/* Each of the N files BAD, written as FILE in TMP_DIR/PREFIX<name>, makes READ_DIR(dir) fail
 * with one line naming the directory and containing the case's word; a directory
 * MISSING without FILE fails with an error mentioning FILE. */
static void expect_bad_json(const struct bad_json *bad, size_t n, const char *prefix, const char *file,
                            int (*read_dir)(const char *dir), const char *missing) {
    char dir[PATH_CHARS], sub[64];
    for (size_t i = 0; i < n; i++) {
        snprintf(sub, sizeof sub, "%s%s", prefix, bad[i].name);
        write_in_dir(dir, sub, file, bad[i].json);
        EXPECT_ERROR(read_dir(dir), dir, bad[i].mention);
    }
    EXPECT(read_dir(tmp_path(dir, missing)) == -1 && contains(err_msg(), file));
}

static const char gpt2_config[] =
    "{\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"], \"attn_pdrop\": 0.1,"
    " \"bos_token_id\": 50256, \"embd_pdrop\": 0.1, \"eos_token_id\": 50256, \"initializer_range\": 0.02,"
    " \"layer_norm_epsilon\": 1e-05, \"model_type\": \"gpt2\", \"n_ctx\": 1024, \"n_embd\": 768, \"n_head\": 12,"
    " \"n_layer\": 12, \"n_positions\": 1024, \"resid_pdrop\": 0.1, \"summary_activation\": null,"
    " \"task_specific_params\": {\"text-generation\": {\"do_sample\": true, \"max_length\": 50}},"
    " \"vocab_size\": 50257}";

static void test_hf_config(void) {
    checks_case = "hf_config";
    char dir[PATH_CHARS];
    struct model_config cfg = {.arch = MODEL_ARCH_GPT2, .n_layer = 2, .n_head = 4, .n_kv_head = 4, .head_dim = 8,
                               .n_embd = 32, .n_inner = 128, .n_positions = 64, .vocab_size = 100,
                               .layer_norm_eps = 1e-5f, .tied = 1},
                        back;
    CHECK(dir_make(tmp_path(dir, "model")) == 0);
    EXPECT(hf_config_write(&cfg, dir) == 0);
    EXPECT(hf_config_read(&back, dir) == 0 && memcmp(&cfg, &back, sizeof cfg) == 0);
    char path[PATH_CHARS + 32];
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = file_read_all(path, &len);
    EXPECT(text && contains(text, "\"layer_norm_epsilon\": 1e-5,") && contains(text, "\"GPT2LMHeadModel\"") &&
           contains(text, "\"model_type\": \"gpt2\"") && contains(text, "\"tie_word_embeddings\": true"));
    free(text);
    EXPECT(hf_config_read(&back, write_in_dir(dir, "hf_gpt2", "config.json", gpt2_config)) == 0);
    EXPECT(back.n_embd == 768 && back.n_head == 12 && back.n_layer == 12 && back.n_inner == 3072 &&
           back.n_positions == 1024 && back.vocab_size == 50257 && back.layer_norm_eps == 1e-5f);
    static const char minimal[] = "{\"n_embd\": 64, \"n_head\": 2, \"n_layer\": 1, \"n_positions\": 8, "
                                  "\"vocab_size\": 10, \"n_inner\": null, \"activation_function\": \"gelu_pytorch_tanh\"}";
    EXPECT(hf_config_read(&back, write_in_dir(dir, "hf_minimal", "config.json", minimal)) == 0);
    EXPECT(back.n_inner == 256 && back.layer_norm_eps == 1e-5f);
    static const char llama3[] =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 64, "
        "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"num_key_value_heads\": 2, "
        "\"max_position_embeddings\": 128, \"vocab_size\": 300, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": true, "
        "\"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
        "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}, \"hidden_act\": \"silu\"}";
    EXPECT(hf_config_read(&back, write_in_dir(dir, "hf_llama3", "config.json", llama3)) == 0);
    EXPECT(back.arch == MODEL_ARCH_LLAMA && back.n_embd == 64 && back.n_inner == 96 && back.n_head == 8 &&
           back.n_kv_head == 2 && back.head_dim == 8 && back.tied && !back.qkv_bias && back.rope_theta == 500000.0 &&
           back.rope_factor == 8.0 && back.rope_high_freq_factor == 4.0 && back.rope_original_max == 16);
    static const char qwen2[] =
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 32, "
        "\"intermediate_size\": 48, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 4, "
        "\"head_dim\": 16, \"max_position_embeddings\": 64, \"vocab_size\": 300, \"use_sliding_window\": false, "
        "\"sliding_window\": 4096}";
    EXPECT(hf_config_read(&back, write_in_dir(dir, "hf_qwen2", "config.json", qwen2)) == 0);
    EXPECT(back.qkv_bias && !back.tied && back.head_dim == 16 && back.sliding_window == 0 && back.rope_theta == 10000.0 &&
           back.layer_norm_eps == 1e-6f);
}

static const struct bad_json bad_configs[] = {
    {"no_embd", "{\"n_head\": 2, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10}", "n_embd"},
    {"relu", "{\"activation_function\": \"relu\", \"n_embd\": 4, \"n_head\": 2, \"n_layer\": 1, "
             "\"n_positions\": 8, \"vocab_size\": 10}", "relu"},
    {"llama", "{\"architectures\": [\"LlamaForCausalLM\"], \"n_embd\": 4}", "unsupported architecture LlamaForCausalLM"},
    {"model_type", "{\"model_type\": \"falcon\", \"n_embd\": 4}", "unsupported architecture falcon"},
    {"llama_sizes", "{\"model_type\": \"llama\", \"n_embd\": 4}", "hidden_size"},
    {"llama_act", "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16, \"num_hidden_layers\": 1, "
                  "\"num_attention_heads\": 2, \"max_position_embeddings\": 8, \"vocab_size\": 10, \"hidden_act\": \"gelu\"}",
     "hidden_act"},
    {"llama_kv", "{\"model_type\": \"llama\", \"hidden_size\": 12, \"intermediate_size\": 16, \"num_hidden_layers\": 1, "
                 "\"num_attention_heads\": 3, \"num_key_value_heads\": 2, \"max_position_embeddings\": 8, \"vocab_size\": 10}",
     "num_key_value_heads"},
    {"llama_yarn", "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16, \"num_hidden_layers\": 1, "
                   "\"num_attention_heads\": 2, \"max_position_embeddings\": 8, \"vocab_size\": 10, "
                   "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
     "yarn"},
    {"heads", "{\"n_embd\": 30, \"n_head\": 4, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10}", "n_head"},
    {"zero", "{\"n_embd\": 4, \"n_head\": 0, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10}", "n_head"},
    {"string", "{\"n_embd\": \"4\", \"n_head\": 2, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10}", "n_embd"},
    {"huge", "{\"n_embd\": 4294967296, \"n_head\": 2, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10}", "n_embd"},
    {"inner", "{\"n_embd\": 4, \"n_head\": 2, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10, "
              "\"n_inner\": -1}", "n_inner"},
    {"eps", "{\"n_embd\": 4, \"n_head\": 2, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10, "
            "\"layer_norm_epsilon\": 0}", "layer_norm_epsilon"},
    {"layer_idx", "{\"n_embd\": 4, \"n_head\": 2, \"n_layer\": 1, \"n_positions\": 8, \"vocab_size\": 10, "
                  "\"scale_attn_by_inverse_layer_idx\": true}", "scale_attn_by_inverse_layer_idx"},
    {"not_json", "{\"n_embd\": 4,", "config.json"},
    {"array", "[]", "config.json"},
};

static int hf_config_try(const char *dir) {
    struct model_config cfg;
    return hf_config_read(&cfg, dir);
}

static void test_hf_config_bad(void) {
    checks_case = "hf_config: bad configs";
    expect_bad_json(bad_configs, sizeof bad_configs / sizeof bad_configs[0], "hf_bad_", "config.json", hf_config_try,
                    "no_such_model");
}

/* ---- PEFT adapter_config.json ---- */

static int peft_equal(const struct peft_config *a, const struct peft_config *b) {
    int eq = a->r == b->r && a->lora_alpha == b->lora_alpha && a->use_rslora == b->use_rslora &&
             a->fan_in_fan_out == b->fan_in_fan_out && a->lora_dropout == b->lora_dropout &&
             a->n_targets == b->n_targets && a->n_patterns == b->n_patterns &&
             !a->base_model == !b->base_model && (!a->base_model || strcmp(a->base_model, b->base_model) == 0);
    for (int32_t i = 0; eq && i < a->n_targets; i++) eq = strcmp(a->target_modules[i], b->target_modules[i]) == 0;
    for (int32_t i = 0; eq && i < a->n_patterns; i++)
        eq = strcmp(a->patterns[i].key, b->patterns[i].key) == 0 && a->patterns[i].r == b->patterns[i].r &&
             a->patterns[i].alpha == b->patterns[i].alpha;
    return eq;
}

static char *targets[] = {"c_attn", "c_proj"};
/* Rank entries first, then alpha entries: the order peft_config_read produces. */
static struct peft_pattern patterns[] = {
    {"h.0.attn.c_attn", 4, 0},
    {"attn.c_proj", 16, 0},
    {"c_proj", 0, 32},
};

static double scale_of(const struct peft_config *cfg, const char *module) { return peft_module_scale(cfg, module); }

/* DIR/adapter_config.json from CFG, as lorad's adapter export writes it. */
static int peft_write(const struct peft_config *cfg, const char *dir) {
    char *text = peft_config_text(cfg);
    char *path = path_join(dir, "adapter_config.json");
    int rc = text ? file_write_atomic(path, text, strlen(text)) : -1;
    free(path);
    free(text);
    return rc;
}

static void test_peft_roundtrip(void) {
    checks_case = "peft: round trip and scales";
    char dir[PATH_CHARS], path[PATH_CHARS + 32];
    struct peft_config cfg = {8, 16.5, 0, 1, 0.05, targets, 2, "gpt2", patterns, 3}, back;
    CHECK(dir_make(tmp_path(dir, "adapter")) == 0);
    EXPECT(peft_write(&cfg, dir) == 0);
    EXPECT(peft_config_read(&back, dir) == 0 && peft_equal(&cfg, &back));
    peft_config_free(&back);
    size_t len;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    char *text = file_read_all(path, &len);
    EXPECT(text && contains(text, "\"lora_alpha\": 16.5") && contains(text, "\"lora_dropout\": 0.05") &&
           contains(text, "\"peft_type\": \"LORA\"") && contains(text, "\"init_lora_weights\": true") &&
           contains(text, "\"c_proj\": 32") && !contains(text, "32.0"));
    free(text);
    EXPECT(scale_of(&cfg, "transformer.h.0.attn.c_attn") == 16.5 / 4);
    EXPECT(scale_of(&cfg, "transformer.h.1.attn.c_attn") == 16.5 / 8);
    EXPECT(scale_of(&cfg, "transformer.h.10.attn.c_attn") == 16.5 / 8);
    EXPECT(scale_of(&cfg, "transformer.h.0.attn.c_proj") == 32.0 / 16);
    EXPECT(scale_of(&cfg, "transformer.h.0.mlp.c_proj") == 32.0 / 8);
    EXPECT(scale_of(&cfg, "transformer.h.0.mlp.xc_proj") == 16.5 / 8);
    cfg.use_rslora = 1;
    EXPECT(scale_of(&cfg, "transformer.h.0.attn.c_proj") == 32.0 / 4);
    EXPECT(fabs(scale_of(&cfg, "transformer.h.3.attn.c_attn") - 16.5 / sqrt(8)) < 1e-12);
    cfg.lora_alpha = 32;
    cfg.n_patterns = 0;
    cfg.base_model = NULL;
    EXPECT(peft_write(&cfg, dir) == 0);
    text = file_read_all(path, &len);
    EXPECT(text && contains(text, "\"lora_alpha\": 32,") && contains(text, "\"base_model_name_or_path\": null") &&
           contains(text, "\"use_rslora\": true") && contains(text, "\"rank_pattern\": {}"));
    free(text);
    EXPECT(peft_config_read(&back, dir) == 0 && peft_equal(&cfg, &back));
    peft_config_free(&back);
    char key[128];
    peft_key(key, sizeof key, "transformer.h.0.attn.c_attn", 'A');
    EXPECT(strcmp(key, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight") == 0);
    peft_key(key, sizeof key, "transformer.h.11.mlp.c_fc", 'B');
    EXPECT(strcmp(key, "base_model.model.transformer.h.11.mlp.c_fc.lora_B.weight") == 0);
}

/* A config as PEFT writes it, with patterns whose dict order decides the first match. */
static const char peft_written[] =
    "{\"alpha_pattern\": {\"c_attn\": 4.5, \"h.1.attn.c_attn\": 64}, \"auto_mapping\": null,"
    " \"base_model_name_or_path\": \"gpt2\", \"bias\": \"none\", \"fan_in_fan_out\": true, \"inference_mode\": true,"
    " \"init_lora_weights\": true, \"layer_replication\": null, \"layers_pattern\": null,"
    " \"layers_to_transform\": null, \"loftq_config\": {}, \"lora_alpha\": 16, \"lora_dropout\": 0.0,"
    " \"megatron_config\": null, \"megatron_core\": \"megatron.core\", \"modules_to_save\": null,"
    " \"peft_type\": \"LORA\", \"r\": 8, \"rank_pattern\": {\"h.1.attn.c_attn\": 2, \"c_attn\": 4},"
    " \"revision\": null, \"target_modules\": [\"c_attn\"], \"task_type\": \"CAUSAL_LM\", \"use_dora\": false,"
    " \"use_rslora\": false}";

static void test_peft_patterns(void) {
    checks_case = "peft: PEFT-written config";
    char dir[PATH_CHARS];
    struct peft_config cfg;
    if (!EXPECT(peft_config_read(&cfg, write_in_dir(dir, "peft_written", "adapter_config.json", peft_written)) == 0))
        return;
    EXPECT(cfg.r == 8 && cfg.lora_alpha == 16 && cfg.fan_in_fan_out == 1 && cfg.n_targets == 1 && cfg.n_patterns == 4);
    int32_t r;
    double alpha;
    peft_module_rank_alpha(&cfg, "transformer.h.1.attn.c_attn", &r, &alpha);
    EXPECT(r == 2 && alpha == 4.5);
    peft_module_rank_alpha(&cfg, "transformer.h.2.attn.c_attn", &r, &alpha);
    EXPECT(r == 4 && alpha == 4.5);
    peft_module_rank_alpha(&cfg, "transformer.h.2.mlp.c_fc", &r, &alpha);
    EXPECT(r == 8 && alpha == 16);
    peft_config_free(&cfg);
    EXPECT(cfg.patterns == NULL && cfg.n_targets == 0);
}

static const struct bad_json bad_peft[] = {
    {"dora", "{\"peft_type\": \"LORA\", \"use_dora\": true, \"target_modules\": [\"c_attn\"]}",
     "DoRA adapters are not supported"},
    {"regex", "{\"peft_type\": \"LORA\", \"target_modules\": \".*c_attn\"}", "regex"},
    {"all_linear", "{\"peft_type\": \"LORA\", \"target_modules\": \"all-linear\"}", "all-linear"},
    {"ia3", "{\"peft_type\": \"IA3\", \"target_modules\": [\"c_attn\"]}", "IA3"},
    {"no_type", "{\"target_modules\": [\"c_attn\"]}", "peft_type"},
    {"bias", "{\"peft_type\": \"LORA\", \"bias\": \"all\", \"target_modules\": [\"c_attn\"]}", "bias"},
    {"no_targets", "{\"peft_type\": \"LORA\", \"r\": 8}", "target_modules"},
    {"empty_targets", "{\"peft_type\": \"LORA\", \"target_modules\": []}", "target_modules"},
    {"save", "{\"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"], \"modules_to_save\": [\"lm_head\"]}",
     "modules_to_save"},
    {"layers", "{\"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"], \"layers_to_transform\": [0]}",
     "layers_to_transform"},
    {"rank_zero", "{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"c_attn\"]}", "\"r\""},
    {"rank_real", "{\"peft_type\": \"LORA\", \"r\": 8.5, \"target_modules\": [\"c_attn\"]}", "\"r\""},
    {"dropout", "{\"peft_type\": \"LORA\", \"lora_dropout\": 1.5, \"target_modules\": [\"c_attn\"]}", "lora_dropout"},
    {"pattern_regex", "{\"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"], \"rank_pattern\": {\"h\\\\.0.*\": 4}}",
     "rank_pattern"},
    {"pattern_value", "{\"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"], \"rank_pattern\": {\"c_attn\": \"4\"}}",
     "rank_pattern"},
    {"alpha_zero", "{\"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"], \"alpha_pattern\": {\"c_attn\": 0}}",
     "alpha_pattern"},
    {"duplicate", "{\"peft_type\": \"LORA\", \"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"]}", "duplicate"},
};

static int peft_config_try(const char *dir) {
    struct peft_config cfg;
    int rc = peft_config_read(&cfg, dir);
    if (rc == 0) peft_config_free(&cfg);
    return rc;
}

static void test_peft_bad(void) {
    checks_case = "peft: refusals";
    expect_bad_json(bad_peft, sizeof bad_peft / sizeof bad_peft[0], "peft_bad_", "adapter_config.json", peft_config_try,
                    "no_such_adapter");
}

int main(void) {
    tmp_dir = scratch_dir("storage");
    test_fileio();
    test_half_known();
    test_half_exhaustive();
#ifdef __FLT16_MAX__
    test_half_vs_compiler();
#endif
    test_st_roundtrip();
    test_st_write_errors();
    test_st_handmade();
    test_st_malformed();
    test_st_corrupted();
    test_hf_config();
    test_hf_config_bad();
    test_peft_roundtrip();
    test_peft_patterns();
    test_peft_bad();
    return check_finish();
}
