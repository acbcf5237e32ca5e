/*
 * st_set.h: the weights of a Hugging Face model directory: DIR/model.safetensors, or the
 * shards that DIR/model.safetensors.index.json maps tensor names to
 * ({"weight_map": {"name": "model-00001-of-00002.safetensors", ...}}). Every file is
 * mapped and validated once; a tensor the index names must be in its shard.
 */
#ifndef LORAD_ST_SET_H
#define LORAD_ST_SET_H

#include <stdint.h>

#include "safetensors.h"

#define ST_INDEX_NAME "model.safetensors.index.json"

struct st_set {
    char *path; /* the single file or the index: what errors name */
    struct safetensors *files;
    int32_t n_files;
};

/* Opens DIR's weights. -1 with an error naming the file or index and the problem. */
int st_set_open(struct st_set *s, const char *dir);
void st_set_close(struct st_set *s);
/* The tensor called NAME in any file, or NULL; *FILE (may be NULL) gets its file. */
const struct st_tensor *st_set_find(const struct st_set *s, const char *name, const struct safetensors **file);
/* Tensors over all files. */
int64_t st_set_count(const struct st_set *s);
/* Writes the N entries into DIR as model.safetensors, or, when they take more than
 * MAX_SHARD bytes, as model-0000K-of-0000N.safetensors shards of at most MAX_SHARD bytes
 * each (a larger tensor gets a shard of its own) plus model.safetensors.index.json.
 * Every file is written atomically. */
int st_set_write(const char *dir, const struct st_write_entry *e, int32_t n, uint64_t max_shard);

#endif
