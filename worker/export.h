/*
 * export.h: the trained tensors in the form a user takes home, and back.
 *
 * LoRA: a Hugging Face PEFT adapter. A module with a whole-output adapter maps one-to-one
 * onto PEFT's lora_A [r, in] / lora_B [out, r]. A fused c_attn with q/k/v slice adapters
 * becomes one c_attn adapter of rank n·r: A stacks the slices' A in q, k, v order, B
 * places each slice's B in its own rows and columns (zeros elsewhere), and rank_pattern /
 * alpha_pattern keep the scale, so PEFT computes exactly the same function.
 * Full mode: the model's weights under their Hugging Face names, with config.json.
 *
 * The same set goes into checkpoints, so a checkpoint's tensors are exactly what an
 * export at that step writes, and restoring them is the exact inverse.
 */
#ifndef LORAD_EXPORT_H
#define LORAD_EXPORT_H

#include "model.h"

/* What the PEFT config records beyond the model: the base model's name, the dropout;
 * and which of the model's adapter sets it exports. */
struct export_meta {
    const char *base;
    float dropout;
    int32_t set;
};

struct export_set {
    int full;
    struct st_write_entry *e; /* names, float32 data, shapes */
    int32_t n;
    char *config;             /* adapter_config.json or config.json text */
    float *owned;             /* the PEFT-form tensors (LoRA); NULL in full mode */
    char (*names)[160];
};

/* Builds M's export set; in full mode the data points into M's trainable block. */
int export_collect(const struct model *m, const struct export_meta *meta, struct export_set *x);
void export_free(struct export_set *x);
/* The file names of a set: adapter_config.json + adapter_model.safetensors, or
 * config.json + model.safetensors in full mode. */
void export_files(int full, const char **config_file, const char **weights_file);
/* Writes DIR/CONFIG_FILE (the CONFIG text) and DIR/WEIGHTS_FILE (the N tensors). */
int export_write_dir(const char *dir, int full, const char *config, const struct st_write_entry *e, int32_t n);

/* Looks up tensor NAME, which must have shape (d0, d1) (d1 = 0: 1-D), and copies it as
 * float32 into OUT. Returns 0, or -1 with an error naming the source. */
typedef int (*export_get_fn)(void *ctx, const char *name, int32_t ndim, const int64_t *shape, float *out);
/* Loads M's trainable tensors (of adapter set SET in LoRA mode) from a set in export
 * form, the exact inverse of export_collect. Sliced modules must be block-structured. */
int export_restore(struct model *m, int32_t set, export_get_fn get, void *ctx);
/* Loads M's adapter set SET from the PEFT directory DIR (--init-adapter, eval's and
 * generate's unmerged adapters): the scales must match and every tensor in the file
 * must belong to one of the set's adapters. */
int adapter_import(struct model *m, int32_t set, const char *dir);

/* A PEFT adapter directory as an adapter set of a model, unmerged (eval's and generate's
 * several adapters): SPEC adapts exactly the modules the file holds, with the config's
 * rank, alpha, rsLoRA and patterns; its targets point into MODS. After model_init,
 * adapter_import fills the set's A and B. */
struct adapter_dir {
    const char *dir;
    char *file;           /* its adapter_model.safetensors: what errors about the set name */
    struct peft_config cfg;
    struct peft_modules mods;
    const char **targets; /* (mods.n) */
    struct lora_spec spec;
};
/* Reads DIR's config and module list; -1 with an error naming the file. */
int adapter_dir_open(struct adapter_dir *a, const char *dir);
void adapter_dir_free(struct adapter_dir *a);

#endif
