/*
 * fileio.h: small file helpers shared by every writer: atomic replacement of a file
 * (write to PATH.tmp.PID, fsync, rename, fsync the directory), whole-file reads and
 * directory helpers.
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
/* "DIR/NAME", allocated (xmalloc); the caller frees. */
char *path_join(const char *dir, const char *name);

/* An atomic write streamed in pieces, for files too large to build in memory:
 * file_atomic_open creates PATH.tmp.PID, file_atomic_write appends to it, and
 * file_atomic_commit fsyncs, renames it to PATH and fsyncs the directory. After a
 * failed open nothing needs releasing; after a failed write call file_atomic_abort,
 * which removes the temporary file. Commit and abort both release FA (a failed commit
 * removes the temporary file too). Each returns 0, or -1 with an error naming PATH. */
struct file_atomic {
    char *path;
    char *tmp;
    int fd;
};
int file_atomic_open(struct file_atomic *fa, const char *path);
int file_atomic_write(struct file_atomic *fa, const void *data, size_t n);
int file_atomic_commit(struct file_atomic *fa);
void file_atomic_abort(struct file_atomic *fa);

#endif
