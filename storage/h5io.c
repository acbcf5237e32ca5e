/*
 * h5io.c: HDF5 helpers shared by the storage formats (h5io.h): quiet errors and a
 * look into the error stack, atomic file creation on top of file_atomic_*, and
 * chunked, checksummed array datasets.
 */
#include "h5io.h"

#include "error.h"
#include "fileio.h"

#include <stdlib.h>
#include <string.h>

#define H5_CHUNK ((hsize_t)1 << 20)       /* elements per chunk */
#define H5_ATTR_STR_MAX ((size_t)1 << 20) /* h5_get_attr_str refuses longer fixed-length strings */

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

struct h5_error_query {
    hid_t code;
    int found;
};

static herr_t h5_error_match(unsigned n, const H5E_error2_t *e, void *arg) {
    (void)n;
    struct h5_error_query *q = arg;
    q->found |= e->maj_num == q->code || e->min_num == q->code;
    return 0;
}

int h5_error_is(hid_t code) {
    struct h5_error_query q = {code, 0};
    return H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_error_match, &q) >= 0 && q.found;
}

int h5_write_error(const char *path, const char *what) {
    err_set(path, "cannot write %s", what);
    return err_hint("check that the disk has free space");
}

/* Creates TMP, fills it and closes it; errors name PATH. */
static int h5_write_file(const char *tmp, const char *path, h5_fill_fn fill, const void *arg) {
    /* With "semi" close, H5Fclose fails when FILL left an object open instead of
     * silently deferring the close until after the rename. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t f = fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_SEMI) < 0
                  ? H5I_INVALID_HID
                  : H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    if (f < 0) {
        err_set(path, "cannot create %s as HDF5", tmp);
        return err_hint("if its filesystem has no file locks, set HDF5_USE_FILE_LOCKING=FALSE");
    }
    int rc = fill(f, path, arg);
    if (!rc && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = h5_write_error(path, tmp);
    /* A failed FILL keeps its own, more specific, error. */
    if (H5Fclose(f) < 0 && !rc) rc = h5_write_error(path, tmp);
    return rc;
}

int h5_write_atomic(const char *path, h5_fill_fn fill, const void *arg) {
    h5_quiet();
    struct file_atomic fa;
    if (file_atomic_open(&fa, path)) return -1;
    /* HDF5 writes the temporary file by name; the commit's fsync through fa.fd covers
     * the same file. */
    if (h5_write_file(fa.tmp, path, fill, arg)) {
        file_atomic_abort(&fa);
        return -1;
    }
    return file_atomic_commit(&fa);
}

/* Chunk dimensions for DIMS: whole trailing dimensions while they fit in H5_CHUNK
 * elements, then as many rows of the next one as fit (at least one). */
static void h5_chunk_dims(int rank, const hsize_t *dims, hsize_t *chunk) {
    hsize_t room = H5_CHUNK;
    for (int i = rank - 1; i >= 0; i--) {
        chunk[i] = dims[i] < room ? dims[i] : room;
        room /= chunk[i];
        if (room == 0) room = 1;
    }
}

/* A dataset creation list: chunked with Fletcher32, or the default when DIMS has a
 * zero (HDF5 needs chunks of at least one element per dimension). */
static hid_t h5_array_dcpl(int rank, const hsize_t *dims) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[H5S_MAX_RANK];
    int empty = 0;
    for (int i = 0; i < rank; i++) empty |= dims[i] == 0;
    if (dcpl < 0 || empty) return dcpl;
    h5_chunk_dims(rank, dims, chunk);
    if (H5Pset_chunk(dcpl, rank, chunk) >= 0 && H5Pset_fletcher32(dcpl) >= 0) return dcpl;
    H5Pclose(dcpl);
    return H5I_INVALID_HID;
}

