/*
 * packed.h: a model's frozen product weights in low precision, held in the node's
 * shared block of its base (base.h): bf16 copies, or int8 / nf4 encodings (quant.h)
 * made once per node from the F32, F16 or BF16 files, and where each linear finds its
 * form. The f32 pages a weight was read from are dropped once it is packed, so only
 * the packed copy stays resident.
 */
#ifndef LORAD_PACKED_H
#define LORAD_PACKED_H

#include <stdint.h>

#include "base.h"
#include "quant.h"
#include "safetensors.h"

enum packed_form { PACKED_BF16, PACKED_INT8, PACKED_NF4 };

struct packed_item {
    const struct st_tensor *t; /* the weight as the files hold it */
    enum packed_form form;
    int transpose;             /* the files hold it (in, out) (GPT-2's Conv1D): encode its transpose */
    const uint16_t **w16;      /* PACKED_BF16: set to its bf16 data */
    struct qweight *wq;        /* PACKED_INT8, PACKED_NF4: filled, pointing into the block */
};

/* Points the N items at their data: a bf16 item at the mapping where its file holds
 * aligned BF16, every other item into B's shared block for models of dtype KIND, which
 * the first process of the node fills (base_shared_block). A quantized item's
 * in-features are a multiple of QUANT_BLOCK. */
void packed_bind(struct base *b, enum base_dtype kind, const struct packed_item *items, int32_t n);

#endif
