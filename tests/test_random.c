/*
 * test_random.c: everything drawn from the counter RNG: LoRA's initial A (Kaiming
 * bounds and variance, Gaussian std 1/r) and B = 0, the per-epoch sample permutation,
 * and the dropout keep rate. Exits non-zero on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "linear.h"
#include "lora.h"
#include "order.h"
#include "rng.h"

/* Prints WHAT with the value GOT and the value WANT and counts the check OK. */
static void expect(int ok, const char *what, double got, double want) {
    printf("%-44s got %-12.6g want %-12.6g %s\n", what, got, want, ok ? "ok" : "FAIL");
    checks_note(ok);
}

static void stats(const float *x, size_t n, double *mean, double *std, double *absmax) {
    double s = 0, s2 = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
        if (fabs(x[i]) > m) m = fabs(x[i]);
    }
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
    *absmax = m;
}

static void test_init(int gaussian) {
    const int r = 8, in = 512, out = 300;
    struct lora_adapter ad = {.id = 3, .r = r, .in = in, .out = out};
    ad.A = xcalloc((size_t)r * in, 4);
    ad.B = xmalloc((size_t)out * r * 4);
    for (int i = 0; i < out * r; i++) ad.B[i] = 1.0f;
    lora_init(&ad, gaussian, 42);
    double mean, std, absmax;
    stats(ad.A, (size_t)r * in, &mean, &std, &absmax);
    double bound = 1.0 / sqrt(in);
    double want_std = gaussian ? 1.0 / r : bound / sqrt(3.0);
    const char *kind = gaussian ? "gaussian" : "kaiming";
    char what[64];
    snprintf(what, sizeof what, "%s A std", kind);
    expect(fabs(std - want_std) < 0.05 * want_std, what, std, want_std);
    snprintf(what, sizeof what, "%s A mean", kind);
    expect(fabs(mean) < 0.05 * want_std, what, mean, 0);
    if (!gaussian) expect(absmax <= bound && absmax > 0.99 * bound, "kaiming A within 1/sqrt(in)", absmax, bound);
    int zero = 1;
    for (int i = 0; i < out * r; i++) zero &= ad.B[i] == 0.0f;
    snprintf(what, sizeof what, "%s B is zero", kind);
    expect(zero, what, zero, 1);
    /* another adapter id draws another A; the same id the same A */
    float first = ad.A[0];
    lora_init(&ad, gaussian, 42);
    expect(ad.A[0] == first, "init deterministic", ad.A[0], first);
    ad.id = 4;
    lora_init(&ad, gaussian, 42);
    expect(ad.A[0] != first, "init differs across adapters", ad.A[0], first);
    free(ad.A);
    free(ad.B);
}

static void test_order(void) {
    const int64_t n = 1000;
    struct order o;
    order_init(&o, n, 7, 1);
    int *seen = xcalloc((size_t)n, sizeof *seen);
    int64_t fixed = 0, same_next = 0;
    for (int64_t p = 0; p < n; p++) {
        int64_t s = order_sample(&o, p);
        CHECK(s >= 0 && s < n);
        seen[s]++;
        fixed += s == p;
    }
    int perm = 1;
    for (int64_t i = 0; i < n; i++) perm &= seen[i] == 1;
    expect(perm, "epoch 0 is a permutation", perm, 1);
    expect(fixed < 10, "epoch 0 is shuffled (fixed points)", (double)fixed, 1);
    int64_t e0[10];
    for (int i = 0; i < 10; i++) e0[i] = order_sample(&o, i);
    for (int i = 0; i < 10; i++) same_next += order_sample(&o, n + i) == e0[i];
    expect(same_next < 3, "epoch 1 differs from epoch 0", (double)same_next, 0);
    int64_t back = order_sample(&o, 5);
    expect(back == e0[5], "order is a pure function of position", (double)back, (double)e0[5]);
    order_free(&o);
    order_init(&o, n, 7, 0);
    expect(order_sample(&o, 2 * n + 17) == 17, "no shuffle: position mod n", (double)order_sample(&o, 2 * n + 17), 17);
    order_free(&o);
    free(seen);
}

static void test_dropout_rate(void) {
    /* one adapter, identity-like check: with B = I-ish the kept fraction shows in u */
    const int T = 64, in = 256, r = 1, N = 2 * T;
    const struct lora_rows rows = {.n_sets = 1, .row0 = {0, N}, .dp = {{.p = 0.3f, .seed = 3, .step = 0, .first = 0, .T = T}}};
    struct lora_adapter ad = {.id = 0, .r = r, .in = in, .out = 1, .scale = 1.0f};
    ad.A = xcalloc(in, 4);
    ad.B = xcalloc(1, 4);
    ad.u = xcalloc(N, 4);
    for (int j = 0; j < in; j++) ad.A[j] = 1.0f;
    float w[256] = {0};
    struct linear l = {.w = w, .in = in, .out = 1, .layout = GEMM_LAYOUT_OUT_IN, .lora = {&ad}, .n_lora = 1};
    float *x = xmalloc((size_t)N * in * 4), *out = xcalloc(N, 4), *scratch = xcalloc(linear_scratch_size(&l, N), 4);
    for (int i = 0; i < N * in; i++) x[i] = 1.0f;
    linear_forward(&l, out, x, scratch, &rows, N);
    /* u = sum of kept inputs / (1-p): its mean over rows is in·(1-p)/(1-p) = in */
    double mean = 0;
    for (int n = 0; n < N; n++) mean += ad.u[n];
    mean /= N;
    expect(fabs(mean - in) < 0.03 * in, "dropout keeps 1-p, rescaled", mean, in);
    expect(ad.u[0] != ad.u[T], "masks differ across samples", ad.u[0], ad.u[T]);
    free(ad.A), free(ad.B), free(ad.u), free(x), free(out), free(scratch);
}

int main(void) {
    test_init(0);
    test_init(1);
    test_order();
    test_dropout_rate();
    return check_finish();
}
