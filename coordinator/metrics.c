/*
 * metrics.c: metrics.jsonl rows (with jansson), the stderr progress line and the product
 * profile (metrics.h).
 */
#include "metrics.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "gemm.h"

/* Rewrites PATH (atomically) with only its rows of steps up to STEP. */
static int rows_keep(const char *path, int64_t step) {
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) return -1;
    size_t kept = 0;
    for (char *line = text, *next; line < text + len; line = next) {
        next = strchr(line, '\n');
        next = next ? next + 1 : text + len;
        json_t *row = json_loadb(line, (size_t)(next - line), 0, NULL);
        json_t *s = row ? json_object_get(row, "step") : NULL;
        int keep = s && json_is_integer(s) && json_integer_value(s) <= step;
        json_decref(row);
        if (!keep) continue;
        memmove(text + kept, line, (size_t)(next - line));
        kept += (size_t)(next - line);
    }
    int rc = file_write_atomic(path, text, kept);
    free(text);
    return rc;
}

static FILE *out_open(const char *dir, const char *name, const char *mode) {
    char *path = path_join(dir, name);
    FILE *f = fopen(path, mode);
    if (!f) {
        err_set(path, "cannot create");
        err_hint("check that --out is writable");
    }
    free(path);
    return f;
}

int metrics_open(struct metrics *mt, const char *out_dir, int64_t total_steps, int64_t log_every,
                 int64_t resume_step) {
    memset(mt, 0, sizeof *mt);
    char *path = path_join(out_dir, "metrics.jsonl");
    int rc = resume_step > 0 && access(path, F_OK) == 0 ? rows_keep(path, resume_step) : 0;
    free(path);
    if (rc) return -1;
    const char *mode = resume_step > 0 ? "a" : "w";
    if (!(mt->jsonl = out_open(out_dir, "metrics.jsonl", mode)) || !(mt->log = out_open(out_dir, "train.log", mode))) {
        metrics_close(mt);
        return -1;
    }
    mt->tty = isatty(STDERR_FILENO);
    mt->total_steps = total_steps;
    mt->log_every = log_every;
    return 0;
}

/* A real, or null when not finite (JSON has no NaN). */
static json_t *json_number(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static void row_write(FILE *f, const struct step_report *r) {
    json_t *row = json_object();
    json_object_set_new(row, "step", json_integer(r->step));
    json_object_set_new(row, "loss", json_number(r->loss));
    json_object_set_new(row, "lr", json_number(r->lr));
    json_object_set_new(row, "grad_norm", json_number(r->grad_norm));
    json_object_set_new(row, "tokens", json_integer(r->tokens));
    json_object_set_new(row, "target_tokens", json_integer(r->target_tokens));
    json_object_set_new(row, "allreduce_bytes", json_integer(r->allreduce_bytes));
    json_object_set_new(row, "comm_s", json_number(r->comm_s));
    json_object_set_new(row, "wait_s", json_number(r->wait_s));
    json_object_set_new(row, "tokens_per_s", json_number(r->step_s > 0 ? r->tokens / r->step_s : 0.0));
    json_object_set_new(row, "elapsed_s", json_number(r->elapsed_s));
    if (!isnan(r->val_loss)) json_object_set_new(row, "val_loss", json_number(r->val_loss));
    json_dumpf(row, f, JSON_COMPACT | JSON_REAL_PRECISION(9));
    fputc('\n', f);
    fflush(f);
    json_decref(row);
}

static void eta_format(char *buf, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

void metrics_step(struct metrics *mt, const struct step_report *r) {
    row_write(mt->jsonl, r);
    int last = r->step == mt->total_steps;
    if (!mt->tty && r->step % mt->log_every != 0 && !last && r->step != 1 && isnan(r->val_loss)) return;
    char eta[32], val[48] = "", line[256];
    eta_format(eta, sizeof eta, r->elapsed_s / r->step * (mt->total_steps - r->step));
    if (!isnan(r->val_loss)) snprintf(val, sizeof val, " | val %.4f", r->val_loss);
    snprintf(line, sizeof line, "step %lld/%lld | loss %.4f%s | lr %.2e | norm %.3f | %.0f tok/s | ETA %s",
             (long long)r->step, (long long)mt->total_steps, r->loss, val, r->lr, r->grad_norm,
             r->step_s > 0 ? r->tokens / r->step_s : 0.0, eta);
    fprintf(mt->log, "%s\n", line);
    fflush(mt->log);
    fprintf(stderr, "%s%s%s", mt->tty ? "\r\033[K" : "", line, mt->tty ? "" : "\n");
    mt->line_open = mt->tty;
    if (mt->tty && (last || !isnan(r->val_loss))) {
        fputc('\n', stderr);
        mt->line_open = 0;
    }
}

void metrics_say(struct metrics *mt, const char *fmt, ...) {
    if (mt->line_open) fputc('\n', stderr);
    mt->line_open = 0;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "lorad: %s\n", line);
    if (mt->log) {
        fprintf(mt->log, "lorad: %s\n", line);
        fflush(mt->log);
    }
}

void metrics_close(struct metrics *mt) {
    if (mt->line_open) fputc('\n', stderr);
    if (mt->jsonl) fclose(mt->jsonl);
    if (mt->log) fclose(mt->log);
    mt->jsonl = mt->log = NULL;
}

int metrics_profile(const char *out_dir, int64_t steps) {
    int n;
    const struct gemm_profile_row *rows = gemm_profile_rows(&n);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f);
    for (int i = 0; i < n; i++) {
        const struct gemm_profile_row *r = &rows[i];
        const double flops = 2.0 * r->M * r->N * r->K * (double)r->calls;
        char op[3] = {r->trans_a ? 'T' : 'N', r->trans_b ? 'T' : 'N', 0};
        json_t *row = json_pack("{s:I, s:s, s:s, s:i, s:i, s:i, s:I, s:o, s:o, s:o}", "steps", (json_int_t)steps,
                                "lib", r->lib, "op", op, "m", r->M, "n", r->N, "k", r->K, "calls",
                                (json_int_t)r->calls, "seconds", json_number(r->seconds), "convert_s",
                                json_number(r->convert_s), "gflops",
                                json_number(r->seconds > 0 ? flops / r->seconds * 1e-9 : 0.0));
        json_dumpf(row, f, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fputc('\n', f);
        json_decref(row);
    }
    fclose(f);
    char *path = path_join(out_dir, "profile.jsonl");
    int rc = file_write_atomic(path, text, len);
    free(path);
    free(text);
    return rc;
}
