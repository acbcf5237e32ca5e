/*
 * jobrec.c: job records as protobuf files (jobrec.h).
 */
#include "jobrec.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"

#define JOBREC_FILE "job.pb"

char *jobrec_dir(const char *state, uint64_t id) {
    char name[64];
    snprintf(name, sizeof name, "jobs/%" PRIu64, id);
    return path_join(state, name);
}

int jobrec_write(const char *state, const Lorad__JobRecord *r) {
    char *dir = jobrec_dir(state, r->id);
    char *path = path_join(dir, JOBREC_FILE);
    size_t n = lorad__job_record__get_packed_size(r);
    uint8_t *buf = xmalloc(n ? n : 1);
    lorad__job_record__pack(r, buf);
    int rc = dir_make(dir) || file_write_atomic(path, buf, n) ? -1 : 0;
    free(buf);
    free(path);
    free(dir);
    return rc;
}

Lorad__JobRecord *jobrec_read(const char *path, uint64_t id) {
    size_t n;
    char *bytes = file_read_all(path, &n);
    if (!bytes) return NULL;
    Lorad__JobRecord *r = lorad__job_record__unpack(NULL, n, (const uint8_t *)bytes);
    free(bytes);
    if (!r) {
        err_set(path, "is not a job record");
        err_hint("the file is damaged; move the job's directory away");
        return NULL;
    }
    if (r->id != id || !r->spec || (unsigned)r->state > LORAD__JOB_STATE__STATE_CANCELLED) {
        err_set(path, "holds job %" PRIu64 " in an unknown state or without its spec", r->id);
        lorad__job_record__free_unpacked(r, NULL);
        return NULL;
    }
    return r;
}

/* A directory name that is a job id: decimal digits without a leading zero. */
static int id_parse(const char *name, uint64_t *id) {
    if (name[0] < '1' || name[0] > '9' || strlen(name) > 19) return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(name, &end, 10);
    if (errno || *end) return 0;
    *id = v;
    return 1;
}

static int record_cmp(const void *a, const void *b) {
    uint64_t x = (*(Lorad__JobRecord *const *)a)->id, y = (*(Lorad__JobRecord *const *)b)->id;
    return x < y ? -1 : x > y;
}

int jobrec_load_all(const char *state, Lorad__JobRecord ***out, size_t *n, void (*skipped)(const char *why)) {
    *out = NULL;
    *n = 0;
    char *jobs = path_join(state, "jobs");
    DIR *d = opendir(jobs);
    if (!d && errno == ENOENT) {
        free(jobs);
        return 0;
    }
    if (!d) {
        err_set(jobs, "cannot list: %s", strerror(errno));
        free(jobs);
        return -1;
    }
    size_t cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        uint64_t id;
        if (!id_parse(e->d_name, &id)) continue;
        char *dir = path_join(jobs, e->d_name), *path = path_join(dir, JOBREC_FILE);
        Lorad__JobRecord *r = jobrec_read(path, id);
        free(path);
        free(dir);
        if (!r) {
            skipped(err_msg());
            continue;
        }
        if (*n == cap) *out = xrealloc(*out, (cap = cap ? 2 * cap : 16) * sizeof **out);
        (*out)[(*n)++] = r;
    }
    closedir(d);
    free(jobs);
    if (*n) qsort(*out, *n, sizeof **out, record_cmp);
    return 0;
}
