/*
 * st_set.c: single-file and sharded safetensors weights (st_set.h).
 */
#include "st_set.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "jsonio.h"

/* A shard name must stay inside the model directory. */
static int shard_name_ok(const char *name) {
    return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

static int32_t shard_index(const struct st_set *s, const char *dir, const char *name) {
    char *path = path_join(dir, name);
    int32_t found = -1;
    for (int32_t i = 0; i < s->n_files && found < 0; i++)
        if (!strcmp(s->files[i].path, path)) found = i;
    free(path);
    return found;
}

/* Opens every shard the index names and checks each tensor is where it says. */
static int index_open(struct st_set *s, const char *dir, const json_t *map) {
    const char *name;
    json_t *file;
    json_object_foreach((json_t *)map, name, file) {
        if (!json_is_string(file) || !shard_name_ok(json_string_value(file)))
            return err_set(s->path, "weight_map[\"%s\"] is not a file name in the model directory", name);
        const char *shard = json_string_value(file);
        int32_t k = shard_index(s, dir, shard);
        if (k < 0) {
            s->files = xrealloc(s->files, (size_t)(s->n_files + 1) * sizeof *s->files);
            memset(&s->files[s->n_files], 0, sizeof *s->files);
            char *path = path_join(dir, shard);
            int rc = safetensors_open(&s->files[s->n_files], path);
            free(path);
            if (rc) return -1;
            k = s->n_files++;
        }
        if (!safetensors_find(&s->files[k], name))
            return err_set(s->path, "names %s in %s, which does not hold it", name, shard);
    }
    if (s->n_files == 0) return err_set(s->path, "weight_map is empty");
    return 0;
}

int st_set_open(struct st_set *s, const char *dir) {
    memset(s, 0, sizeof *s);
    char *index = path_join(dir, ST_INDEX_NAME);
    if (access(index, F_OK) != 0) {
        free(index);
        s->path = path_join(dir, "model.safetensors");
        s->files = xcalloc(1, sizeof *s->files);
        if (safetensors_open(&s->files[0], s->path)) return -1;
        s->n_files = 1;
        return 0;
    }
    s->path = index;
    json_t *root = jsonio_read(index);
    if (!root) return -1;
    const json_t *map = json_object_get(root, "weight_map");
    int rc = json_is_object(map) ? index_open(s, dir, map) : err_set(index, "has no \"weight_map\" object");
    json_decref(root);
    return rc;
}

void st_set_close(struct st_set *s) {
    for (int32_t i = 0; i < s->n_files; i++) safetensors_close(&s->files[i]);
    free(s->files);
    free(s->path);
    memset(s, 0, sizeof *s);
}

const struct st_tensor *st_set_find(const struct st_set *s, const char *name, const struct safetensors **file) {
    for (int32_t i = 0; i < s->n_files; i++) {
        const struct st_tensor *t = safetensors_find(&s->files[i], name);
        if (t) {
            if (file) *file = &s->files[i];
            return t;
        }
    }
    return NULL;
}

static uint64_t entry_bytes(const struct st_write_entry *e) {
    uint64_t n = st_dtype_size(e->dtype);
    for (int32_t d = 0; d < e->ndim; d++) n *= (uint64_t)e->shape[d];
    return n;
}

static const char *const format_pt[2] = {"format", "pt"};

/* Splits the N entries into shards of at most MAX bytes (a larger entry alone): shard k
 * holds [START[k], START[k+1]). Returns the shard count; START has room for N + 1. */
static int32_t shards_plan(const struct st_write_entry *e, int32_t n, uint64_t max, int32_t *start) {
    int32_t k = 0;
    for (int32_t i = 0; i < n;) {
        start[k++] = i;
        uint64_t bytes = entry_bytes(&e[i++]);
        while (i < n && bytes + entry_bytes(&e[i]) <= max) bytes += entry_bytes(&e[i++]);
    }
    start[k] = n;
    return k;
}

/* Writes the shards and the index (weight_map and total_size). */
static int shards_write(const char *dir, const struct st_write_entry *e, const int32_t *start, int32_t n_shards) {
    json_t *map = json_object();
    uint64_t total = 0;
    int rc = 0;
    for (int32_t k = 0; k < n_shards && rc == 0; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
        char *path = path_join(dir, name);
        rc = safetensors_write(path, e + start[k], start[k + 1] - start[k], format_pt, 1);
        free(path);
        for (int32_t j = start[k]; j < start[k + 1]; j++) {
            json_object_set_new(map, e[j].name, json_string(name));
            total += entry_bytes(&e[j]);
        }
    }
    json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    char *path = path_join(dir, ST_INDEX_NAME);
    if (rc == 0) rc = jsonio_write(path, index);
    free(path);
    json_decref(index);
    return rc;
}

int st_set_write(const char *dir, const struct st_write_entry *e, int32_t n, uint64_t max_shard) {
    if (dir_make(dir)) return -1;
    int32_t *start = xcalloc((size_t)n + 2, sizeof *start);
    int32_t n_shards = shards_plan(e, n, max_shard, start);
    int rc;
    if (n_shards <= 1) {
        char *path = path_join(dir, "model.safetensors");
        rc = safetensors_write(path, e, n, format_pt, 1);
        free(path);
    } else {
        rc = shards_write(dir, e, start, n_shards);
    }
    free(start);
    return rc;
}

int64_t st_set_count(const struct st_set *s) {
    int64_t n = 0;
    for (int32_t i = 0; i < s->n_files; i++) n += s->files[i].n_tensors;
    return n;
}
