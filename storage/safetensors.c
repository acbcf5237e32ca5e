/*
 * safetensors.c: the safetensors reader (mmap, then strict validation of the header and
 * of the data layout before any tensor is handed out), the writer (float32 in, F32, F16
 * or BF16 out, streamed through an atomic file) and the half-precision conversions.
 */
#include "safetensors.h"

#include "error.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation refuses headers above 100 MB. */
#define ST_MAX_HEADER 100000000ull
/* Room for "[d0, d1, ...]" with ST_MAX_DIMS 20-digit dimensions. */
#define ST_SHAPE_CHARS 256
/* Elements converted per write when saving. */
#define ST_WRITE_CHUNK 16384

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [ST_DTYPE_F32] = {"F32", 4}, [ST_DTYPE_F16] = {"F16", 2}, [ST_DTYPE_BF16] = {"BF16", 2},
    [ST_DTYPE_F64] = {"F64", 8}, [ST_DTYPE_I64] = {"I64", 8}, [ST_DTYPE_I32] = {"I32", 4},
    [ST_DTYPE_I16] = {"I16", 2}, [ST_DTYPE_I8] = {"I8", 1},   [ST_DTYPE_U8] = {"U8", 1},
    [ST_DTYPE_BOOL] = {"BOOL", 1}, [ST_DTYPE_U16] = {"U16", 2}, [ST_DTYPE_U32] = {"U32", 4},
    [ST_DTYPE_U64] = {"U64", 8},   [ST_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [ST_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};
#define ST_N_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

size_t st_dtype_size(enum st_dtype dtype) {
    CHECK((int)dtype >= 0 && (int)dtype < ST_N_DTYPES);
    return st_dtypes[dtype].size;
}

const char *st_dtype_name(enum st_dtype dtype) {
    CHECK((int)dtype >= 0 && (int)dtype < ST_N_DTYPES);
    return st_dtypes[dtype].name;
}

static int st_dtype_parse(const char *name, enum st_dtype *dtype) {
    for (int i = 0; i < ST_N_DTYPES; i++) {
        if (strcmp(name, st_dtypes[i].name) == 0) {
            *dtype = (enum st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* ---- little-endian bytes and float bits ---- */

static uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t load_u32(const uint8_t *p) { return (uint32_t)load_u16(p) | (uint32_t)load_u16(p + 2) << 16; }
static uint64_t load_u64(const uint8_t *p) { return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32; }

static void store_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void store_u32(uint8_t *p, uint32_t v) {
    store_u16(p, (uint16_t)v);
    store_u16(p + 2, (uint16_t)(v >> 16));
}
static void store_u64(uint8_t *p, uint64_t v) {
    store_u32(p, (uint32_t)v);
    store_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static double f64_from_bits(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* ---- half-precision conversions ---- */

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | man << 13); /* inf, NaN */
    return f32_from_bits(sign | (exp + 112) << 23 | man << 13);          /* rebias 15 -> 127 */
}

/* |f| below 2^-14 (AX its bits without sign): the nearest multiple of 2^-24, ties to even. */
static uint16_t f16_from_small(uint32_t ax) {
    if (ax <= 0x33000000u) return 0; /* at most 2^-25, half the smallest subnormal */
    uint32_t man = (ax & 0x7fffffu) | 0x800000u; /* |f| = man * 2^(exp-150) */
    uint32_t shift = 126 - (ax >> 23);           /* |f| / 2^-24 = man >> shift; 14..24 */
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    return (uint16_t)(q + (rem > half || (rem == half && (q & 1u))));
}

uint16_t f32_to_f16(float f) {
    uint32_t x = f32_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    if (ax > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((ax >> 13) & 0x3ffu); /* quiet NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) return sign | f16_from_small(ax);
    /* Normal: round the mantissa to 10 bits (ties to even), then rebias 127 -> 15. */
    uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
    return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
}

/* ---- shapes ---- */

/* Element and byte counts of a tensor; -1 on a negative dimension or overflow. */
static int shape_size(enum st_dtype dtype, int32_t ndim, const int64_t *shape, int64_t *numel,
                      int64_t *nbytes) {
    int64_t n = 1, size = (int64_t)st_dtype_size(dtype);
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] != 0 && n > INT64_MAX / shape[i])) return -1;
        n *= shape[i];
    }
    if (n > INT64_MAX / size) return -1;
    *numel = n;
    *nbytes = n * size;
    return 0;
}

/* "[32, 64]" into BUF (ST_SHAPE_CHARS bytes). */
static char *shape_format(char *buf, int32_t ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, ST_SHAPE_CHARS, "[");
    for (int32_t i = 0; i < ndim && n < ST_SHAPE_CHARS; i++)
        n += (size_t)snprintf(buf + n, ST_SHAPE_CHARS - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < ST_SHAPE_CHARS) snprintf(buf + n, ST_SHAPE_CHARS - n, "]");
    return buf;
}

/* ---- reading ---- */

static int st_map(struct safetensors *st) {
    int fd = open(st->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(st->path, "cannot open: %s", strerror(errno));
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) != 0) {
        rc = err_set(st->path, "cannot stat: %s", strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        rc = err_set(st->path, "not a regular file");
    } else if (sb.st_size < 8) {
        rc = err_set(st->path, "file is %lld bytes, shorter than the 8-byte header length",
                     (long long)sb.st_size);
    } else {
        void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = err_set(st->path, "cannot mmap: %s", strerror(errno));
        } else {
            st->map = map;
            st->map_size = (size_t)sb.st_size;
        }
    }
    close(fd);
    return rc;
}

