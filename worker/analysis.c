/*
 * analysis.c: an adapter's factors, the spectra of their updates, subspace similarity
 * and amplification (analysis.h).
 */
#include "analysis.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "hash.h"
#include "linalg.h"
#include "peft.h"
#include "rng.h"

static const char *const slice_names[] = {"q", "k", "v"};

/* ---- reading the factors ---- */

/* T as float64 into OUT (T->numel); -1 with an error when a value is not finite. */
static int tensor_to_f64(const struct safetensors *st, const struct st_tensor *t, double *out) {
    float *tmp = xmalloc((size_t)t->numel * sizeof *tmp);
    int rc = st_tensor_to_f32(t, tmp);
    for (int64_t i = 0; i < t->numel && rc == 0; i++) {
        if (!isfinite(tmp[i]))
            rc = err_set(st->path, "tensor %s holds a non-finite value at %lld", t->name, (long long)i);
        out[i] = tmp[i];
    }
    free(tmp);
    return rc;
}

/* MODULE's A and B from ST into F (whole), with their shapes checked against rank R. */
static int module_read(struct lora_factors *f, const struct safetensors *st, const struct peft_config *cfg,
                       const char *module) {
    memset(f, 0, sizeof *f);
    char ka[160], kb[160];
    peft_key(ka, sizeof ka, module, 'A');
    peft_key(kb, sizeof kb, module, 'B');
    const struct st_tensor *a = safetensors_find(st, ka), *b = safetensors_find(st, kb);
    int32_t r;
    double alpha;
    peft_module_rank_alpha(cfg, module, &r, &alpha);
    const int64_t a_shape[2] = {r, a->shape[1]}, b_shape[2] = {b->shape[0], r};
    if (st_tensor_expect_shape(st, a, 2, a_shape) || st_tensor_expect_shape(st, b, 2, b_shape)) return -1;
    if (a->shape[1] < 1 || b->shape[0] < 1 || a->shape[1] > INT32_MAX / 4 || b->shape[0] > INT32_MAX / 4)
        return err_set(st->path, "%s: lora_A is %lld wide and lora_B %lld tall; each must be in [1, 2^29)", module,
                       (long long)a->shape[1], (long long)b->shape[0]);
    snprintf(f->name, sizeof f->name, "%s", module);
    snprintf(f->module, sizeof f->module, "%s", module);
    f->slice = -1;
    f->r = r;
    f->k = (int32_t)a->shape[1];
    f->d = (int32_t)b->shape[0];
    f->scale = peft_scale(alpha, r, cfg->use_rslora);
    f->A = xmalloc((size_t)a->numel * sizeof *f->A);
    f->B = xmalloc((size_t)b->numel * sizeof *f->B);
    return tensor_to_f64(st, a, f->A) || tensor_to_f64(st, b, f->B) ? -1 : 0;
}

static void factors_free(struct lora_factors *f) {
    free(f->A);
    free(f->B);
    f->A = f->B = NULL;
}

/* For a fused c_attn (by name, with d = 3k): bit t of MASKS[j] when column j of B is
 * nonzero in slice t's rows. Returns the union of the masks when no column spans two
 * slices, else 0 (one whole module). */
static unsigned fused_slices(const struct lora_factors *f, unsigned *masks) {
    const char *dot = strrchr(f->module, '.');
    if (strcmp(dot ? dot + 1 : f->module, "c_attn") || f->d != 3 * f->k) return 0;
    unsigned all = 0;
    for (int32_t j = 0; j < f->r; j++) {
        masks[j] = 0;
        for (int32_t i = 0; i < f->d; i++)
            if (f->B[(size_t)i * f->r + j] != 0.0) masks[j] |= 1u << (i / f->k);
        if (masks[j] & (masks[j] - 1)) return 0;
        all |= masks[j];
    }
    return all;
}

/* OUT: slice T of the fused WHOLE, the columns j with MASKS[j] naming T. */
static void slice_take(struct lora_factors *out, const struct lora_factors *whole, const unsigned *masks, int t) {
    *out = *whole;
    snprintf(out->name, sizeof out->name, "%s.%s", whole->module, slice_names[t]);
    out->slice = t;
    out->d = whole->k;
    out->r = 0;
    for (int32_t j = 0; j < whole->r; j++) out->r += masks[j] == 1u << t;
    out->A = xmalloc((size_t)out->r * out->k * sizeof *out->A);
    out->B = xmalloc((size_t)out->d * out->r * sizeof *out->B);
    for (int32_t j = 0, c = 0; j < whole->r; j++) {
        if (masks[j] != 1u << t) continue;
        memcpy(out->A + (size_t)c * out->k, whole->A + (size_t)j * whole->k, (size_t)out->k * sizeof *out->A);
        for (int32_t i = 0; i < out->d; i++)
            out->B[(size_t)i * out->r + c] = whole->B[((size_t)t * out->d + i) * whole->r + j];
        c++;
    }
}

