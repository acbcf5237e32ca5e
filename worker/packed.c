/*
 * packed.c: the layout, filling and binding of a model's packed frozen weights in its
 * base's shared block (packed.h). Every process lays the block out the same way; only
 * the one that writes it reads the files.
 */
#include "packed.h"

#include <stdlib.h>

#include "error.h"

/* Bytes rounded up to the block's 64-byte alignment. */
static uint64_t align64(uint64_t n) { return (n + 63) / 64 * 64; }

static int item_mapped(const struct packed_item *it) {
    return it->form == PACKED_BF16 && it->t->dtype == ST_DTYPE_BF16 && (uintptr_t)it->t->data % sizeof(uint16_t) == 0;
}

static enum quant_kind item_kind(const struct packed_item *it) { return it->form == PACKED_NF4 ? QUANT_NF4 : QUANT_INT8; }

/* The (out, in) shape of a quantized item. */
static void item_shape(const struct packed_item *it, int32_t *rows, int32_t *cols) {
    *rows = (int32_t)it->t->shape[it->transpose ? 1 : 0];
    *cols = (int32_t)it->t->shape[it->transpose ? 0 : 1];
}

/* The bytes of the block item IT takes: none when mapped; codes then scales when quantized. */
static uint64_t item_bytes(const struct packed_item *it, uint64_t *code_bytes) {
    *code_bytes = 0;
    if (item_mapped(it)) return 0;
    if (it->form == PACKED_BF16) return align64((uint64_t)it->t->numel * sizeof(uint16_t));
    int32_t rows, cols;
    item_shape(it, &rows, &cols);
    *code_bytes = align64(quant_code_bytes(item_kind(it), rows, cols));
    return *code_bytes + align64((uint64_t)rows * (uint64_t)(cols / QUANT_BLOCK) * sizeof(float));
}

/* IT's qweight laid at AT in the block. */
static struct qweight item_qweight(const struct packed_item *it, char *at) {
    uint64_t code_bytes;
    item_bytes(it, &code_bytes);
    struct qweight q = {.kind = item_kind(it), .block = QUANT_BLOCK, .q = (const uint8_t *)at,
                        .scale = (const float *)(at + code_bytes)};
    item_shape(it, &q.rows, &q.cols);
    return q;
}

/* Encodes quantized item IT into the block at AT: read as f32, transposed to (out, in) if need be. */
static void item_encode(const struct packed_item *it, char *at) {
    struct qweight q = item_qweight(it, at);
    const size_t n = (size_t)q.rows * q.cols;
    float *w = xalloc_aligned(n * sizeof *w);
    CHECK(st_tensor_to_f32(it->t, w) == 0);
    if (it->transpose) {
        float *t = xalloc_aligned(n * sizeof *t);
#pragma omp parallel for schedule(static)
        for (int32_t r = 0; r < q.rows; r++)
            for (int32_t c = 0; c < q.cols; c++) t[(size_t)r * q.cols + c] = w[(size_t)c * q.rows + r];
        free(w);
        w = t;
    }
    quant_encode(q.kind, q.block, w, q.rows, q.cols, (uint8_t *)q.q, (float *)q.scale);
    free(w);
}

struct packed_fill {
    const struct packed_item *items;
    int32_t n;
};

static void packed_fill(void *ctx, void *block) {
    const struct packed_fill *f = ctx;
    char *at = block;
    for (int32_t i = 0; i < f->n; i++) {
        const struct packed_item *it = &f->items[i];
        uint64_t code_bytes, bytes = item_bytes(it, &code_bytes);
        if (!bytes) continue;
        if (it->form == PACKED_BF16)
            CHECK(st_tensor_to_bf16(it->t, (uint16_t *)at) == 0);
        else
            item_encode(it, at);
        st_tensor_drop_pages(it->t);
        at += bytes;
    }
}

void packed_bind(struct base *b, enum base_dtype kind, const struct packed_item *items, int32_t n) {
    uint64_t total = 0, code_bytes;
    for (int32_t i = 0; i < n; i++) total += item_bytes(&items[i], &code_bytes);
    struct packed_fill f = {items, n};
    char *at = total ? base_shared_block(b, kind, total, packed_fill, &f) : NULL;
    for (int32_t i = 0; i < n; i++) {
        const struct packed_item *it = &items[i];
        const uint64_t bytes = item_bytes(it, &code_bytes);
        if (item_mapped(it))
            *it->w16 = it->t->data;
        else if (it->form == PACKED_BF16)
            *it->w16 = (const uint16_t *)at;
        else
            *it->wq = item_qweight(it, at);
        at += bytes;
    }
}
