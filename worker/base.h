/*
 * base.h: a base model's files, opened once: its config, its mapped safetensors, the
 * fingerprint that names it in checkpoints, and (made by the first model that needs them)
 * the f32 copies of its weights that are not mappable f32 and the node's shared block of
 * product weights in bf16 (those not mappable bf16) or quantized (int8, nf4). Models borrow a base, one at a time, so a
 * daemon keeps one resident between jobs on the same model directory.
 */
#ifndef LORAD_BASE_H
#define LORAD_BASE_H

#include <stdint.h>

#include "hf_config.h"
#include "st_set.h"

/* The forms of a model's frozen product weights (--base-dtype). */
enum base_dtype { BASE_DTYPE_F32, BASE_DTYPE_BF16, BASE_DTYPE_INT8, BASE_DTYPE_NF4 };
/* "f32", "bf16", "int8", "nf4". */
const char *base_dtype_name(enum base_dtype d);

struct base {
    char *dir;                /* the model directory as given */
    struct model_config cfg;
    struct st_set st;         /* the weights files, mapped read-only */
    uint64_t fingerprint;     /* of config.json and the weights: which base this is */
    char *config_text;        /* config.json as read */
    float *frozen;            /* f32 copies of the unmappable frozen weights, or NULL */
    uint64_t frozen_n;        /* floats in FROZEN */
    int frozen_kind;          /* the KIND base_f32_block made FROZEN for */
    void *shared;             /* the frozen product weights in bf16 or quantized, or NULL */
    uint64_t shared_bytes;    /* bytes of SHARED */
    enum base_dtype shared_kind; /* the dtype base_shared_block made SHARED for */
    void *shared_map;         /* the node's shared file SHARED lies in, or NULL (private) */
    size_t shared_map_len;
    char share_path[256];     /* that file's name until base_unshare, else "" */
    uint64_t stamp;           /* of the files' identities and times, for base_current */
};

/* Opens DIR: config.json and the weights. -1 with an error naming the file. */
int base_open(struct base *b, const char *dir);
void base_close(struct base *b);
/* Whether B is DIR as it is on disk now: the same directory and the same files (device,
 * inode, size and modification time of config.json and every weights file). */
int base_current(const struct base *b, const char *dir);

/* B's f32 block of N floats for models of dtype KIND (--base-dtype bf16 models need
 * fewer f32 copies): made by FILL(CTX, block) on the first call, and again when KIND
 * changes; later calls of the same KIND return it. Private to the process. */
float *base_f32_block(struct base *b, uint64_t n, int kind, void (*fill)(void *ctx, float *block), void *ctx);
/* B's shared block of BYTES for the frozen product weights of models of dtype KIND
 * (made once per KIND; later calls of that KIND return it): in a file of /dev/shm named
 * after B's files and KIND, which the first process of the node writes with FILL(CTX,
 * block) under a lock and the others map, so the ranks of a node share one copy; a
 * private allocation where /dev/shm is not there. 64-byte aligned. */
void *base_shared_block(struct base *b, enum base_dtype kind, uint64_t bytes, void (*fill)(void *ctx, void *block),
                        void *ctx);
/* Removes the node's file name once every process of the node has mapped the block
 * (the mappings stay); a no-op for a private block or when already done. */
void base_unshare(struct base *b);

/* Keeps B open on DIR: *REUSED = 1 when B already is DIR as on disk, else B is reopened
 * (and *REUSED = 0). -1 with an error (B closed) when DIR cannot be opened. */
int base_keep(struct base *b, const char *dir, int *reused);

#endif
