/*
 * check.h: what every C unit test in tests/ shares, so that no test keeps its own copy.
 * Each test is one translation unit, hence the static definitions.
 *
 *   - EXPECT(cond): counts a check; when COND is false prints "FAIL file:line: cond"
 *     (with the case set in checks_case and the current error, if any) and counts a
 *     failure. It is an expression, true when the check passed.
 *   - EXPECT_ERROR(rc, path, want): RC is -1 and the current error is one line naming
 *     PATH and containing WANT. EXPECT_NO_TEMPORARIES(dir): no "*.tmp.*" file in DIR.
 *   - checks_note(ok): counts a check the test judged and reported itself.
 *   - scratch_dir(name): $LORAD_TEST_TMP/NAME (default /tmp/lorad_test/NAME), created;
 *     scratch_put(path, data, n): a file with exactly those bytes.
 *   - check_finish(): prints "<test>: ok (N checks)" or "<test>: FAILED, M of N checks
 *     failed" and returns the exit code for main, 1 on any failure.
 */
#ifndef LORAD_TESTS_CHECK_H
#define LORAD_TESTS_CHECK_H

#include "error.h"
#include "fileio.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks_run, checks_failed;
/* What the test is at, named in its FAIL lines ("" for nothing). */
static const char *checks_case = "";

static inline int checks_note(int ok) {
    checks_run++;
    checks_failed += !ok;
    return ok;
}

/* Starts a FAIL line at FILE:LINE, naming the current case when there is one. */
static inline void checks_fail_at(const char *file, int line) {
    fprintf(stderr, "FAIL %s:%d%s%s%s: ", file, line, checks_case[0] ? " (" : "", checks_case,
            checks_case[0] ? ")" : "");
}

static inline int checks_expect(int ok, const char *what, const char *file, int line) {
    if (!ok) {
        checks_fail_at(file, line);
        fprintf(stderr, "%s", what);
        if (err_msg()[0]) fprintf(stderr, " [last error: %s]", err_msg());
        fprintf(stderr, "\n");
    }
    return checks_note(ok);
}

#define EXPECT(cond) checks_expect((cond) != 0, #cond, __FILE__, __LINE__)

/* The current error is one line that names PATH and contains WANT ("" for anything). */
static inline int error_names(const char *path, const char *want) {
    const char *msg = err_msg();
    return strstr(msg, path) && strstr(msg, want) && !strchr(msg, '\n');
}

static inline int checks_error(int rc, const char *path, const char *want, const char *file, int line) {
    int ok = rc == -1 && error_names(path, want);
    if (!ok) {
        checks_fail_at(file, line);
        fprintf(stderr, "%s: rc %d, error \"%s\", wanted \"%s\"\n", path, rc, err_msg(), want);
    }
    return checks_note(ok);
}

#define EXPECT_ERROR(rc, path, want) checks_error((rc), (path), (want), __FILE__, __LINE__)

static inline int checks_no_temporaries(const char *dir, const char *file, int line) {
    DIR *d = opendir(dir);
    CHECK(d);
    int ok = 1;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strstr(e->d_name, ".tmp.")) continue;
        checks_fail_at(file, line);
        fprintf(stderr, "temporary file %s/%s left behind\n", dir, e->d_name);
        ok = 0;
    }
    closedir(d);
    return checks_note(ok);
}

#define EXPECT_NO_TEMPORARIES(dir) checks_no_temporaries((dir), __FILE__, __LINE__)

/* $LORAD_TEST_TMP/NAME (/tmp/lorad_test/NAME when unset or empty), created with its
 * parents. The same static buffer on every call; exits 1 when it cannot be made. */
static inline const char *scratch_dir(const char *name) {
    static char dir[4096];
    const char *base = getenv("LORAD_TEST_TMP");
    snprintf(dir, sizeof dir, "%s/%s", base && base[0] ? base : "/tmp/lorad_test", name);
    if (dir_make(dir) != 0) {
        fprintf(stderr, "FAIL: %s\n", err_msg());
        exit(1);
    }
    return dir;
}

/* PATH holds exactly the N bytes DATA (DATA may be NULL when N is 0). */
static inline void scratch_put(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(n == 0 || fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

static inline int checks_finish(const char *file) {
    const char *name = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    int len = strrchr(name, '.') ? (int)(strrchr(name, '.') - name) : (int)strlen(name);
    if (checks_failed)
        fprintf(stderr, "%.*s: FAILED, %d of %d checks failed\n", len, name, checks_failed, checks_run);
    else
        printf("%.*s: ok (%d checks)\n", len, name, checks_run);
    return checks_failed != 0;
}

/* The summary line of the test this is included in; returns main's exit code. */
#define check_finish() checks_finish(__FILE__)

#endif
