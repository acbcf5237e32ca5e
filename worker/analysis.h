/*
 * analysis.h: what `lorad analyze` computes about a LoRA adapter (Hu et al., 2021, §7),
 * on linalg.h, in float64:
 *   - the spectrum of each module's update ΔW = s·B·A (d,k), from thin QR factors of B
 *     and Aᵀ and the SVD of the small core between them, so ΔW is never formed;
 *   - orthonormal bases of the top singular directions of A (right) and B (left), and
 *     the subspace similarity φ(i,j) = ‖U₁ᵢᵀU₂ⱼ‖²_F / min(i,j) of two of them (§7.2);
 *   - how ΔW relates to the base weight W (§7.3): ‖UᵀWV‖_F for U, V the top directions
 *     of ΔW, of random matrices and of W itself, and ‖ΔW‖_F over the first of them.
 *
 * GPT-2's fused c_attn (out = 3·in, [q | k | v]): when every column of B is nonzero in
 * the rows of one of q, k, v at most (what lorad exports for --targets q,k,v slices),
 * each slice with a nonzero block is a module of its own, "<path>.q", with the rows of
 * its slice, the columns of B that are nonzero there, and A's matching rows: for an
 * adapter lorad trained on slices these are exactly each slice's A and B. Any other
 * c_attn adapter is one module.
 */
#ifndef LORAD_ANALYSIS_H
#define LORAD_ANALYSIS_H

#include <stdint.h>

#include "model.h"

/* One module's update ΔW = scale·B·A (d,k) by its factors. */
struct lora_factors {
    char name[168];   /* the module path, with ".q", ".k" or ".v" for a fused c_attn's slice */
    char module[160]; /* the module path of the adapter's keys */
    int32_t slice;    /* -1: the whole module; 0, 1, 2: the q, k, v rows of a fused c_attn */
    int32_t d, k, r;  /* ΔW (d,k); r columns of B */
    double scale;     /* alpha/r or alpha/sqrt(r) after the patterns */
    double *A;        /* (r,k) */
    double *B;        /* (d,r) */
};

/* Every module of one adapter directory, in the file order of their lora_A. */
struct factor_set {
    char *path;       /* adapter_model.safetensors, for errors */
    struct lora_factors *f;
    int32_t n;
};

/* Reads the PEFT adapter DIR: its config, and each module's A and B (2-D, A (r,k) and
 * B (d,r) with r the module's rank under the config's patterns, every value finite).
 * -1 with an error naming the file and the tensor. */
int factor_set_read(struct factor_set *set, const char *dir);
void factor_set_free(struct factor_set *set);
/* The module named NAME (lora_factors.name) of SET, or NULL. */
const struct lora_factors *factor_set_find(const struct factor_set *set, const char *name);

/* The thin SVD of ΔW = U·diag(S)·Vᵀ. */
struct spectrum {
    int32_t p;    /* min(d, k, r) singular values */
    double *S;    /* (p) descending */
    double *U;    /* (d,p) left singular vectors */
    double *V;    /* (k,p) right singular vectors, as columns */
    int32_t rank; /* numerical rank: S above TOL (linalg_rank's rule for (d,k)) */
    double tol;
    double fro;   /* ‖ΔW‖_F */
};
/* The spectrum of F's ΔW: B = Q_B·R_B, Aᵀ = Q_A·R_A, the core s·R_B·R_Aᵀ = U_c·S·V_cᵀ,
 * then U = Q_B·U_c and V = Q_A·V_c. -1 with an error when LAPACK fails. */
int spectrum_compute(struct spectrum *sp, const struct lora_factors *f);
void spectrum_free(struct spectrum *sp);
/* The share of ‖ΔW‖²_F in its top N directions (all of them when N > p); 0 for ΔW = 0. */
double spectrum_energy(const struct spectrum *sp, int32_t n);

/* An orthonormal basis of a factor's top singular directions, up to its rank. */
struct basis {
    int32_t n;    /* the space's dimension: k for A, d for B */
    int32_t rank; /* vectors: the factor's numerical rank */
    double *U;    /* (n, rank): column i the (i+1)-th singular vector */
};
/* The right-singular vectors of F's A (r,k), or (WHICH 'B') the left-singular vectors of
 * its B (d,r), past its numerical rank left out: beyond it they are not A's or B's. */
int basis_compute(struct basis *b, const struct lora_factors *f, char which);
void basis_free(struct basis *b);
/* PHI (b1.rank, b2.rank) = φ(i+1, j+1) = ‖U₁[:, :i+1]ᵀ·U₂[:, :j+1]‖²_F / min(i+1, j+1).
 * B1 and B2 span the same space (n equal). */
void subspace_similarity(const struct basis *b1, const struct basis *b2, double *phi);

/* §7.3 for one module, with r the numerical rank of ΔW (nothing when it is 0). */
struct amplification {
    int32_t r;
    double w_fro;       /* ‖W‖_F */
    double dw_fro;      /* ‖ΔW‖_F */
    double proj_delta;  /* ‖UᵀWV‖_F, U, V the top-r singular directions of ΔW */
    double proj_random; /* the same for r random orthonormal directions on each side */
    double proj_w;      /* the same for W's own top-r directions: √(σ₁² + … + σ_r²) of W */
    double factor;      /* dw_fro / proj_delta: how much ΔW amplifies what it takes of W */
};
/* The amplification of F's ΔW (spectrum SP) against W (d,k) in nn.Linear's [out, in]
 * orientation; the random directions are drawn from SEED and F's name. -1 with an error
 * when LAPACK fails. */
int amplification_compute(struct amplification *a, const struct lora_factors *f, const struct spectrum *sp,
                          const double *W, uint64_t seed);
/* The base weight of F's module in M as W (d,k) [out, in] (GPT-2's Conv1D transposed,
 * a slice's rows only); the caller frees. NULL with an error when M has no such module
 * or its shape is not F's. */
double *factors_base_weight(const struct model *m, const struct lora_factors *f);

#endif
