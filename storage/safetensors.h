/*
 * safetensors.h: read and write Hugging Face safetensors files.
 *
 * Reading maps the file with mmap and validates it against the published format before
 * any tensor is handed out: an 8-byte little-endian header length, a JSON header of
 * {name: {dtype, shape, data_offsets}} (plus an optional "__metadata__" object of
 * strings), offsets that tile the data buffer exactly, and a data buffer that ends at
 * the end of the file. Any violation is a user error naming the file and the problem.
 *
 * Writing produces the same layout from float32 tensors, converted to the requested
 * dtype, through a temporary file that is fsynced and renamed into place.
 */
#ifndef LORAD_SAFETENSORS_H
#define LORAD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

enum st_dtype {
    ST_DTYPE_F32,
    ST_DTYPE_F16,
    ST_DTYPE_BF16,
    ST_DTYPE_F64,
    ST_DTYPE_I64,
    ST_DTYPE_I32,
    ST_DTYPE_I16,
    ST_DTYPE_I8,
    ST_DTYPE_U8,
    ST_DTYPE_BOOL,
    ST_DTYPE_U16,
    ST_DTYPE_U32,
    ST_DTYPE_U64,
    ST_DTYPE_F8_E4M3,
    ST_DTYPE_F8_E5M2,
};

struct st_tensor {
    char *name;
    enum st_dtype dtype;
    int32_t ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* inside the mapping; not necessarily aligned */
    size_t nbytes;
};

struct safetensors {
    char *path;
    void *map;
    size_t map_size;
    struct st_tensor *tensors; /* sorted by data offset */
    int32_t n_tensors;
};

/* Maps and validates PATH. Returns 0, or -1 with err_set("PATH", ...). */
int safetensors_open(struct safetensors *st, const char *path);
/* Unmaps and frees; safe on a zeroed struct. */
void safetensors_close(struct safetensors *st);
/* The tensor called NAME, or NULL. */
const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name);
/* Bytes per element of DTYPE; "F32", "BF16"... as in the header. */
size_t st_dtype_size(enum st_dtype dtype);
const char *st_dtype_name(enum st_dtype dtype);
/* Converts a floating tensor (F32, F16, BF16, F64) to float32. OUT holds t->numel.
 * Returns -1 with an error naming the tensor for a non-floating dtype. */
int st_tensor_to_f32(const struct st_tensor *t, float *out);
/* The same to bfloat16 (round to nearest even). */
int st_tensor_to_bf16(const struct st_tensor *t, uint16_t *out);
/* Lets the kernel drop T's resident pages of the mapping (they are read back from the
 * file if touched again): for a tensor whose data has been copied elsewhere. */
void st_tensor_drop_pages(const struct st_tensor *t);
/* Checks that T has exactly the given shape; -1 with an error naming file and tensor. */
int st_tensor_expect_shape(const struct safetensors *st, const struct st_tensor *t, int32_t ndim,
                           const int64_t *shape);

/* One tensor to write: float32 data, stored as DTYPE (F32, F16 or BF16). */
struct st_write_entry {
    const char *name;
    const float *data;
    int32_t ndim;
    int64_t shape[ST_MAX_DIMS];
    enum st_dtype dtype;
};

/* Writes the entries (in the given order) to PATH atomically, with an optional
 * "__metadata__" of N_META key/value string pairs (META[2i], META[2i+1]).
 * Returns 0, or -1 with an error naming PATH. */
int safetensors_write(const char *path, const struct st_write_entry *entries, int32_t n,
                      const char *const *meta, int32_t n_meta);

/* float <-> half helpers used by conversion and by the bf16 paths (the bf16 ones
 * inline: the worker converts whole activations with them). */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

static inline float bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}

/* Round to nearest even, NaN preserved (quiet). */
static inline uint16_t f32_to_bf16(float f) {
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

#endif
