/*
 * fuzz_st_index.c: libFuzzer target for a sharded model's model.safetensors.index.json
 * (storage/st_set.c), which maps tensor names to shard files of a downloaded model.
 *
 * The input is the text of the index, in a scratch directory that also holds two small
 * valid shards, a.safetensors (tensors "x", "y") and b.safetensors ("z"), written once.
 * st_set_open parses the index and opens the shards it names. An accepted index must
 * have opened only files directly inside the directory (no path escapes), at least one,
 * each once, and every tensor of every opened shard must be found by st_set_find.
 */
#include "fuzz_util.h"

#include "error.h"
#include "st_set.h"

static void put_shard(const char *name, const char *const *names, int32_t n) {
    static const float v[2] = {1.0f, -2.0f};
    struct st_write_entry e[2];
    for (int32_t i = 0; i < n; i++) e[i] = (struct st_write_entry){names[i], v, 1, {2}, ST_DTYPE_F32};
    char path[600];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
    if (safetensors_write(path, e, n, NULL, 0) != 0) {
        fprintf(stderr, "fuzz harness: %s\n", err_msg());
        _exit(1);
    }
}

static char shard_a[600], shard_b[600];

static void shards_remove(void) {
    unlink(shard_a);
    unlink(shard_b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir_with(ST_INDEX_NAME, data, size);
    if (!shard_a[0]) {
        static const char *const ab[] = {"x", "y"}, *const c[] = {"z"};
        put_shard("a.safetensors", ab, 2);
        put_shard("b.safetensors", c, 1);
        snprintf(shard_a, sizeof shard_a, "%s/a.safetensors", dir);
        snprintf(shard_b, sizeof shard_b, "%s/b.safetensors", dir);
        atexit(shards_remove); /* runs before fuzz_dir_remove, registered earlier */
    }
    struct st_set s;
    if (st_set_open(&s, dir) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        st_set_close(&s);
        return 0;
    }
    FUZZ_REQUIRE(s.n_files >= 1 && s.n_files <= 2);
    size_t dlen = strlen(dir);
    for (int32_t i = 0; i < s.n_files; i++) {
        const char *p = s.files[i].path;
        FUZZ_REQUIRE(strncmp(p, dir, dlen) == 0 && p[dlen] == '/' && !strchr(p + dlen + 1, '/'));
        for (int32_t j = 0; j < i; j++) FUZZ_REQUIRE(strcmp(p, s.files[j].path) != 0);
        for (int32_t t = 0; t < s.files[i].n_tensors; t++) {
            const struct safetensors *f = NULL;
            FUZZ_REQUIRE(st_set_find(&s, s.files[i].tensors[t].name, &f) != NULL && f != NULL);
        }
    }
    FUZZ_REQUIRE(st_set_count(&s) >= 1);
    st_set_close(&s);
    return 0;
}