/* Appends MODULE to SET: whole, or as the slices of a fused c_attn. */
static int set_add(struct factor_set *set, const struct safetensors *st, const struct peft_config *cfg,
                   const char *module) {
    struct lora_factors whole;
    if (module_read(&whole, st, cfg, module)) {
        factors_free(&whole);
        return -1;
    }
    unsigned *masks = xmalloc((size_t)whole.r * sizeof *masks);
    unsigned slices = fused_slices(&whole, masks);
    set->f = xrealloc(set->f, (size_t)(set->n + 3) * sizeof *set->f);
    if (!slices) {
        set->f[set->n++] = whole;
    } else {
        for (int t = 0; t < 3; t++)
            if (slices & (1u << t)) slice_take(&set->f[set->n++], &whole, masks, t);
        factors_free(&whole);
    }
    free(masks);
    return 0;
}

int factor_set_read(struct factor_set *set, const char *dir) {
    memset(set, 0, sizeof *set);
    struct peft_config cfg;
    struct safetensors st;
    if (peft_adapter_open(dir, &cfg, &st)) return -1;
    set->path = xstrdup(st.path);
    struct peft_modules mods;
    int rc = peft_modules_list(&st, &mods);
    for (int32_t i = 0; i < mods.n && rc == 0; i++) rc = set_add(set, &st, &cfg, mods.name[i]);
    peft_modules_free(&mods);
    safetensors_close(&st);
    peft_config_free(&cfg);
    if (rc) factor_set_free(set);
    return rc;
}

void factor_set_free(struct factor_set *set) {
    for (int32_t i = 0; i < set->n; i++) factors_free(&set->f[i]);
    free(set->f);
    free(set->path);
    memset(set, 0, sizeof *set);
}

const struct lora_factors *factor_set_find(const struct factor_set *set, const char *name) {
    for (int32_t i = 0; i < set->n; i++)
        if (!strcmp(set->f[i].name, name)) return &set->f[i];
    return NULL;
}

/* ---- spectra ---- */

static int32_t min32(int32_t a, int32_t b) { return a < b ? a : b; }

int spectrum_compute(struct spectrum *sp, const struct lora_factors *f) {
    memset(sp, 0, sizeof *sp);
    const int32_t d = f->d, k = f->k, r = f->r, pb = min32(d, r), pa = min32(k, r), p = min32(pb, pa);
    /* scratch: Aᵀ (k,r), Q_B (d,pb), R_B (pb,r), Q_A (k,pa), R_A (pa,r), the core (pb,pa), U_c (pb,p), V_cᵀ (p,pa) */
    double *at = xmalloc(((size_t)k * r + (size_t)d * pb + (size_t)pb * r + (size_t)k * pa + (size_t)pa * r +
                          (size_t)pb * pa + (size_t)pb * p + (size_t)p * pa) * sizeof *at);
    double *qb = at + (size_t)k * r, *rb = qb + (size_t)d * pb, *qa = rb + (size_t)pb * r, *ra = qa + (size_t)k * pa;
    double *core = ra + (size_t)pa * r, *uc = core + (size_t)pb * pa, *vct = uc + (size_t)pb * p;
    for (int32_t i = 0; i < r; i++)
        for (int32_t j = 0; j < k; j++) at[(size_t)j * r + i] = f->A[(size_t)i * k + j];
    sp->p = p;
    sp->S = xmalloc((size_t)p * sizeof *sp->S);
    sp->U = xmalloc((size_t)d * p * sizeof *sp->U);
    sp->V = xmalloc((size_t)k * p * sizeof *sp->V);
    int rc = linalg_qr(d, r, f->B, qb, rb);
    if (rc == 0) rc = linalg_qr(k, r, at, qa, ra);
    if (rc == 0) {
        linalg_matmul(0, 1, pb, pa, r, f->scale, rb, ra, core); /* s·R_B·R_Aᵀ (pb,pa) */
        rc = linalg_svd(pb, pa, core, sp->S, uc, vct);
    }
    if (rc == 0) {
        linalg_matmul(0, 0, d, p, pb, 1.0, qb, uc, sp->U);  /* Q_B·U_c (d,p) */
        linalg_matmul(0, 1, k, p, pa, 1.0, qa, vct, sp->V); /* Q_A·V_c (k,p) */
        double e = 0;
        for (int32_t i = 0; i < p; i++) e += sp->S[i] * sp->S[i];
        sp->fro = sqrt(e);
        sp->rank = linalg_rank(sp->S, p, d, k, &sp->tol);
    }
    free(at);
    if (rc) spectrum_free(sp);
    return rc;
}

