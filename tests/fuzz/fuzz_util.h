/*
 * fuzz_util.h: helpers shared by the libFuzzer targets in tests/fuzz.
 *
 * lorad's readers take paths, so a target hands them its input through a file:
 *   - fuzz_memfd_path(): an in-memory file (memfd) rewritten with the input on every
 *     run, named /proc/self/fd/N, which open(), stat() and mmap() treat as a regular file;
 *   - fuzz_dir_with(): a scratch directory (under /dev/shm when it exists) holding the
 *     input under a given name, for readers that take a directory (config.json,
 *     adapter_config.json); fuzz_path_with() names that file itself (libhdf5 cannot
 *     open a memfd through /proc/self/fd). It is removed when the fuzzer exits normally.
 * FUZZ_REQUIRE() aborts, which libFuzzer reports as a crash with the input saved, when
 * a reader breaks one of its promises (its output disagrees with the input bytes).
 * Include this header before any system header: memfd_create needs _GNU_SOURCE.
 */
#ifndef LORAD_FUZZ_UTIL_H
#define LORAD_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_REQUIRE(cond)                                                                  \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "fuzz: invariant broken at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* Set-up failures of the harness itself (not findings): print and exit. */
static inline void fuzz_die(const char *what) {
    fprintf(stderr, "fuzz harness: %s: %s\n", what, strerror(errno));
    _exit(1);
}

static inline void fuzz_write_fd(int fd, const uint8_t *data, size_t size) {
    if (ftruncate(fd, 0) != 0) fuzz_die("ftruncate");
    size_t done = 0;
    while (done < size) {
        ssize_t k = pwrite(fd, data + done, size - done, (off_t)done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) fuzz_die("pwrite");
        done += (size_t)k;
    }
}

/* The path of an in-memory file that holds exactly DATA. */
static inline const char *fuzz_memfd_path(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("lorad-fuzz", MFD_CLOEXEC);
        if (fd < 0) fuzz_die("memfd_create");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    fuzz_write_fd(fd, data, size);
    return path;
}

static char fuzz_dir[256];
static char fuzz_dir_file[512];

static inline void fuzz_dir_remove(void) {
    if (fuzz_dir_file[0]) unlink(fuzz_dir_file);
    if (fuzz_dir[0]) rmdir(fuzz_dir);
}

/* A scratch directory holding DATA as the file NAME (the same NAME on every call). */
static inline const char *fuzz_dir_with(const char *name, const uint8_t *data, size_t size) {
    if (!fuzz_dir[0]) {
        struct stat sb;
        const char *base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0
                               ? "/dev/shm"
                               : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/lorad-fuzz-XXXXXX", base);
        if (!mkdtemp(fuzz_dir)) fuzz_die("mkdtemp");
        snprintf(fuzz_dir_file, sizeof fuzz_dir_file, "%s/%s", fuzz_dir, name);
        atexit(fuzz_dir_remove);
    }
    int fd = open(fuzz_dir_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) fuzz_die("open");
    fuzz_write_fd(fd, data, size);
    close(fd);
    return fuzz_dir;
}

/* The path of a file NAME in the scratch directory that holds exactly DATA. */
static inline const char *fuzz_path_with(const char *name, const uint8_t *data, size_t size) {
    fuzz_dir_with(name, data, size);
    return fuzz_dir_file;
}

/* Little-endian loads from the input bytes, for the targets' own expectations. */
static inline uint32_t fuzz_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