/* FIELD of tensor NAME: an array of at most MAX non-negative integers, into OUT and *N. */
static int st_parse_ints(const struct safetensors *st, const char *name, const char *field,
                         const json_t *arr, int32_t max, int64_t *out, int32_t *n) {
    if (!json_is_array(arr))
        return err_set(st->path, "tensor %s: %s is missing or not an array", name, field);
    size_t len = json_array_size(arr);
    if (len > (size_t)max)
        return err_set(st->path, "tensor %s: %s has %zu entries, at most %d allowed", name, field, len, max);
    for (size_t i = 0; i < len; i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return err_set(st->path, "tensor %s: %s[%zu] is not a non-negative integer", name, field, i);
        out[i] = json_integer_value(v);
    }
    *n = (int32_t)len;
    return 0;
}

/* dtype and shape of tensor T from its header entry ENTRY. */
static int st_parse_type(const struct safetensors *st, struct st_tensor *t, const json_t *entry) {
    const char *dtype = json_string_value(json_object_get(entry, "dtype"));
    if (!dtype) return err_set(st->path, "tensor %s: dtype is missing or not a string", t->name);
    if (st_dtype_parse(dtype, &t->dtype) != 0)
        return err_set(st->path, "tensor %s: unknown dtype \"%s\"", t->name, dtype);
    return st_parse_ints(st, t->name, "shape", json_object_get(entry, "shape"), ST_MAX_DIMS, t->shape,
                         &t->ndim);
}

/* Places tensor T inside the data section DATA of DATA_SIZE bytes from its data_offsets. */
static int st_parse_place(const struct safetensors *st, struct st_tensor *t, const json_t *entry,
                          const uint8_t *data, size_t data_size) {
    char shape[ST_SHAPE_CHARS];
    int64_t nbytes, off[2];
    int32_t n_off;
    if (shape_size(t->dtype, t->ndim, t->shape, &t->numel, &nbytes) != 0)
        return err_set(st->path, "tensor %s: shape %s overflows", t->name, shape_format(shape, t->ndim, t->shape));
    if (st_parse_ints(st, t->name, "data_offsets", json_object_get(entry, "data_offsets"), 2, off, &n_off) != 0)
        return -1;
    if (n_off != 2) return err_set(st->path, "tensor %s: data_offsets is not [begin, end]", t->name);
    if (off[0] > off[1])
        return err_set(st->path, "tensor %s: data_offsets [%lld, %lld] end before they begin", t->name,
                       (long long)off[0], (long long)off[1]);
    if ((uint64_t)off[1] > data_size)
        return err_set(st->path, "tensor %s: data_offsets [%lld, %lld] exceed the data section of %zu bytes",
                       t->name, (long long)off[0], (long long)off[1], data_size);
    if (off[1] - off[0] != nbytes)
        return err_set(st->path, "tensor %s: data_offsets [%lld, %lld] hold %lld bytes, but %s %s needs %lld",
                       t->name, (long long)off[0], (long long)off[1], (long long)(off[1] - off[0]),
                       st_dtype_name(t->dtype), shape_format(shape, t->ndim, t->shape), (long long)nbytes);
    t->data = data + off[0];
    t->nbytes = (size_t)nbytes;
    return 0;
}

