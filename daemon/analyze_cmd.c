/*
 * analyze_cmd.c: `lorad analyze` (analyze_cmd.h): reading the adapters and the base,
 * computing each module's results, and writing them as tables, JSON and plots.
 */
#include "analyze_cmd.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "error.h"
#include "fileio.h"
#include "jsonio.h"
#include "outputs.h"
#include "plot.h"

#define RANK_RULE "singular values above max(d,k)*eps*sigma_1, eps = 2^-52 (numpy.linalg.matrix_rank's rule)"
#define PHI_RULE                                                                                                  \
    "phi(i,j) = |U1[:, :i]^T U2[:, :j]|_F^2 / min(i,j); A: the right-singular vectors of lora_A, B: the "         \
    "left-singular vectors of lora_B, of --adapter (U1, i) and --against (U2, j), up to each factor's numerical " \
    "rank"

/* What analyze writes into --out. */
static const char *const analyze_files[] = {
    OUTPUTS_WITH_TMP("analysis.json"), OUTPUTS_WITH_TMP("spectrum/*.png"), "spectrum/",
    OUTPUTS_WITH_TMP("phi/*.png"),     "phi/",                             NULL,
};

/* The energy shares reported: top 1, 2, 4 and 8 directions. */
static const int32_t energy_tops[] = {1, 2, 4, 8};
#define N_TOPS 4

/* One module's results. */
struct result {
    const struct lora_factors *f, *g; /* --adapter's, and --against's or NULL */
    struct spectrum sp, sp2;          /* the spectra of their updates */
    double *phi[2];                   /* φ of A's and of B's bases (rank1, rank2), with --against */
    int32_t rank1[2], rank2[2];       /* the ranks of those bases: A's, B's */
    int has_amp;                      /* with --model */
    struct amplification amp;
};

/* ---- computing ---- */

/* φ for factor W (0: A, 1: B) of RES's two adapters. */
static int similarity_compute(struct result *res, int w) {
    struct basis b1, b2;
    int rc = basis_compute(&b1, res->f, "AB"[w]);
    if (rc == 0) rc = basis_compute(&b2, res->g, "AB"[w]);
    if (rc == 0) {
        res->rank1[w] = b1.rank;
        res->rank2[w] = b2.rank;
        res->phi[w] = xcalloc((size_t)b1.rank * b2.rank + 1, sizeof *res->phi[w]);
        subspace_similarity(&b1, &b2, res->phi[w]);
    }
    basis_free(&b1);
    basis_free(&b2);
    return rc;
}

static int result_compute(struct result *res, const struct lora_factors *f, const struct lora_factors *g,
                          const struct model *m, uint64_t seed) {
    res->f = f;
    res->g = g;
    int rc = spectrum_compute(&res->sp, f);
    if (rc == 0 && g) rc = spectrum_compute(&res->sp2, g);
    for (int w = 0; w < 2 && rc == 0 && g; w++) rc = similarity_compute(res, w);
    if (rc == 0 && m) {
        double *W = factors_base_weight(m, f);
        rc = W ? amplification_compute(&res->amp, f, &res->sp, W, seed) : -1;
        res->has_amp = rc == 0;
        free(W);
    }
    return rc;
}

static void result_free(struct result *res) {
    spectrum_free(&res->sp);
    spectrum_free(&res->sp2);
    free(res->phi[0]);
    free(res->phi[1]);
}

/* --against must adapt exactly --adapter's modules, each of the same shape. */
static int sets_match(const struct factor_set *a, const struct factor_set *b, const char *against) {
    for (int32_t i = 0; i < a->n; i++) {
        const struct lora_factors *f = &a->f[i], *g = factor_set_find(b, f->name);
        if (!g) {
            err_set("--against", "%s has no module %s, which --adapter adapts", against, f->name);
            return err_hint("compare two adapters of the same modules");
        }
        if (g->d != f->d || g->k != f->k)
            return err_set("--against", "%s's %s is %d x %d, --adapter's %d x %d", against, f->name, (int)g->d,
                           (int)g->k, (int)f->d, (int)f->k);
    }
    for (int32_t i = 0; i < b->n; i++)
        if (!factor_set_find(a, b->f[i].name)) {
            err_set("--against", "%s adapts %s, which --adapter does not", against, b->f[i].name);
            return err_hint("compare two adapters of the same modules");
        }
    return 0;
}

/* ---- JSON ---- */

