/*
 * fuzz_safetensors.c: libFuzzer target for the safetensors reader (storage/safetensors.c),
 * which parses model and adapter files that come from anywhere.
 *
 * The input is the whole file. It goes through safetensors_open (mmap, header JSON,
 * offsets, tiling); when that accepts it, every tensor is looked up by name, checked
 * against its own shape, and every floating tensor is converted with st_tensor_to_f32.
 * Because the data is mmapped (outside ASan's view), the target also checks that each
 * accepted tensor lies inside the data section of the input, and that an F32 tensor's
 * conversion reproduces its bytes.
 */
#include "fuzz_util.h"

#include "error.h"
#include "safetensors.h"

#include <math.h>

static int is_float(enum st_dtype d) {
    return d == ST_DTYPE_F32 || d == ST_DTYPE_F16 || d == ST_DTYPE_BF16 || d == ST_DTYPE_F64;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct safetensors st;
    if (safetensors_open(&st, fuzz_memfd_path(data, size)) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        FUZZ_REQUIRE(st.map == NULL && st.tensors == NULL && st.n_tensors == 0);
        return 0;
    }
    FUZZ_REQUIRE(st.map_size == size && size >= 8);
    const uint8_t *base = st.map;
    uint64_t header_len = (uint64_t)fuzz_le32(data) | (uint64_t)fuzz_le32(data + 4) << 32;
    FUZZ_REQUIRE(header_len <= size - 8);
    size_t data_begin = 8 + (size_t)header_len, end = data_begin;
    for (int32_t i = 0; i < st.n_tensors; i++) {
        const struct st_tensor *t = &st.tensors[i];
        size_t off = (size_t)((const uint8_t *)t->data - base);
        /* inside the data section, sorted and tiling it */
        FUZZ_REQUIRE((const uint8_t *)t->data >= base + data_begin && off <= size && t->nbytes <= size - off);
        FUZZ_REQUIRE(off == end);
        end = off + t->nbytes;
        FUZZ_REQUIRE(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS && t->numel >= 0);
        FUZZ_REQUIRE((size_t)t->numel * st_dtype_size(t->dtype) == t->nbytes);
        FUZZ_REQUIRE(safetensors_find(&st, t->name) == t);
        FUZZ_REQUIRE(st_tensor_expect_shape(&st, t, t->ndim, t->shape) == 0);

        float *out = malloc(((size_t)t->numel ? (size_t)t->numel : 1) * sizeof *out);
        FUZZ_REQUIRE(out);
        int rc = st_tensor_to_f32(t, out);
        FUZZ_REQUIRE(is_float(t->dtype) ? rc == 0 : rc == -1);
        if (t->dtype == ST_DTYPE_F32) FUZZ_REQUIRE(memcmp(out, data + off, t->nbytes) == 0);
        if (t->dtype == ST_DTYPE_BF16)
            for (int64_t j = 0; j < t->numel; j++)
                FUZZ_REQUIRE(isnan(out[j]) || f32_to_bf16(out[j]) == (uint16_t)(data[off + 2 * j] | data[off + 2 * j + 1] << 8));
        if (t->dtype == ST_DTYPE_F16)
            for (int64_t j = 0; j < t->numel; j++)
                FUZZ_REQUIRE(isnan(out[j]) || f32_to_f16(out[j]) == (uint16_t)(data[off + 2 * j] | data[off + 2 * j + 1] << 8));
        free(out);
    }
    FUZZ_REQUIRE(end == size);
    FUZZ_REQUIRE(safetensors_find(&st, "__metadata__") == NULL);
    safetensors_close(&st);
    return 0;
}