static int st_check_metadata(const struct safetensors *st, json_t *meta) {
    if (!json_is_object(meta)) return err_set(st->path, "__metadata__ is not a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        if (!json_is_string(val)) return err_set(st->path, "__metadata__ value of \"%s\" is not a string", key);
    }
    return 0;
}

/* Orders tensors by where their data begins (empty ones first), then by name. */
static int st_tensor_cmp(const void *pa, const void *pb) {
    const struct st_tensor *a = pa, *b = pb;
    const uint8_t *da = a->data, *db = b->data;
    if (da != db) return da < db ? -1 : 1;
    if (a->nbytes != b->nbytes) return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* The sorted tensors must cover [0, DATA_SIZE) exactly once: no gap, overlap or tail. */
static int st_check_tiling(const struct safetensors *st, const uint8_t *data, size_t data_size) {
    size_t end = 0;
    for (int32_t i = 0; i < st->n_tensors; i++) {
        const struct st_tensor *t = &st->tensors[i];
        size_t begin = (size_t)((const uint8_t *)t->data - data);
        if (begin > end)
            return err_set(st->path, "tensor %s begins at data byte %zu, leaving a gap after byte %zu",
                           t->name, begin, end);
        if (begin < end)
            return err_set(st->path, "tensor %s begins at data byte %zu, overlapping the tensor before it, "
                           "which ends at byte %zu", t->name, begin, end);
        end = begin + t->nbytes;
    }
    if (end != data_size)
        return err_set(st->path, "data section has %zu trailing bytes after the last tensor's end at byte %zu",
                       data_size - end, end);
    return 0;
}

static int st_parse_header(struct safetensors *st, json_t *root, const uint8_t *data, size_t data_size) {
    if (!json_is_object(root)) return err_set(st->path, "header is not a JSON object");
    st->tensors = xcalloc(json_object_size(root), sizeof *st->tensors);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (st_check_metadata(st, val) != 0) return -1;
            continue;
        }
        struct st_tensor *t = &st->tensors[st->n_tensors++];
        t->name = xstrdup(key);
        if (!json_is_object(val)) return err_set(st->path, "tensor %s: entry is not a JSON object", key);
        if (st_parse_type(st, t, val) != 0 || st_parse_place(st, t, val, data, data_size) != 0) return -1;
    }
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, st_tensor_cmp);
    return st_check_tiling(st, data, data_size);
}

static int st_parse(struct safetensors *st) {
    const uint8_t *base = st->map;
    uint64_t header_len = load_u64(base);
    size_t rest = st->map_size - 8;
    if (header_len > rest)
        return err_set(st->path, "header length %llu exceeds file size %zu", (unsigned long long)header_len,
                       st->map_size);
    if (header_len > ST_MAX_HEADER)
        return err_set(st->path, "header length %llu exceeds the limit of %llu bytes",
                       (unsigned long long)header_len, ST_MAX_HEADER);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)base + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return err_set(st->path, "header is not valid JSON: %s (byte %d)", jerr.text, jerr.position);
    int rc = st_parse_header(st, root, base + 8 + header_len, rest - (size_t)header_len);
    json_decref(root);
    return rc;
}

int safetensors_open(struct safetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    st->path = xstrdup(path);
    if (st_map(st) != 0 || st_parse(st) != 0) {
        safetensors_close(st);
        return -1;
    }
    return 0;
}