static json_t *real(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *reals(const double *v, int32_t n) {
    json_t *a = json_array();
    for (int32_t i = 0; i < n; i++) json_array_append_new(a, real(v[i]));
    return a;
}

/* A's spectrum fields: r, scale, singular values, norm, energy shares, rank. */
static json_t *spectrum_json(const struct lora_factors *f, const struct spectrum *sp) {
    json_t *energy = json_object();
    for (int t = 0; t < N_TOPS; t++) {
        char key[8];
        snprintf(key, sizeof key, "%d", (int)energy_tops[t]);
        json_object_set_new(energy, key, real(spectrum_energy(sp, energy_tops[t])));
    }
    return json_pack("{s:i, s:o, s:o, s:o, s:o, s:i, s:o}", "r", (int)f->r, "scale", real(f->scale), "singular_values",
                     reals(sp->S, sp->p), "frobenius", real(sp->fro), "energy_top", energy, "rank", (int)sp->rank,
                     "tolerance", real(sp->tol));
}

static json_t *phi_json(const struct result *res, int w) {
    json_t *rows = json_array();
    for (int32_t i = 0; i < res->rank1[w]; i++)
        json_array_append_new(rows, reals(res->phi[w] + (size_t)i * res->rank2[w], res->rank2[w]));
    return json_pack("{s:i, s:i, s:o}", "rank_adapter", (int)res->rank1[w], "rank_against", (int)res->rank2[w], "phi",
                     rows);
}

static json_t *amplification_json(const struct amplification *a) {
    return json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "r", (int)a->r, "w_frobenius", real(a->w_fro),
                     "delta_frobenius", real(a->dw_fro), "projection_delta", real(a->proj_delta), "projection_random",
                     real(a->proj_random), "projection_w", real(a->proj_w), "factor",
                     a->r ? real(a->factor) : json_null());
}

static json_t *module_json(const struct result *res) {
    static const char *const slices[] = {"q", "k", "v"};
    const struct lora_factors *f = res->f;
    json_t *o = json_pack("{s:s, s:s, s:o, s:i, s:i}", "name", f->name, "module", f->module, "slice",
                          f->slice >= 0 ? json_string(slices[f->slice]) : json_null(), "d", (int)f->d, "k", (int)f->k);
    json_object_update_new(o, spectrum_json(f, &res->sp));
    if (res->g) {
        json_t *g = spectrum_json(res->g, &res->sp2);
        json_object_set_new(g, "phi_A", phi_json(res, 0));
        json_object_set_new(g, "phi_B", phi_json(res, 1));
        json_object_set_new(o, "against", g);
    }
    if (res->has_amp) json_object_set_new(o, "amplification", amplification_json(&res->amp));
    return o;
}

static json_t *opt_string(const char *s) { return s[0] ? json_string(s) : json_null(); }

static json_t *analysis_json(const Lorad__AnalyzeSpec *s, const struct result *res, int32_t n) {
    json_t *mods = json_array();
    for (int32_t i = 0; i < n; i++) json_array_append_new(mods, module_json(&res[i]));
    json_t *doc = json_pack("{s:s, s:o, s:o, s:s, s:s, s:o}", "adapter", s->adapter, "against", opt_string(s->against),
                            "model", opt_string(s->model), "rank_rule", RANK_RULE, "phi", PHI_RULE, "modules", mods);
    if (!doc) err_set(s->adapter, "a path given is not valid UTF-8");
    else if (s->model[0]) json_object_set_new(doc, "seed", json_integer((json_int_t)s->seed));
    return doc;
}

/* ---- tables ---- */

static int name_width(const struct result *res, int32_t n) {
    int w = 6;
    for (int32_t i = 0; i < n; i++) w = (int)strlen(res[i].f->name) > w ? (int)strlen(res[i].f->name) : w;
    return w;
}

static void table_spectra(const Lorad__AnalyzeSpec *s, const struct result *res, int32_t n, int w) {
    printf("spectra of dW = s*B*A (%d modules of %s); rank: %s\n", (int)n, s->adapter, RANK_RULE);
    printf("%-*s %11s %4s %8s %10s %10s %6s %6s %6s %6s %5s\n", w, "module", "d x k", "r", "scale", "|dW|_F", "sigma_1",
           "top1", "top2", "top4", "top8", "rank");
    for (int32_t i = 0; i < n; i++) {
        const struct lora_factors *f = res[i].f;
        const struct spectrum *sp = &res[i].sp;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", (int)f->d, (int)f->k);
        printf("%-*s %11s %4d %8.4g %10.4g %10.4g", w, f->name, shape, (int)f->r, f->scale, sp->fro,
               sp->p ? sp->S[0] : 0.0);
        for (int t = 0; t < N_TOPS; t++) printf(" %6.3f", spectrum_energy(sp, energy_tops[t]));
        printf(" %5d\n", (int)sp->rank);
    }
}

