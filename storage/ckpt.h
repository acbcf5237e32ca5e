/*
 * ckpt.h: HDF5 checkpoint files. One file holds everything a job needs to continue:
 *
 *   /adapter/<PEFT key>   (LoRA) or /params/<HF name> (full mode): the trained tensors,
 *                         float32, chunked, Fletcher32; attribute "config": the
 *                         adapter_config.json (or config.json) text that goes with them
 *   /optimizer/m, /optimizer/v
 *                         AdamW's moments, flat, in the order of the trainable block;
 *                         attributes "step" (AdamW's t) and "lr" (of the last step)
 *   /rng                  attributes "seed" and "scheme" (lorad's RNG is counter-based:
 *                         every draw is a function of the seed, the step and a position)
 *   /data                 attributes "samples" (consumed from the stream), "tokens",
 *                         "epoch", "epoch_position", "n_samples"
 *   /job/spec             the JobSpec as protobuf bytes (uint8); /job/json the same as JSON
 *   root attributes       format_version, lorad_version, step, world_size, wall_time,
 *                         loss, base_fingerprint, and "complete" = 1, written last
 *
 * Writing goes to a temporary name in the same directory, is flushed and fsynced,
 * renamed into place, and the directory fsynced: a file that exists under its final
 * name is whole. Reading validates everything (the completion marker, shapes, and the
 * Fletcher32 checksums of every dataset) before the caller sees any of it.
 */
#ifndef LORAD_CKPT_H
#define LORAD_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define CKPT_FORMAT_VERSION 1

struct ckpt_tensor {
    char *name;
    float *data;
    int32_t ndim;
    int64_t shape[2];
};

struct ckpt {
    /* where the run stands */
    int64_t step;        /* optimizer steps done */
    int64_t samples;     /* samples consumed from the training stream */
    int64_t tokens;      /* tokens consumed */
    int64_t n_samples;   /* samples per epoch of the training data */
    double loss;         /* loss of the last step */
    double lr;           /* learning rate of the last step */
    int32_t world_size;
    double wall_time;    /* seconds since the epoch, at save */
    uint64_t seed;
    uint64_t fingerprint; /* of the base model: config.json and the safetensors header */
    /* the trained tensors */
    char *group;          /* "adapter" or "params" */
    char *config_json;    /* the JSON file that goes with them */
    struct ckpt_tensor *tensors;
    int32_t n_tensors;
    /* the optimizer */
    float *m, *v;         /* (n) each */
    uint64_t n;
    /* the job */
    uint8_t *job;
    size_t job_len;
    char *job_json;
};

/* Writes C to PATH atomically. Returns 0, or -1 with an error naming PATH. The
 * caller's buffers are only read. */
int ckpt_write(const char *path, const struct ckpt *c);
/* Reads and validates PATH into C (every buffer allocated; release with ckpt_free).
 * Returns 0, or -1 with an error naming PATH and what is wrong (not HDF5, incomplete,
 * a checksum mismatch, a missing or misshapen dataset, another format version). */
int ckpt_read(const char *path, struct ckpt *c);
/* Frees what ckpt_read allocated; safe on a zeroed struct. */
void ckpt_free(struct ckpt *c);

#endif