void safetensors_close(struct safetensors *st) {
    if (st->map) munmap(st->map, st->map_size);
    for (int32_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->path);
    memset(st, 0, sizeof *st);
}

const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name) {
    for (int32_t i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

/* Elements [FIRST, FIRST + N) of T as float32 into OUT. */
static int tensor_range_to_f32(const struct st_tensor *t, size_t first, size_t n, float *out) {
    const uint8_t *p = (const uint8_t *)t->data + first * st_dtype_size(t->dtype);
    switch (t->dtype) {
    case ST_DTYPE_F32:
        for (size_t i = 0; i < n; i++) out[i] = f32_from_bits(load_u32(p + 4 * i));
        return 0;
    case ST_DTYPE_F16:
        for (size_t i = 0; i < n; i++) out[i] = f16_to_f32(load_u16(p + 2 * i));
        return 0;
    case ST_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(load_u16(p + 2 * i));
        return 0;
    case ST_DTYPE_F64:
        for (size_t i = 0; i < n; i++) out[i] = (float)f64_from_bits(load_u64(p + 8 * i));
        return 0;
    default:
        return err_set(t->name, "dtype %s is not a floating-point type", st_dtype_name(t->dtype));
    }
}

int st_tensor_to_f32(const struct st_tensor *t, float *out) {
    return tensor_range_to_f32(t, 0, (size_t)t->numel, out);
}

int st_tensor_to_bf16(const struct st_tensor *t, uint16_t *out) {
    float chunk[4096];
    for (size_t at = 0; at < (size_t)t->numel; at += 4096) {
        size_t n = (size_t)t->numel - at < 4096 ? (size_t)t->numel - at : 4096;
        if (tensor_range_to_f32(t, at, n, chunk)) return -1;
        for (size_t i = 0; i < n; i++) out[at + i] = f32_to_bf16(chunk[i]);
    }
    return 0;
}

/* Drops the whole pages inside [P, P + N) of a read-only mapping. */
static void pages_drop(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)p + n) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: failure costs only memory */
}

void st_tensor_drop_pages(const struct st_tensor *t) { pages_drop(t->data, t->nbytes); }

int st_tensor_expect_shape(const struct safetensors *st, const struct st_tensor *t, int32_t ndim,
                           const int64_t *shape) {
    CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS);
    if (t->ndim == ndim && memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) == 0) return 0;
    char got[ST_SHAPE_CHARS], want[ST_SHAPE_CHARS];
    return err_set(st->path, "tensor %s has shape %s, expected %s", t->name, shape_format(got, t->ndim, t->shape),
                   shape_format(want, ndim, shape));
}

/* ---- writing ---- */

/* Adds "__metadata__" with N_META string pairs to ROOT. */
static int st_header_add_meta(const char *path, json_t *root, const char *const *meta, int32_t n_meta) {
    json_t *obj = json_object();
    CHECK(obj);
    json_object_set_new(root, "__metadata__", obj);
    for (int32_t i = 0; i < n_meta; i++) {
        if (json_object_set_new(obj, meta[2 * i], json_string(meta[2 * i + 1])) != 0)
            return err_set(path, "metadata \"%s\" is not valid UTF-8", meta[2 * i]);
    }
    return 0;
}