int h5_put_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank, const hsize_t *dims,
                 const void *data) {
    CHECK(rank >= 1 && rank <= H5S_MAX_RANK);
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = h5_array_dcpl(rank, dims);
    hid_t d = space < 0 || dcpl < 0 ? H5I_INVALID_HID
                                    : H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int rc = d < 0 ? -1 : 0;
    if (!rc && H5Sget_simple_extent_npoints(space) > 0)
        rc = H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (d >= 0 && H5Dclose(d) < 0) rc = -1;
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return rc;
}

/* Attribute NAME of LOC in SPACE (closed here), from VALUE. */
static int h5_attr_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, hid_t space, const void *value) {
    hid_t a = space < 0 ? H5I_INVALID_HID : H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, mem_type, value) < 0 ? -1 : 0;
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    if (space >= 0) H5Sclose(space);
    return rc;
}

int h5_put_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *value) {
    return h5_attr_write(loc, name, file_type, mem_type, H5Screate(H5S_SCALAR), value);
}

int h5_put_attr_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, hsize_t n, const void *value) {
    return h5_attr_write(loc, name, file_type, mem_type, H5Screate_simple(1, &n, NULL), value);
}

hid_t h5_str_type(const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && H5Tset_size(t, strlen(s) + 1) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0) return t;
    if (t >= 0) H5Tclose(t);
    return H5I_INVALID_HID;
}

int h5_put_attr_str(hid_t loc, const char *name, const char *s) {
    hid_t t = h5_str_type(s);
    int rc = t < 0 ? -1 : h5_put_attr(loc, name, t, t, s);
    if (t >= 0) H5Tclose(t);
    return rc;
}

/* Opens attribute NAME of LOC when it holds one value of class CLS: 1 with *A and *TYPE
 * open, 0 when absent, -1 otherwise. */
static int h5_attr_open(hid_t loc, const char *name, H5T_class_t cls, hid_t *a, hid_t *type) {
    htri_t exists = H5Aexists(loc, name);
    if (exists <= 0) return exists < 0 ? -1 : 0;
    *a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t space = *a < 0 ? H5I_INVALID_HID : H5Aget_space(*a);
    *type = *a < 0 ? H5I_INVALID_HID : H5Aget_type(*a);
    int ok = space >= 0 && *type >= 0 && H5Sget_simple_extent_npoints(space) == 1 && H5Tget_class(*type) == cls;
    if (space >= 0) H5Sclose(space);
    if (ok) return 1;
    if (*type >= 0) H5Tclose(*type);
    if (*a >= 0) H5Aclose(*a);
    return -1;
}

int h5_get_attr_i64(hid_t loc, const char *name, int64_t *out) {
    hid_t a, type;
    int rc = h5_attr_open(loc, name, H5T_INTEGER, &a, &type);
    if (rc <= 0) return rc;
    if (H5Aread(a, H5T_NATIVE_INT64, out) < 0) rc = -1;
    H5Tclose(type);
    H5Aclose(a);
    return rc;
}

/* A variable-length string attribute A, copied into *OUT. */
static int h5_attr_read_vlen(hid_t a, char **out) {
    char *s = NULL;
    hid_t mem = H5Tcopy(H5T_C_S1);
    int rc = mem >= 0 && H5Tset_size(mem, H5T_VARIABLE) >= 0 && H5Aread(a, mem, &s) >= 0 && s ? 1 : -1;
    if (rc == 1) *out = xstrdup(s);
    if (s) H5free_memory(s);
    if (mem >= 0) H5Tclose(mem);
    return rc;
}

int h5_get_attr_str(hid_t loc, const char *name, char **out) {
    hid_t a, type;
    int rc = h5_attr_open(loc, name, H5T_STRING, &a, &type);
    if (rc <= 0) return rc;
    if (H5Tis_variable_str(type) > 0) {
        rc = h5_attr_read_vlen(a, out);
    } else {
        size_t size = H5Tget_size(type);
        char *s = size && size <= H5_ATTR_STR_MAX ? xcalloc(size + 1, 1) : NULL;
        rc = s && H5Aread(a, type, s) >= 0 ? 1 : -1;
        if (rc == 1) *out = s;
        else free(s);
    }
    H5Tclose(type);
    H5Aclose(a);
    return rc;
}
