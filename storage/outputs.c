/*
 * outputs.c: finding and removing a command's own output files (outputs.h).
 */
#include "outputs.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

/* What EACH is called with: the entry's path and its path relative to the output. */
typedef int (*entry_fn)(void *ctx, const char *path, const char *rel);

/* Calls EACH on every entry of DIR/SUB whose name matches GLOB; -1 when EACH fails. */
static int entries_walk(const char *dir, const char *sub, const char *glob, entry_fn each, void *ctx) {
    char *where = sub[0] ? path_join(dir, sub) : xstrdup(dir);
    DIR *d = opendir(where);
    int rc = 0;
    for (struct dirent *e; d && rc == 0 && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || fnmatch(glob, e->d_name, FNM_PERIOD)) continue;
        char *path = path_join(where, e->d_name);
        char *rel = sub[0] ? path_join(sub, e->d_name) : xstrdup(e->d_name);
        rc = each(ctx, path, rel);
        free(rel);
        free(path);
    }
    if (d) closedir(d);
    free(where);
    return rc;
}

/* Calls EACH on the entries the file patterns name (the "SUB/" ones are skipped). */
static int patterns_walk(const char *dir, const char *const *patterns, entry_fn each, void *ctx) {
    for (const char *const *p = patterns; *p; p++) {
        const char *slash = strrchr(*p, '/');
        if (slash && slash[1] == '\0') continue;
        char sub[256] = "";
        if (slash) snprintf(sub, sizeof sub, "%.*s", (int)(slash - *p), *p);
        if (entries_walk(dir, sub, slash ? slash + 1 : *p, each, ctx)) return -1;
    }
    return 0;
}

struct found {
    int count;
    char *first;
    size_t n;
};

static int found_add(void *ctx, const char *path, const char *rel) {
    (void)path;
    struct found *f = ctx;
    if (f->count++ == 0 && f->n) snprintf(f->first, f->n, "%s", rel);
    return 0;
}

int outputs_find(const char *dir, const char *const *patterns, char *first, size_t n) {
    struct found f = {0, first, n};
    if (n) first[0] = '\0';
    patterns_walk(dir, patterns, found_add, &f);
    return f.count;
}

static int entry_remove(void *ctx, const char *path, const char *rel) {
    (void)ctx;
    (void)rel;
    if (unlink(path) == 0 || errno == ENOENT) return 0;
    return err_set(path, "cannot remove: %s", strerror(errno));
}

int outputs_remove(const char *dir, const char *const *patterns) {
    if (patterns_walk(dir, patterns, entry_remove, NULL)) return -1;
    for (const char *const *p = patterns; *p; p++) {
        size_t len = strlen(*p);
        if (len < 2 || (*p)[len - 1] != '/') continue;
        char sub[256];
        snprintf(sub, sizeof sub, "%.*s", (int)(len - 1), *p);
        char *path = path_join(dir, sub);
        int gone = rmdir(path) == 0 || errno == ENOENT || errno == ENOTEMPTY || errno == EEXIST || errno == ENOTDIR;
        if (!gone) err_set(path, "cannot remove: %s", strerror(errno));
        free(path);
        if (!gone) return -1;
    }
    return 0;
}

int outputs_claim(const char *dir, const char *const *patterns, int overwrite, const char *flag, const char *what) {
    char first[256];
    int n = outputs_find(dir, patterns, first, sizeof first);
    if (n == 0 || overwrite) return 0;
    char more[48] = "";
    if (n > 1) snprintf(more, sizeof more, " and %d more", n - 1);
    err_set(flag, "%s holds %s (%s%s)", dir, what, first, more);
    return err_hint("--overwrite replaces it");
}