void spectrum_free(struct spectrum *sp) {
    free(sp->S);
    free(sp->U);
    free(sp->V);
    memset(sp, 0, sizeof *sp);
}

double spectrum_energy(const struct spectrum *sp, int32_t n) {
    double top = 0, all = 0;
    for (int32_t i = 0; i < sp->p; i++) {
        all += sp->S[i] * sp->S[i];
        if (i < n) top += sp->S[i] * sp->S[i];
    }
    return all > 0 ? top / all : 0.0;
}

/* ---- subspaces ---- */

int basis_compute(struct basis *b, const struct lora_factors *f, char which) {
    CHECK(which == 'A' || which == 'B');
    const int32_t rows = which == 'A' ? f->r : f->d, cols = which == 'A' ? f->k : f->r, p = min32(rows, cols);
    const double *m = which == 'A' ? f->A : f->B;
    double *s = xmalloc(((size_t)p + (size_t)rows * p + (size_t)p * cols) * sizeof *s); /* S, U, VT */
    double *u = s + p, *vt = u + (size_t)rows * p;
    double tol;
    memset(b, 0, sizeof *b);
    int rc = linalg_svd(rows, cols, m, s, u, vt);
    if (rc == 0) {
        b->rank = linalg_rank(s, p, rows, cols, &tol);
        b->n = which == 'A' ? cols : rows;
        b->U = xmalloc((size_t)b->n * (b->rank ? b->rank : 1) * sizeof *b->U);
        for (int32_t i = 0; i < b->n; i++) /* A: V's columns are VT's rows; B: U's columns */
            for (int32_t j = 0; j < b->rank; j++)
                b->U[(size_t)i * b->rank + j] = which == 'A' ? vt[(size_t)j * cols + i] : u[(size_t)i * p + j];
    }
    free(s);
    return rc;
}

void basis_free(struct basis *b) {
    free(b->U);
    memset(b, 0, sizeof *b);
}

void subspace_similarity(const struct basis *b1, const struct basis *b2, double *phi) {
    CHECK(b1->n == b2->n);
    const int32_t p1 = b1->rank, p2 = b2->rank;
    if (p1 == 0 || p2 == 0) return;
    double *m = xmalloc((size_t)p1 * p2 * sizeof *m);
    linalg_matmul(1, 0, p1, p2, b1->n, 1.0, b1->U, b2->U, m); /* U₁ᵀU₂ (p1,p2) */
    for (int32_t i = 0; i < p1; i++) /* 2-D prefix sums of the squares, then / min(i,j) */
        for (int32_t j = 0; j < p2; j++) {
            double v = m[(size_t)i * p2 + j] * m[(size_t)i * p2 + j];
            if (i > 0) v += phi[(size_t)(i - 1) * p2 + j];
            if (j > 0) v += phi[(size_t)i * p2 + j - 1];
            if (i > 0 && j > 0) v -= phi[(size_t)(i - 1) * p2 + j - 1];
            phi[(size_t)i * p2 + j] = v;
        }
    for (int32_t i = 0; i < p1; i++)
        for (int32_t j = 0; j < p2; j++) phi[(size_t)i * p2 + j] /= min32(i, j) + 1;
    free(m);
}

/* ---- amplification ---- */

