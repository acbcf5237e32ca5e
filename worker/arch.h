/*
 * arch.h: what differs between the model families lorad runs, behind one table: the
 * names and shapes of the weights, the linears LoRA may adapt, the activation layout,
 * and the passes. model.c loads any family through it; gpt2.c and llama.c each fill
 * one. Private to worker/.
 */
#ifndef LORAD_ARCH_H
#define LORAD_ARCH_H

#include <stdint.h>

#include "decode.h"
#include "model.h"

/* One weight a family needs from the files, and where its pointers go. */
struct weight_ref {
    char name[96]; /* the Hugging Face name ("transformer." names also match without it) */
    int32_t ndim;
    int64_t shape[2];
    const float **w;
    float **g;
    struct linear *lin; /* the linear this is the weight of (not its bias), else NULL */
};

/* The weights a family lists: N of at most CAP. */
struct weight_refs {
    struct weight_ref *r;
    int32_t n, cap;
};

/* One activation tensor of N floats in the model's block. */
struct act_slot {
    float **p;
    uint64_t n;
};

struct arch {
    const char *site_fmt;          /* module path of a site: layer, then site name */
    int32_t n_sites;               /* linears per layer */
    const char *const *site_names; /* their module names within a layer */
    int32_t fused_qkv;             /* the site where q/k/v slice targets apply, or -1 */
    const char *targets_hint;      /* for "--targets matches nothing" */
    const char *const *default_targets; /* PEFT's default for the family */
    int32_t n_default_targets;
    int32_t max_refs_per_layer;    /* the most weights a layer can have */
    /* Lists every weight with its expected shape (and sets each linear's sizes). */
    void (*weights_plan)(struct model *m, struct weight_refs *refs);
    /* Lists the activation tensors for the model's B and T; returns the count. */
    int32_t (*acts_plan)(struct model *m, struct act_slot *slots);
    /* Fills what the activations need once (rotary tables). */
    void (*acts_init)(struct model *m);
    double (*forward)(struct model *m, const int32_t *inp, const int32_t *tgt, const uint8_t *mask, int B,
                      const struct lora_rows *rows, float grad_scale);
    void (*backward)(struct model *m, const int32_t *inp, int B, const struct lora_rows *rows);
    /* One KV-cache step of the decoder: TOKENS (d->n) of its rows, each at its slot's position. */
    void (*decode)(struct decoder *d, const int32_t *tokens);
};

extern const struct arch arch_gpt2, arch_llama;

/* Layers of activations to keep for the input of the linear at SITE of every layer:
 * all of them when some layer's backward reads it (linear_needs_input) and the model
 * keeps every layer, else one, the current layer's (the forward consumes it at once,
 * or the backward recomputes it). */
uint64_t model_input_layers(const struct model *m, int32_t site);

/* Layers of activations kept for the backward: all of them, or, with --recompute on,
 * one (the backward recomputes each layer from its input, which stays kept for all);
 * an inference model, which has no backward, keeps one. */
uint64_t model_kept_layers(const struct model *m);
/* The slot of layer L among the kept layers. */
uint64_t model_kept_slot(const struct model *m, int l);

/* Room for every weight M's family may list; free refs->r. */
void weight_refs_alloc(const struct model *m, struct weight_refs *refs);
/* Adds a weight to REFS (D1 = 0: one dimension). */
void weight_ref_add(struct weight_refs *refs, const char *name, int64_t d0, int64_t d1, const float **w, float **g);
/* A layer's linear NAME (".weight" and, with BIAS, ".bias") of IN -> OUT features,
 * stored as LAYOUT. */
void weight_ref_linear(struct weight_refs *refs, const char *name, struct linear *lin, int32_t in, int32_t out,
                       enum gemm_layout layout, int bias);

#endif