/* φ(i, j) of factor W (0: A, 1: B), "-" beyond the bases' ranks. */
static void phi_cell(const struct result *res, int w, int32_t i, int32_t j) {
    if (i > res->rank1[w] || j > res->rank2[w] || i < 1 || j < 1) printf(" %8s", "-");
    else printf(" %8.3f", res->phi[w][(size_t)(i - 1) * res->rank2[w] + j - 1]);
}

static void table_similarity(const Lorad__AnalyzeSpec *s, const struct result *res, int32_t n, int w) {
    printf("\nsubspace similarity with --against %s: %s\n", s->against, PHI_RULE);
    printf("m = min(rank, rank'); phi of two random subspaces of R^n is about max(i,j)/n\n");
    printf("%-*s %4s %4s %8s %8s %8s %8s %8s %8s\n", w, "module", "r", "r'", "A(1,1)", "A(1,r')", "A(m,m)", "B(1,1)",
           "B(1,r')", "B(m,m)");
    for (int32_t i = 0; i < n; i++) {
        const struct result *q = &res[i];
        printf("%-*s %4d %4d", w, q->f->name, (int)q->f->r, (int)q->g->r);
        for (int f = 0; f < 2; f++) {
            int32_t m = q->rank1[f] < q->rank2[f] ? q->rank1[f] : q->rank2[f];
            phi_cell(q, f, 1, 1);
            phi_cell(q, f, 1, q->rank2[f]);
            phi_cell(q, f, m, m);
        }
        putchar('\n');
    }
}

static void table_amplification(const Lorad__AnalyzeSpec *s, const struct result *res, int32_t n, int w) {
    printf("\namplification against --model %s: |U^T W V|_F for the top-r directions U, V of dW, of random\n"
           "matrices (--seed %llu) and of W, r = rank(dW); factor = |dW|_F / |U^T W V|_F with dW's\n",
           s->model, (unsigned long long)s->seed);
    printf("%-*s %4s %10s %10s %10s %10s %10s %10s\n", w, "module", "r", "|W|_F", "|dW|_F", "dW dirs", "random",
           "W dirs", "factor");
    for (int32_t i = 0; i < n; i++) {
        const struct amplification *a = &res[i].amp;
        printf("%-*s %4d %10.4g %10.4g %10.4g %10.4g %10.4g %10.4g\n", w, res[i].f->name, (int)a->r, a->w_fro,
               a->dw_fro, a->proj_delta, a->proj_random, a->proj_w, a->r ? a->factor : NAN);
    }
}

/* ---- plots ---- */

/* DIR/SUB/NAME.png, NAME with every byte but [A-Za-z0-9._-] made '_' (and then the
 * module's index appended, so that two names never meet); the caller frees. */
static char *plot_path(const char *dir, const char *sub, const char *name, int32_t index) {
    char file[200];
    int changed = name[0] == '.';
    size_t n = 0;
    for (; name[n] && n < 160; n++) {
        int ok = (name[n] >= 'a' && name[n] <= 'z') || (name[n] >= 'A' && name[n] <= 'Z') ||
                 (name[n] >= '0' && name[n] <= '9') || strchr("._-", name[n]);
        file[n] = ok && !(n == 0 && name[n] == '.') ? name[n] : '_';
        changed |= !ok;
    }
    snprintf(file + n, sizeof file - n, changed ? "-%d.png" : ".png", (int)index);
    char *sd = path_join(dir, sub), *path = path_join(sd, file);
    free(sd);
    return path;
}

static int spectrum_plot(const char *out, const struct result *q, int32_t index) {
    char sub[160], t1[32], t2[32];
    snprintf(sub, sizeof sub, "d x k = %d x %d; energy in the top 1/2/4/8: %.2f / %.2f / %.2f / %.2f; rank %d",
             (int)q->f->d, (int)q->f->k, spectrum_energy(&q->sp, 1), spectrum_energy(&q->sp, 2),
             spectrum_energy(&q->sp, 4), spectrum_energy(&q->sp, 8), (int)q->sp.rank);
    snprintf(t1, sizeof t1, "--adapter (r %d)", (int)q->f->r);
    struct plot_series s[2] = {{t1, q->sp.S, q->sp.p}, {t2, q->sp2.S, q->sp2.p}};
    if (q->g) snprintf(t2, sizeof t2, "--against (r %d)", (int)q->g->r);
    char *path = plot_path(out, "spectrum", q->f->name, index);
    int rc = plot_bars(path, q->f->name, sub, "i", "singular value sigma_i of dW = s*B*A", s, q->g ? 2 : 1);
    free(path);
    return rc;
}