/* Adds E's header entry to ROOT with its data at *OFFSET, and advances *OFFSET. */
static int st_header_add_entry(const char *path, json_t *root, const struct st_write_entry *e, int64_t *offset) {
    char shape[ST_SHAPE_CHARS];
    int64_t numel, nbytes;
    if (e->dtype != ST_DTYPE_F32 && e->dtype != ST_DTYPE_F16 && e->dtype != ST_DTYPE_BF16)
        return err_set(path, "tensor %s: cannot write dtype %s", e->name, st_dtype_name(e->dtype));
    if (e->ndim < 0 || e->ndim > ST_MAX_DIMS)
        return err_set(path, "tensor %s: %d dimensions, at most %d allowed", e->name, e->ndim, ST_MAX_DIMS);
    if (shape_size(e->dtype, e->ndim, e->shape, &numel, &nbytes) != 0 || nbytes > INT64_MAX - *offset)
        return err_set(path, "tensor %s: invalid shape %s", e->name, shape_format(shape, e->ndim, e->shape));
    if (strcmp(e->name, "__metadata__") == 0 || json_object_get(root, e->name))
        return err_set(path, "tensor name %s is reserved or repeated", e->name);
    CHECK(e->data || numel == 0);
    json_t *dims = json_array();
    CHECK(dims);
    for (int32_t i = 0; i < e->ndim; i++) json_array_append_new(dims, json_integer(e->shape[i]));
    json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_dtype_name(e->dtype), "shape", dims,
                              "data_offsets", (json_int_t)*offset, (json_int_t)(*offset + nbytes));
    CHECK(entry);
    if (json_object_set_new(root, e->name, entry) != 0)
        return err_set(path, "tensor name %s is not valid UTF-8", e->name);
    *offset += nbytes;
    return 0;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes as the reference writer
 * does; NULL with an error. */
static char *st_header_build(const char *path, const struct st_write_entry *entries, int32_t n,
                             const char *const *meta, int32_t n_meta, size_t *len) {
    json_t *root = json_object();
    CHECK(root);
    int rc = n_meta > 0 ? st_header_add_meta(path, root, meta, n_meta) : 0;
    int64_t offset = 0;
    for (int32_t i = 0; i < n && rc == 0; i++) rc = st_header_add_entry(path, root, &entries[i], &offset);
    char *text = rc == 0 ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (rc != 0) return NULL;
    CHECK(text);
    size_t n_text = strlen(text), padded = (n_text + 7) / 8 * 8;
    char *header = xmalloc(padded);
    memcpy(header, text, n_text);
    memset(header + n_text, ' ', padded - n_text);
    free(text);
    *len = padded;
    return header;
}

/* Converts N floats to DTYPE's little-endian bytes. */
static void st_encode(enum st_dtype dtype, const float *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++) {
        if (dtype == ST_DTYPE_F32)
            store_u32(dst + 4 * i, f32_bits(src[i]));
        else if (dtype == ST_DTYPE_F16)
            store_u16(dst + 2 * i, f32_to_f16(src[i]));
        else
            store_u16(dst + 2 * i, f32_to_bf16(src[i]));
    }
}

/* Streams the data of entry E (already validated) a chunk at a time through BUF
 * (ST_WRITE_CHUNK floats). */
static int st_entry_write(struct file_atomic *fa, const struct st_write_entry *e, uint8_t *buf) {
    int64_t numel, nbytes;
    CHECK(shape_size(e->dtype, e->ndim, e->shape, &numel, &nbytes) == 0);
    size_t size = st_dtype_size(e->dtype);
    for (int64_t i = 0; i < numel; i += ST_WRITE_CHUNK) {
        size_t k = (size_t)(numel - i < ST_WRITE_CHUNK ? numel - i : ST_WRITE_CHUNK);
        st_encode(e->dtype, e->data + i, k, buf);
        if (file_atomic_write(fa, buf, k * size) != 0) return -1;
    }
    return 0;
}

int safetensors_write(const char *path, const struct st_write_entry *entries, int32_t n,
                      const char *const *meta, int32_t n_meta) {
    size_t header_len;
    char *header = st_header_build(path, entries, n, meta, n_meta, &header_len);
    if (!header) return -1;
    struct file_atomic fa;
    if (file_atomic_open(&fa, path) != 0) {
        free(header);
        return -1;
    }
    uint8_t len8[8];
    store_u64(len8, header_len);
    int rc = file_atomic_write(&fa, len8, sizeof len8);
    if (rc == 0) rc = file_atomic_write(&fa, header, header_len);
    uint8_t *buf = xmalloc(ST_WRITE_CHUNK * sizeof(float));
    for (int32_t i = 0; i < n && rc == 0; i++) rc = st_entry_write(&fa, &entries[i], buf);
    free(buf);
    free(header);
    if (rc != 0) {
        file_atomic_abort(&fa);
        return -1;
    }
    return file_atomic_commit(&fa);
}
