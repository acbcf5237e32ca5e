/*
 * fileio.h: small file helpers shared by every writer: atomic replacement of a file
 * (write to PATH.tmp.PID, fsync, rename, fsync the directory) and whole-file reads.
 */
#ifndef LORAD_FILEIO_H
#define LORAD_FILEIO_H

#include <stddef.h>

/* Writes N bytes to PATH atomically. Returns 0, or -1 with an error naming PATH. */
int file_write_atomic(const char *path, const void *data, size_t n);
/* Reads the whole file into a NUL-terminated buffer (*len excludes the NUL).
 * Returns NULL with an error naming PATH. The caller frees. */
char *file_read_all(const char *path, size_t *len);
/* mkdir -p with mode 0755; -1 with an error naming PATH. */
int dir_make(const char *path);
/* fsyncs the directory holding PATH (after a rename). */
int dir_sync_parent(const char *path);

#endif