static int phi_plot(const char *out, const struct result *q, int32_t index) {
    char x[64], y[64], title[240];
    snprintf(x, sizeof x, "j (top-j directions of --against, r %d)", (int)q->g->r);
    snprintf(y, sizeof y, "i (top-i of --adapter, r %d)", (int)q->f->r);
    snprintf(title, sizeof title, "%s: subspace similarity phi(i,j)", q->f->name);
    const struct plot_matrix m[2] = {
        {"A: right-singular vectors of lora_A", q->phi[0], q->rank1[0], q->rank2[0], x, y},
        {"B: left-singular vectors of lora_B", q->phi[1], q->rank1[1], q->rank2[1], x, y},
    };
    char *path = plot_path(out, "phi", q->f->name, index);
    int rc = plot_heatmaps(path, title, m, 2);
    free(path);
    return rc;
}

/* analysis.json (DOC) and the plots into OUT, after the old analysis is removed. */
static int outputs_write(const Lorad__AnalyzeSpec *s, const json_t *doc, const struct result *res, int32_t n) {
    int rc = s->overwrite ? outputs_remove(s->out, analyze_files) : 0;
    char *json = path_join(s->out, "analysis.json"), *spec = path_join(s->out, "spectrum");
    char *phi = path_join(s->out, "phi");
    if (rc == 0) rc = dir_make(s->out);
    if (rc == 0) rc = jsonio_write(json, doc);
    if (rc == 0 && s->plots) rc = dir_make(spec);
    for (int32_t i = 0; i < n && rc == 0 && s->plots; i++) rc = spectrum_plot(s->out, &res[i], i);
    if (rc == 0 && s->plots && s->against[0]) rc = dir_make(phi);
    for (int32_t i = 0; i < n && rc == 0 && s->plots && s->against[0]; i++) rc = phi_plot(s->out, &res[i], i);
    free(json);
    free(spec);
    free(phi);
    return rc;
}

/* ---- the command ---- */

/* The adapters and the base: --adapter into A, --against into B, --model into M. */
static int inputs_open(const Lorad__AnalyzeSpec *s, struct factor_set *a, struct factor_set *b, struct model *m,
                       int *have_model) {
    if (factor_set_read(a, s->adapter)) return -1;
    if (s->against[0] && (factor_set_read(b, s->against) || sets_match(a, b, s->against))) return -1;
    if (!s->model[0]) return 0;
    struct model_options o = {.dir = s->model, .inference = 1, .max_batch = 1, .seq = 1};
    *have_model = model_init(m, &o) == 0;
    return *have_model ? 0 : -1;
}

static void report_print(const Lorad__AnalyzeSpec *s, const json_t *doc, const struct result *res, int32_t n) {
    if (s->json) {
        char *text = jsonio_text(doc);
        fputs(text, stdout);
        free(text);
        return;
    }
    int w = name_width(res, n);
    table_spectra(s, res, n, w);
    if (s->against[0]) table_similarity(s, res, n, w);
    if (s->model[0]) table_amplification(s, res, n, w);
}

int analyze_cmd(const struct command_call *call) {
    const Lorad__AnalyzeSpec *s = (const Lorad__AnalyzeSpec *)call->spec[0];
    if (s->out[0] && outputs_claim(s->out, analyze_files, s->overwrite, "--out", "an analysis")) return -1;
    if (s->out[0] && s->plots && plot_check()) return -1;
    struct factor_set a = {0}, b = {0};
    struct model m;
    int have_model = 0;
    int rc = inputs_open(s, &a, &b, &m, &have_model);
    struct result *res = xcalloc((size_t)a.n + 1, sizeof *res);
    for (int32_t i = 0; i < a.n && rc == 0; i++)
        rc = result_compute(&res[i], &a.f[i], s->against[0] ? factor_set_find(&b, a.f[i].name) : NULL,
                            have_model ? &m : NULL, s->seed);
    json_t *doc = rc == 0 ? analysis_json(s, res, a.n) : NULL;
    if (!doc) rc = -1;
    if (rc == 0) report_print(s, doc, res, a.n);
    if (rc == 0 && s->out[0]) rc = outputs_write(s, doc, res, a.n);
    if (rc == 0 && s->out[0])
        fprintf(stderr, "lorad: wrote %s/analysis.json%s\n", s->out, s->plots ? " and the plots" : "");
    json_decref(doc);
    for (int32_t i = 0; i < a.n; i++) result_free(&res[i]);
    free(res);
    if (have_model) model_free(&m);
    factor_set_free(&a);
    factor_set_free(&b);
    return rc;
}
