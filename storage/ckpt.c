/*
 * ckpt.c: HDF5 checkpoints (ckpt.h). Writing lays out the groups, datasets and
 * attributes of one file through h5_write_atomic, the completion marker last.
 * Reading checks the marker and the format version first, then reads every dataset
 * whole, so that a Fletcher32 mismatch, a missing piece or a wrong type or shape
 * fails before the caller sees any of it. Sizes read from the file are bounded by the
 * file's own size, so corrupt metadata cannot ask for absurd allocations.
 */
#include "ckpt.h"

#include "error.h"
#include "h5io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CKPT_RNG_SCHEME "splitmix64-counter" /* worker/rng.c */
#define CORRUPT_HINT "the file is corrupt; --resume auto falls back to an older checkpoint"
#define VERSION_HINT "resume with the lorad version that wrote it"

/* ---- writing ---- */

static int attr_put_i64(hid_t loc, const char *name, int64_t v) {
    return h5_put_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

static int attr_put_u64(hid_t loc, const char *name, uint64_t v) {
    return h5_put_attr(loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

static int attr_put_f64(hid_t loc, const char *name, double v) {
    return h5_put_attr(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

/* A scalar string dataset NAME under LOC (contiguous: HDF5 cannot chunk a scalar). */
static int str_put(hid_t loc, const char *name, const char *s) {
    hid_t t = h5_str_type(s);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t d = t < 0 || space < 0 ? H5I_INVALID_HID
                                 : H5Dcreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d < 0 || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) < 0 ? -1 : 0;
    if (d >= 0 && H5Dclose(d) < 0) rc = -1;
    if (space >= 0) H5Sclose(space);
    if (t >= 0) H5Tclose(t);
    return rc;
}

static int floats_put(hid_t loc, const char *name, int rank, const hsize_t *dims, const float *data) {
    return h5_put_array(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rank, dims, data);
}

/* /adapter or /params: the tensors and their JSON config. */
static int tensors_put(hid_t g, const struct ckpt *c) {
    if (h5_put_attr_str(g, "config", c->config_json)) return -1;
    for (int32_t i = 0; i < c->n_tensors; i++) {
        const struct ckpt_tensor *t = &c->tensors[i];
        hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
        if (floats_put(g, t->name, t->ndim, dims, t->data)) return -1;
    }
    return 0;
}

static int optimizer_put(hid_t g, const struct ckpt *c) {
    hsize_t n = (hsize_t)c->n;
    if (floats_put(g, "m", 1, &n, c->m) || floats_put(g, "v", 1, &n, c->v)) return -1;
    return attr_put_i64(g, "step", c->step) || attr_put_f64(g, "lr", c->lr) ? -1 : 0;
}

static int rng_put(hid_t g, const struct ckpt *c) {
    return attr_put_u64(g, "seed", c->seed) || h5_put_attr_str(g, "scheme", CKPT_RNG_SCHEME) ? -1 : 0;
}

static int data_put(hid_t g, const struct ckpt *c) {
    int64_t epoch = c->n_samples > 0 ? c->samples / c->n_samples : 0;
    int64_t position = c->n_samples > 0 ? c->samples % c->n_samples : c->samples;
    return attr_put_i64(g, "samples", c->samples) || attr_put_i64(g, "tokens", c->tokens) ||
                   attr_put_i64(g, "epoch", epoch) || attr_put_i64(g, "epoch_position", position) ||
                   attr_put_i64(g, "n_samples", c->n_samples)
               ? -1
               : 0;
}

static int job_put(hid_t g, const struct ckpt *c) {
    hsize_t n = (hsize_t)c->job_len;
    if (h5_put_array(g, "spec", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &n, c->job)) return -1;
    return str_put(g, "json", c->job_json);
}

static int root_put(hid_t f, const struct ckpt *c) {
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, c->fingerprint);
    return attr_put_i64(f, "format_version", CKPT_FORMAT_VERSION) || h5_put_attr_str(f, "lorad_version", LORAD_VERSION) ||
                   attr_put_i64(f, "step", c->step) ||
                   h5_put_attr(f, "world_size", H5T_STD_I32LE, H5T_NATIVE_INT32, &c->world_size) ||
                   attr_put_f64(f, "wall_time", c->wall_time) || attr_put_f64(f, "loss", c->loss) ||
                   attr_put_u64(f, "base_fingerprint", c->fingerprint) ||
                   h5_put_attr_str(f, "base_fingerprint_hex", hex)
               ? -1
               : 0;
}

typedef int (*group_fill_fn)(hid_t g, const struct ckpt *c);

/* The groups in the order they are written; a NULL name is the tensor group, C->group. */
static const struct {
    const char *name;
    group_fill_fn fill;
} ckpt_groups[] = {
    {NULL, tensors_put}, {"optimizer", optimizer_put}, {"rng", rng_put}, {"data", data_put}, {"job", job_put},
};

/* Creates group NAME under FILE and fills it. Links keep their creation order, so
 * tensors read back in the order they were written. */
static int group_put(hid_t file, const char *name, group_fill_fn fill, const struct ckpt *c) {
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    hid_t g = gcpl < 0 || H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0
                  ? H5I_INVALID_HID
                  : H5Gcreate2(file, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    int rc = g < 0 ? -1 : fill(g, c);
    if (g >= 0 && H5Gclose(g) < 0) rc = -1;
    if (gcpl >= 0) H5Pclose(gcpl);
    return rc;
}

/* Writes the whole checkpoint ARG into FILE (h5_fill_fn). */
static int ckpt_fill(hid_t file, const char *path, const void *arg) {
    const struct ckpt *c = arg;
    for (size_t i = 0; i < sizeof ckpt_groups / sizeof *ckpt_groups; i++) {
        const char *name = ckpt_groups[i].name ? ckpt_groups[i].name : c->group;
        if (!group_put(file, name, ckpt_groups[i].fill, c)) continue;
        char what[64];
        snprintf(what, sizeof what, "/%s", name);
        return h5_write_error(path, what);
    }
    if (root_put(file, c)) return h5_write_error(path, "the root attributes");
    /* Last, so that no file without it can pass for a whole one. */
    if (attr_put_i64(file, "complete", 1)) return h5_write_error(path, "the completion marker");
    return 0;
}

/* The caller's struct is well formed: these are programming errors, not user ones. */
static void ckpt_check(const struct ckpt *c) {
    CHECK(c->group && (!strcmp(c->group, "adapter") || !strcmp(c->group, "params")));
    CHECK(c->config_json && c->job_json && c->n_tensors >= 0);
    CHECK((c->m && c->v) || c->n == 0);
    CHECK(c->job || c->job_len == 0);
    for (int32_t i = 0; i < c->n_tensors; i++) {
        const struct ckpt_tensor *t = &c->tensors[i];
        CHECK(t->name && (t->ndim == 1 || t->ndim == 2) && t->shape[0] >= 0);
        CHECK(t->ndim == 1 || t->shape[1] >= 0);
    }
}

int ckpt_write(const char *path, const struct ckpt *c) {
    ckpt_check(c);
    return h5_write_atomic(path, ckpt_fill, c);
}

/* ---- reading ---- */

struct ckpt_reader {
    const char *path;
    hid_t file;
    uint64_t budget; /* bytes that datasets and strings may still take: the file size */
};

/* An open attribute or dataset, with a name for messages. */
struct h5_item {
    char what[512];
    hid_t id, type, space;
    int is_attr;
};

static int item_error(const struct ckpt_reader *r, const struct h5_item *it, const char *problem) {
    err_set(r->path, "%s %s", it->what, problem);
    return err_hint(CORRUPT_HINT);
}

static void item_close(struct h5_item *it) {
    if (it->space >= 0) H5Sclose(it->space);
    if (it->type >= 0) H5Tclose(it->type);
    if (it->id >= 0 && it->is_attr) H5Aclose(it->id);
    if (it->id >= 0 && !it->is_attr) H5Dclose(it->id);
}

/* Fills in the type and space of the just opened IT. */
static int item_describe(const struct ckpt_reader *r, struct h5_item *it) {
    if (it->id < 0) return item_error(r, it, "cannot be opened");
    it->type = it->is_attr ? H5Aget_type(it->id) : H5Dget_type(it->id);
    it->space = it->is_attr ? H5Aget_space(it->id) : H5Dget_space(it->id);
    if (it->type < 0 || it->space < 0) return item_error(r, it, "cannot be read");
    return 0;
}

/* Opens attribute NAME of object OBJ; on failure, IT needs closing all the same. */
static int item_open_attr(const struct ckpt_reader *r, struct h5_item *it, const char *obj, const char *name) {
    *it = (struct h5_item){.id = H5I_INVALID_HID, .type = H5I_INVALID_HID, .space = H5I_INVALID_HID, .is_attr = 1};
    snprintf(it->what, sizeof it->what, "attribute \"%s\" of %s", name, obj);
    if (H5Aexists_by_name(r->file, obj, name, H5P_DEFAULT) <= 0) return item_error(r, it, "is missing");
    it->id = H5Aopen_by_name(r->file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    return item_describe(r, it);
}

/* Opens dataset NAME (an absolute path); on failure, IT needs closing all the same. */
static int item_open_dset(const struct ckpt_reader *r, struct h5_item *it, const char *name) {
    *it = (struct h5_item){.id = H5I_INVALID_HID, .type = H5I_INVALID_HID, .space = H5I_INVALID_HID};
    snprintf(it->what, sizeof it->what, "%s", name);
    /* H5Lexists fails, rather than saying no, when a parent group is missing. */
    if (H5Lexists(r->file, name, H5P_DEFAULT) <= 0) return item_error(r, it, "is missing");
    it->id = H5Dopen2(r->file, name, H5P_DEFAULT);
    return item_describe(r, it);
}

/* Reserves COUNT elements of SIZE bytes from the reader's budget. */
static int item_take(struct ckpt_reader *r, const struct h5_item *it, uint64_t count, size_t size) {
    if (size == 0 || count > r->budget / size) return item_error(r, it, "claims more bytes than the file holds");
    r->budget -= count * size;
    return 0;
}

/* Reads all of IT as MEM_TYPE into BUF. */
static int item_load(const struct ckpt_reader *r, const struct h5_item *it, hid_t mem_type, void *buf) {
    if (H5Sget_simple_extent_npoints(it->space) == 0) return 0;
    herr_t rc = it->is_attr ? H5Aread(it->id, mem_type, buf)
                            : H5Dread(it->id, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (rc >= 0) return 0;
    /* A failed Fletcher32 check surfaces as an error of the filter pipeline. */
    if (!h5_error_is(H5E_PLINE)) return item_error(r, it, "cannot be read");
    err_set(r->path, "checksum mismatch in %s", it->what);
    return err_hint(CORRUPT_HINT);
}

/* One value of the class of MEM_TYPE, read into OUT. */
static int scalar_load(const struct ckpt_reader *r, const struct h5_item *it, hid_t mem_type, void *out) {
    if (H5Tget_class(it->type) != H5Tget_class(mem_type) || H5Sget_simple_extent_npoints(it->space) != 1)
        return item_error(r, it, "has the wrong type or shape");
    return item_load(r, it, mem_type, out);
}

/* One fixed-length string, into a new NUL-terminated buffer *OUT. */
static int str_load(struct ckpt_reader *r, const struct h5_item *it, char **out) {
    size_t size = H5Tget_size(it->type);
    if (H5Tget_class(it->type) != H5T_STRING || H5Tis_variable_str(it->type) != 0 || size == 0 ||
        H5Sget_simple_extent_npoints(it->space) != 1)
        return item_error(r, it, "is not a fixed-length string");
    if (item_take(r, it, size, 1)) return -1;
    char *s = xmalloc(size + 1);
    s[size] = '\0';
    if (item_load(r, it, it->type, s)) {
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* An array of rank 1 to MAX_RANK with the class and size of MEM_TYPE, into a new
 * buffer *OUT; its dimensions go to DIMS (H5S_MAX_RANK entries). */
static int array_load(struct ckpt_reader *r, const struct h5_item *it, hid_t mem_type, int max_rank, int *rank,
                      hsize_t *dims, void **out) {
    size_t size = H5Tget_size(mem_type);
    *rank = H5Sget_simple_extent_ndims(it->space);
    if (H5Tget_class(it->type) != H5Tget_class(mem_type) || H5Tget_size(it->type) != size || *rank < 1 ||
        *rank > max_rank || H5Sget_simple_extent_dims(it->space, dims, NULL) < 0)
        return item_error(r, it, "has the wrong type or shape");
    hssize_t count = H5Sget_simple_extent_npoints(it->space);
    if (count < 0 || item_take(r, it, (uint64_t)count, size)) return -1;
    void *buf = xmalloc((size_t)count * size);
    if (item_load(r, it, mem_type, buf)) {
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

/* Attribute NAME of OBJ: one value of the class of MEM_TYPE. */
static int attr_get(struct ckpt_reader *r, const char *obj, const char *name, hid_t mem_type, void *out) {
    struct h5_item it;
    int rc = item_open_attr(r, &it, obj, name) ? -1 : scalar_load(r, &it, mem_type, out);
    item_close(&it);
    return rc;
}

static int attr_get_i64(struct ckpt_reader *r, const char *obj, const char *name, int64_t *out) {
    return attr_get(r, obj, name, H5T_NATIVE_INT64, out);
}

/* Like attr_get_i64, and the value must not be negative. */
static int attr_get_count(struct ckpt_reader *r, const char *obj, const char *name, int64_t *out) {
    if (attr_get_i64(r, obj, name, out)) return -1;
    if (*out >= 0) return 0;
    err_set(r->path, "attribute \"%s\" of %s is negative (%" PRId64 ")", name, obj, *out);
    return err_hint(CORRUPT_HINT);
}

static int attr_get_str(struct ckpt_reader *r, const char *obj, const char *name, char **out) {
    struct h5_item it;
    int rc = item_open_attr(r, &it, obj, name) ? -1 : str_load(r, &it, out);
    item_close(&it);
    return rc;
}

static int dset_get_str(struct ckpt_reader *r, const char *name, char **out) {
    struct h5_item it;
    int rc = item_open_dset(r, &it, name) ? -1 : str_load(r, &it, out);
    item_close(&it);
    return rc;
}

static int dset_get_array(struct ckpt_reader *r, const char *name, hid_t mem_type, int max_rank, int *rank,
                          hsize_t *dims, void **out) {
    struct h5_item it;
    int rc = item_open_dset(r, &it, name) ? -1 : array_load(r, &it, mem_type, max_rank, rank, dims, out);
    item_close(&it);
    return rc;
}

/* A 1-D array dataset NAME; its length goes to *N. */
static int dset_get_vector(struct ckpt_reader *r, const char *name, hid_t mem_type, uint64_t *n, void **out) {
    int rank;
    hsize_t dims[H5S_MAX_RANK];
    if (dset_get_array(r, name, mem_type, 1, &rank, dims, out)) return -1;
    *n = dims[0];
    return 0;
}

/* The completion marker and the format version, before anything else. */
static int marker_get(struct ckpt_reader *r) {
    int64_t complete = 0, version = 0;
    if (attr_get_i64(r, "/", "complete", &complete) || complete != 1) {
        err_set(r->path, "incomplete checkpoint: no completion marker");
        return err_hint("its writing was cut short; --resume auto falls back to an older checkpoint");
    }
    if (attr_get_i64(r, "/", "format_version", &version)) return -1;
    if (version == CKPT_FORMAT_VERSION) return 0;
    err_set(r->path, "checkpoint format version %" PRId64 ", this lorad reads version %d", version,
            CKPT_FORMAT_VERSION);
    return err_hint(VERSION_HINT);
}

static int root_get(struct ckpt_reader *r, struct ckpt *c) {
    int64_t world_size;
    if (attr_get_count(r, "/", "step", &c->step) || attr_get_i64(r, "/", "world_size", &world_size) ||
        attr_get(r, "/", "wall_time", H5T_NATIVE_DOUBLE, &c->wall_time) ||
        attr_get(r, "/", "loss", H5T_NATIVE_DOUBLE, &c->loss) ||
        attr_get(r, "/", "base_fingerprint", H5T_NATIVE_UINT64, &c->fingerprint))
        return -1;
    if (world_size < 1 || world_size > INT32_MAX) {
        err_set(r->path, "world size %" PRId64 " is out of range", world_size);
        return err_hint(CORRUPT_HINT);
    }
    c->world_size = (int32_t)world_size;
    return 0;
}

/* Which of /adapter and /params the file holds: exactly one. */
static int group_get(struct ckpt_reader *r, struct ckpt *c) {
    int adapter = H5Lexists(r->file, "adapter", H5P_DEFAULT) > 0;
    int params = H5Lexists(r->file, "params", H5P_DEFAULT) > 0;
    if (adapter != params) {
        c->group = xstrdup(adapter ? "adapter" : "params");
        return 0;
    }
    err_set(r->path, adapter ? "holds both /adapter and /params" : "holds neither /adapter nor /params");
    return err_hint("the file is not a lorad checkpoint, or it is corrupt");
}

/* Where H5Literate puts the tensor names: C->tensors has room for CAP. */
struct tensor_names {
    struct ckpt *c;
    int32_t cap;
};

/* H5Literate callback: the next tensor's name. Only hard links count: a soft or
 * external link could point anywhere, even into another file. */
static herr_t tensor_name_add(hid_t g, const char *name, const H5L_info_t *info, void *arg) {
    (void)g;
    struct tensor_names *tn = arg;
    if (info->type != H5L_TYPE_HARD || tn->c->n_tensors == tn->cap) return -1;
    tn->c->tensors[tn->c->n_tensors++].name = xstrdup(name);
    return 0;
}

/* The iteration order of G's links: creation order when it was tracked, as lorad
 * does; name order for a file written otherwise. */
static H5_index_t group_order(hid_t g) {
    hid_t gcpl = H5Gget_create_plist(g);
    unsigned flags = 0;
    if (gcpl >= 0) {
        if (H5Pget_link_creation_order(gcpl, &flags) < 0) flags = 0;
        H5Pclose(gcpl);
    }
    return flags & H5P_CRT_ORDER_TRACKED ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
}

/* Allocates C->tensors for the links in group G and fills in their names. */
static int tensor_names_get(struct ckpt_reader *r, hid_t g, const char *obj, struct ckpt *c) {
    H5G_info_t info;
    /* Every link takes bytes in the file: a larger count is corrupt metadata. */
    if (H5Gget_info(g, &info) < 0 || info.nlinks > INT32_MAX || info.nlinks > r->budget) {
        err_set(r->path, "cannot list the tensors in %s", obj);
        return err_hint(CORRUPT_HINT);
    }
    c->tensors = xcalloc(info.nlinks, sizeof *c->tensors);
    struct tensor_names tn = {c, (int32_t)info.nlinks};
    if (H5Literate(g, group_order(g), H5_ITER_INC, NULL, tensor_name_add, &tn) >= 0 &&
        (hsize_t)c->n_tensors == info.nlinks)
        return 0;
    err_set(r->path, "cannot list the tensors in %s", obj);
    return err_hint("every member of %s must be a float dataset; %s", obj, CORRUPT_HINT);
}

/* Tensor T (its name known) from the group OBJ. */
static int tensor_get(struct ckpt_reader *r, const char *obj, struct ckpt_tensor *t) {
    size_t n = strlen(obj) + strlen(t->name) + 2;
    char *name = xmalloc(n);
    snprintf(name, n, "%s/%s", obj, t->name);
    int rank;
    hsize_t dims[H5S_MAX_RANK];
    void *data = NULL;
    int rc = dset_get_array(r, name, H5T_NATIVE_FLOAT, 2, &rank, dims, &data);
    free(name);
    if (rc) return -1;
    t->data = data;
    t->ndim = rank;
    for (int k = 0; k < rank; k++) t->shape[k] = (int64_t)dims[k];
    return 0;
}

/* /adapter or /params: the config and every tensor, in the order written. */
static int tensors_get(struct ckpt_reader *r, struct ckpt *c) {
    if (group_get(r, c)) return -1;
    char obj[16];
    snprintf(obj, sizeof obj, "/%s", c->group);
    if (attr_get_str(r, obj, "config", &c->config_json)) return -1;
    hid_t g = H5Gopen2(r->file, obj, H5P_DEFAULT);
    if (g < 0) {
        err_set(r->path, "%s is not a group", obj);
        return err_hint(CORRUPT_HINT);
    }
    int rc = tensor_names_get(r, g, obj, c);
    H5Gclose(g);
    for (int32_t i = 0; i < c->n_tensors && !rc; i++) rc = tensor_get(r, obj, &c->tensors[i]);
    return rc;
}

static int optimizer_get(struct ckpt_reader *r, struct ckpt *c) {
    uint64_t n_v;
    void *m = NULL, *v = NULL;
    int64_t step;
    if (dset_get_vector(r, "/optimizer/m", H5T_NATIVE_FLOAT, &c->n, &m)) return -1;
    c->m = m;
    if (dset_get_vector(r, "/optimizer/v", H5T_NATIVE_FLOAT, &n_v, &v)) return -1;
    c->v = v;
    if (n_v != c->n) {
        err_set(r->path, "/optimizer/m has %" PRIu64 " entries but /optimizer/v has %" PRIu64, c->n, n_v);
        return err_hint(CORRUPT_HINT);
    }
    if (attr_get_i64(r, "/optimizer", "step", &step) || attr_get(r, "/optimizer", "lr", H5T_NATIVE_DOUBLE, &c->lr))
        return -1;
    if (step == c->step) return 0;
    err_set(r->path, "the optimizer is at step %" PRId64 " but the checkpoint at step %" PRId64, step, c->step);
    return err_hint(CORRUPT_HINT);
}

static int rng_get(struct ckpt_reader *r, struct ckpt *c) {
    char *scheme;
    if (attr_get(r, "/rng", "seed", H5T_NATIVE_UINT64, &c->seed) || attr_get_str(r, "/rng", "scheme", &scheme))
        return -1;
    int same = !strcmp(scheme, CKPT_RNG_SCHEME);
    if (!same) err_set(r->path, "written with RNG scheme \"%s\", but this lorad uses \"%s\"", scheme, CKPT_RNG_SCHEME);
    free(scheme);
    return same ? 0 : err_hint(VERSION_HINT);
}

static int data_get(struct ckpt_reader *r, struct ckpt *c) {
    return attr_get_count(r, "/data", "samples", &c->samples) || attr_get_count(r, "/data", "tokens", &c->tokens) ||
                   attr_get_count(r, "/data", "n_samples", &c->n_samples)
               ? -1
               : 0;
}

static int job_get(struct ckpt_reader *r, struct ckpt *c) {
    uint64_t n;
    void *job = NULL;
    if (dset_get_vector(r, "/job/spec", H5T_NATIVE_UINT8, &n, &job)) return -1;
    c->job = job;
    c->job_len = (size_t)n;
    return dset_get_str(r, "/job/json", &c->job_json);
}

/* Opens R->path read-only, telling a missing, foreign or truncated file apart. */
static int reader_open(struct ckpt_reader *r) {
    struct stat st;
    if (stat(r->path, &st)) return err_set(r->path, "cannot open: %s", strerror(errno));
    if (!S_ISREG(st.st_mode)) return err_set(r->path, "not a regular file");
    /* Negative (cannot tell) falls through to H5Fopen, which says why. */
    if (H5Fis_hdf5(r->path) == 0) {
        err_set(r->path, "not an HDF5 file");
        return err_hint("expected a checkpoint written by lorad");
    }
    r->file = H5Fopen(r->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file >= 0) {
        r->budget = (uint64_t)st.st_size;
        return 0;
    }
    if (h5_error_is(H5E_TRUNCATED)) {
        err_set(r->path, "the file is truncated");
        return err_hint(CORRUPT_HINT);
    }
    err_set(r->path, "cannot open as HDF5");
    return err_hint("the file is corrupt, or its filesystem has no file locks: then set HDF5_USE_FILE_LOCKING=FALSE");
}

int ckpt_read(const char *path, struct ckpt *c) {
    memset(c, 0, sizeof *c);
    h5_quiet();
    struct ckpt_reader r = {.path = path, .file = H5I_INVALID_HID};
    int rc = reader_open(&r);
    if (!rc)
        rc = marker_get(&r) || root_get(&r, c) || tensors_get(&r, c) || optimizer_get(&r, c) || rng_get(&r, c) ||
                     data_get(&r, c) || job_get(&r, c)
                 ? -1
                 : 0;
    if (r.file >= 0) H5Fclose(r.file);
    if (rc) ckpt_free(c);
    return rc;
}

void ckpt_free(struct ckpt *c) {
    for (int32_t i = 0; i < c->n_tensors; i++) {
        free(c->tensors[i].name);
        free(c->tensors[i].data);
    }
    free(c->tensors);
    free(c->group);
    free(c->config_json);
    free(c->m);
    free(c->v);
    free(c->job);
    free(c->job_json);
    memset(c, 0, sizeof *c);
}
