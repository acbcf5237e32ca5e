/*
 * h5io.h: HDF5 helpers shared by the storage writers and readers: quiet error
 * handling, atomic creation of a whole HDF5 file (temporary name, flush, fsync,
 * rename, fsync of the directory, as file_atomic_* in fileio.h), chunked,
 * Fletcher32-checksummed array datasets, and attributes.
 */
#ifndef LORAD_H5IO_H
#define LORAD_H5IO_H

#include <hdf5.h>

/* Turns off HDF5's printing of its error stack: lorad reports one line instead. */
void h5_quiet(void);
/* 1 when the HDF5 error stack of the last failed call holds CODE as its major or
 * minor error number (H5E_PLINE, H5E_TRUNCATED, ...), else 0. */
int h5_error_is(hid_t code);

/* Records "PATH: cannot write WHAT" with a hint about disk space; returns -1. */
int h5_write_error(const char *path, const char *what);

/* Fills a new HDF5 file FILE. Returns 0, or -1 with an error naming PATH. */
typedef int (*h5_fill_fn)(hid_t file, const char *path, const void *arg);
/* Creates PATH atomically: FILL(file, PATH, ARG) writes the contents into PATH.tmp.PID,
 * which is then flushed, closed, fsynced and renamed to PATH. FILL must close every
 * object it opens. On failure the temporary file is removed. Returns 0, or -1 with an
 * error naming PATH. */
int h5_write_atomic(const char *path, h5_fill_fn fill, const void *arg);
/* Writes the RANK-dimensional dataset NAME under LOC from DATA (MEM_TYPE), stored as
 * FILE_TYPE in chunks of up to 1M elements with Fletcher32 checksums. An empty array
 * is stored contiguous (HDF5 cannot chunk it) and DATA may then be NULL. Returns 0 or
 * -1 without recording an error: the caller names what failed. */
int h5_put_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank, const hsize_t *dims,
                 const void *data);

/* Writes attribute NAME of LOC from VALUE (MEM_TYPE), stored as FILE_TYPE: one value
 * (h5_put_attr) or a 1-D array of N (h5_put_attr_array). 0, or -1 without recording an
 * error, as h5_put_array. */
int h5_put_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *value);
int h5_put_attr_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, hsize_t n, const void *value);
/* A fixed-length, NUL-terminated UTF-8 string type just large enough for S (the caller
 * closes it), or H5I_INVALID_HID. */
hid_t h5_str_type(const char *s);
/* Writes the string S as attribute NAME of LOC (fixed length, UTF-8). As h5_put_attr. */
int h5_put_attr_str(hid_t loc, const char *name, const char *s);
/* Attribute NAME of LOC: one integer, into *OUT (h5_get_attr_i64), or one string,
 * fixed or variable length, into a new NUL-terminated *OUT the caller frees
 * (h5_get_attr_str, at most 1 MiB). 1 when read, 0 when LOC has no such attribute, -1
 * (no error recorded) when it has another type or shape or cannot be read. */
int h5_get_attr_i64(hid_t loc, const char *name, int64_t *out);
int h5_get_attr_str(hid_t loc, const char *name, char **out);

#endif
