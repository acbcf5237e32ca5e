/*
 * fileio.c: atomic file replacement (temporary file, fsync, rename, fsync of the
 * directory), whole-file reads, mkdir -p and path joining, as declared in fileio.h.
 */
#include "fileio.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Writes all N bytes to FD, retrying short writes and interrupts. */
static int fd_write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void file_atomic_release(struct file_atomic *fa) {
    free(fa->path);
    free(fa->tmp);
    fa->path = fa->tmp = NULL;
    fa->fd = -1;
}

int file_atomic_open(struct file_atomic *fa, const char *path) {
    size_t n = strlen(path) + 32;
    fa->tmp = xmalloc(n);
    snprintf(fa->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    fa->fd = open(fa->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fa->fd < 0) {
        err_set(path, "cannot create %s: %s", fa->tmp, strerror(errno));
        free(fa->tmp);
        fa->tmp = NULL;
        return -1;
    }
    fa->path = xstrdup(path);
    return 0;
}

int file_atomic_write(struct file_atomic *fa, const void *data, size_t n) {
    if (fd_write_all(fa->fd, data, n) != 0) return err_set(fa->path, "write failed: %s", strerror(errno));
    return 0;
}

void file_atomic_abort(struct file_atomic *fa) {
    close(fa->fd);
    unlink(fa->tmp);
    file_atomic_release(fa);
}

int file_atomic_commit(struct file_atomic *fa) {
    if (fsync(fa->fd) != 0) {
        err_set(fa->path, "fsync failed: %s", strerror(errno));
        file_atomic_abort(fa);
        return -1;
    }
    int closed = close(fa->fd);
    fa->fd = -1;
    if (closed != 0 || rename(fa->tmp, fa->path) != 0) {
        err_set(fa->path, "cannot replace the file: %s", strerror(errno));
        unlink(fa->tmp);
        file_atomic_release(fa);
        return -1;
    }
    int rc = dir_sync_parent(fa->path);
    file_atomic_release(fa);
    return rc;
}

int file_write_atomic(const char *path, const void *data, size_t n) {
    struct file_atomic fa;
    if (file_atomic_open(&fa, path) != 0) return -1;
    if (file_atomic_write(&fa, data, n) != 0) {
        file_atomic_abort(&fa);
        return -1;
    }
    return file_atomic_commit(&fa);
}

/* Reads FD to its end into a NUL-terminated buffer. SIZE_HINT (the file size, when
 * known) sizes the buffer with room for the NUL and the read that sees the end. */
static char *fd_read_all(int fd, size_t size_hint, size_t *len) {
    size_t cap = size_hint + 2, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 == cap) buf = xrealloc(buf, cap *= 2);
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            free(buf);
            return NULL;
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *file_read_all(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(path, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb;
    char *buf = NULL;
    if (fstat(fd, &sb) != 0)
        err_set(path, "cannot stat: %s", strerror(errno));
    else if (S_ISDIR(sb.st_mode))
        err_set(path, "is a directory, expected a file");
    else if (!(buf = fd_read_all(fd, S_ISREG(sb.st_mode) ? (size_t)sb.st_size : 4096, len)))
        err_set(path, "read failed: %s", strerror(errno));
    close(fd);
    return buf;
}

/* mkdir of one level; an existing directory is fine. */
static int dir_make_one(const char *dir, const char *path) {
    struct stat sb;
    if (mkdir(dir, 0755) == 0) return 0;
    int e = errno;
    if (e == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return 0;
    if (e == EEXIST) return err_set(path, "%s exists and is not a directory", dir);
    return err_set(path, "cannot create directory %s: %s", dir, strerror(e));
}

int dir_make(const char *path) {
    if (!path[0]) return err_set("\"\"", "the directory path is empty");
    char *p = xstrdup(path);
    int rc = 0;
    /* Create each prefix ending before a '/', then the whole path. */
    for (char *c = p + 1; rc == 0; c++) {
        if (*c != '/' && *c != '\0') continue;
        char saved = *c;
        *c = '\0';
        rc = dir_make_one(p, path);
        *c = saved;
        if (!saved) break;
    }
    free(p);
    return rc;
}

int dir_sync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrdup(path) : xstrdup(".");
    if (slash) dir[slash == path ? 1 : slash - path] = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0) {
        rc = err_set(path, "cannot open directory %s: %s", dir, strerror(errno));
    } else {
        /* Some file systems cannot fsync a directory (EINVAL); the rename still stands. */
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = err_set(path, "cannot fsync directory %s: %s", dir, strerror(errno));
        close(fd);
    }
    free(dir);
    return rc;
}