/* ‖Uᵀ·W·V‖_F for U (d,r), V (k,r) with leading dimensions LDU, LDV, W (d,k). */
static double projection_norm(const double *W, int32_t d, int32_t k, const double *U, int32_t ldu, const double *V,
                              int32_t ldv, int32_t r) {
    /* scratch: U (d,r), V (k,r), W·V (d,r), Uᵀ·W·V (r,r) */
    double *u = xmalloc(((size_t)d * r * 2 + (size_t)k * r + (size_t)r * r) * sizeof *u);
    double *v = u + (size_t)d * r, *wv = v + (size_t)k * r, *p = wv + (size_t)d * r, e = 0;
    for (int32_t i = 0; i < d; i++) memcpy(u + (size_t)i * r, U + (size_t)i * ldu, (size_t)r * sizeof *u);
    for (int32_t i = 0; i < k; i++) memcpy(v + (size_t)i * r, V + (size_t)i * ldv, (size_t)r * sizeof *v);
    linalg_matmul(0, 0, d, r, k, 1.0, W, v, wv); /* W·V (d,r) */
    linalg_matmul(1, 0, r, r, d, 1.0, u, wv, p); /* Uᵀ·W·V (r,r) */
    for (int32_t i = 0; i < r * r; i++) e += p[i] * p[i];
    free(u);
    return sqrt(e);
}

/* Q (n,r): r orthonormal columns from a Gaussian draw keyed by KEY. */
static int random_directions(double *q, int32_t n, int32_t r, uint64_t key) {
    double *g = xmalloc((size_t)n * r * sizeof *g), *rr = xmalloc((size_t)r * r * sizeof *rr);
    for (int64_t i = 0; i < (int64_t)n * r; i++) g[i] = rng_normal(key, (uint64_t)i);
    int rc = linalg_qr(n, r, g, q, rr);
    free(g);
    free(rr);
    return rc;
}

int amplification_compute(struct amplification *a, const struct lora_factors *f, const struct spectrum *sp,
                          const double *W, uint64_t seed) {
    const int32_t d = f->d, k = f->k, r = sp->rank;
    memset(a, 0, sizeof *a);
    a->r = r;
    a->dw_fro = sp->fro;
    const int32_t p = min32(d, k);
    double *s = xmalloc((size_t)p * sizeof *s), e = 0, top = 0;
    int rc = linalg_svd(d, k, W, s, NULL, NULL);
    for (int32_t i = 0; i < p && rc == 0; i++) {
        e += s[i] * s[i];
        if (i < r) top += s[i] * s[i];
    }
    a->w_fro = sqrt(e);
    a->proj_w = sqrt(top);
    free(s);
    if (rc || r == 0) return rc;
    a->proj_delta = projection_norm(W, d, k, sp->U, sp->p, sp->V, sp->p, r);
    a->factor = a->proj_delta > 0 ? a->dw_fro / a->proj_delta : INFINITY;
    uint64_t name = hash_bytes(HASH_INIT, f->name, strlen(f->name));
    double *u = xmalloc((size_t)d * r * sizeof *u), *v = xmalloc((size_t)k * r * sizeof *v);
    rc = random_directions(u, d, r, rng_key(RNG_STREAM_ANALYZE, seed, name, 0));
    if (rc == 0) rc = random_directions(v, k, r, rng_key(RNG_STREAM_ANALYZE, seed, name, 1));
    if (rc == 0) a->proj_random = projection_norm(W, d, k, u, r, v, r, r);
    free(u);
    free(v);
    return rc;
}

double *factors_base_weight(const struct model *m, const struct lora_factors *f) {
    const struct linear *lin = model_site_find(m, f->module);
    if (!lin) {
        err_set("--model", "%s has no module %s, which the adapter adapts", m->base->dir, f->module);
        return NULL;
    }
    const int32_t rows = f->slice >= 0 ? lin->out / 3 : lin->out, row0 = f->slice >= 0 ? f->slice * rows : 0;
    if (lin->in != f->k || rows != f->d || (f->slice >= 0 && lin->out != 3 * f->k)) {
        err_set("--model", "%s's %s maps %d to %d, the adapter's %d to %d", m->base->dir, f->name, (int)lin->in,
                (int)rows, (int)f->k, (int)f->d);
        return NULL;
    }
    CHECK(lin->w != NULL);
    double *W = xmalloc((size_t)f->d * f->k * sizeof *W);
    for (int32_t i = 0; i < f->d; i++) /* row i of W [out, in] is output i + row0 */
        for (int32_t j = 0; j < f->k; j++)
            W[(size_t)i * f->k + j] = lin->layout == GEMM_LAYOUT_IN_OUT ? lin->w[(size_t)j * lin->out + row0 + i]
                                                                        : lin->w[(size_t)(i + row0) * lin->in + j];
    return W;
}
