/*
 * error.h: how every layer of lorad reports failure.
 *
 * Two kinds of failure:
 *   - User errors (bad flags, files, data): a function records one line with err_set()
 *     and returns -1. The caller passes -1 up; the process entry prints
 *     "lorad: <thing>: <problem> (hint: ...)" with err_exit() and exits 2. Nothing
 *     below daemon/ exits on a user error, so a daemon can fail one job and go on.
 *   - Internal failures (allocation, impossible states, I/O that cannot fail): the
 *     CHECK macros print file and line and exit 3.
 *
 * Allocation comes in a "try" form (plain malloc, may return NULL) and a "must" form
 * (xmalloc/xcalloc/xrealloc/xstrdup), which fail through CHECK.
 */
#ifndef LORAD_ERROR_H
#define LORAD_ERROR_H

#include <stddef.h>

#define LORAD_EXIT_USER 2     /* bad flags, files or data */
#define LORAD_EXIT_INTERNAL 3 /* a CHECK failed */

/* Records "thing: problem" as the current error and returns -1. */
int err_set(const char *thing, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends " (hint: ...)" to the current error and returns -1. */
int err_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The current error line, "" when none. */
const char *err_msg(void);
/* Makes LINE (an err_msg() saved on another thread) the current error; returns -1. */
int err_restore(const char *line);
/* Prints "lorad: <current error>" to stderr and exits LORAD_EXIT_USER. */
_Noreturn void err_exit(void);
/* What CHECK calls on failure: prints the place and exits LORAD_EXIT_INTERNAL. */
_Noreturn void check_fail(const char *file, int line, const char *what);

/* Internal invariant: on failure prints "lorad: internal error at FILE:LINE: expr". */
#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) check_fail(__FILE__, __LINE__, #cond);                             \
    } while (0)

void *xmalloc_at(size_t n, const char *file, int line);
void *xcalloc_at(size_t count, size_t size, const char *file, int line);
void *xrealloc_at(void *p, size_t n, const char *file, int line);
char *xstrdup_at(const char *s, const char *file, int line);
/* 64-byte aligned, zeroed; released with free(). */
void *xalloc_aligned_at(size_t n, const char *file, int line);

#define xmalloc(n) xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(c, s) xcalloc_at((c), (s), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)
#define xstrdup(s) xstrdup_at((s), __FILE__, __LINE__)
#define xalloc_aligned(n) xalloc_aligned_at((n), __FILE__, __LINE__)

#endif
