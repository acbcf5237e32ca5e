/*
 * error.c: the current-error line, the process-exit helpers and the "must" allocators
 * declared in error.h.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_line[1024];

int err_set(const char *thing, const char *fmt, ...) {
    int n = snprintf(err_line, sizeof err_line, "%s: ", thing);
    if (n < 0 || (size_t)n >= sizeof err_line) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_line + n, sizeof err_line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One line: a message never carries a newline out of user data. */
    for (char *c = err_line; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    return -1;
}

int err_hint(const char *fmt, ...) {
    size_t n = strlen(err_line);
    int k = snprintf(err_line + n, sizeof err_line - n, " (hint: ");
    if (k < 0 || n + (size_t)k >= sizeof err_line) return -1;
    n += (size_t)k;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_line + n, sizeof err_line - n, fmt, ap);
    va_end(ap);
    n = strlen(err_line);
    if (n + 1 < sizeof err_line) strcat(err_line, ")");
    return -1;
}

const char *err_msg(void) { return err_line; }

int err_restore(const char *line) {
    snprintf(err_line, sizeof err_line, "%s", line);
    return -1;
}

_Noreturn void err_exit(void) {
    fprintf(stderr, "lorad: %s\n", err_line[0] ? err_line : "unknown error");
    exit(LORAD_EXIT_USER);
}

_Noreturn void check_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "lorad: internal error at %s:%d: %s\n", file, line, what);
    exit(LORAD_EXIT_INTERNAL);
}

void *xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) check_fail(file, line, "out of memory");
    return p;
}

void *xcalloc_at(size_t count, size_t size, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) check_fail(file, line, "out of memory");
    return p;
}

void *xrealloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) check_fail(file, line, "out of memory");
    return q;
}

char *xstrdup_at(const char *s, const char *file, int line) {
    char *p = strdup(s);
    if (!p) check_fail(file, line, "out of memory");
    return p;
}

void *xalloc_aligned_at(size_t n, const char *file, int line) {
    size_t rounded = (n + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) check_fail(file, line, "out of memory");
    memset(p, 0, rounded ? rounded : 64);
    return p;
}
