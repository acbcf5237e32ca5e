/*
 * model.h: a transformer of GPT-2 or of the Llama family (Llama, Mistral, Qwen2: each
 * family behind worker/arch.h, in gpt2.c and llama.c) with LoRA adapters: loading from
 * a Hugging Face model directory, the forward pass with its loss, and the backward pass
 * into the trainable block. Frozen weights are read-only: mapped from the safetensors
 * file when it holds aligned F32, converted once into one block otherwise; their
 * backward computes only input gradients. In full mode every weight lives in the
 * trainable block.
 */
#ifndef LORAD_MODEL_H
#define LORAD_MODEL_H

#include <stdint.h>

#include "base.h"
#include "hf_config.h"
#include "linear.h"
#include "lora.h"
#include "peft.h"
#include "trainable.h"

struct model_options {
    const char *dir;              /* HF model directory */
    struct base *base;            /* DIR already open (borrowed, outlives the model); NULL: open it */
    int full;                     /* train every weight instead of adapters */
    int writable;                 /* copy frozen weights instead of mapping them (merging) */
    int inference;                /* nothing trains: no backward, and adapters only where SETS gives some
                                   * (unmerged, their A and B imported after model_init) */
    int all_logits;               /* inference: m->logits holds every row's, for forwards without targets */
    enum base_dtype base_dtype;   /* the frozen product weights' form: f32, or packed (packed.h) */
    int recompute;                /* keep each layer's input only; the backward recomputes the layer */
    int32_t head_rows;            /* logit rows at a time (but with all_logits); 0: MODEL_HEAD_ROWS */
    int32_t max_batch;            /* most sequences per forward */
    int32_t seq;                  /* T; 0: model_seq_default */
    const struct lora_spec *sets; /* the adapter sets (LoRA mode; an inference model may have
                                   * some, unmerged); each owns rows of a forward (lora_rows) */
    int32_t n_sets;
};

/* The linears of a layer, in each family's order (its LoRA sites). */
enum gpt2_site { GPT2_SITE_ATTN, GPT2_SITE_PROJ, GPT2_SITE_FC, GPT2_SITE_FCPROJ };
enum llama_site { LLAMA_SITE_Q, LLAMA_SITE_K, LLAMA_SITE_V, LLAMA_SITE_O, LLAMA_SITE_GATE, LLAMA_SITE_UP, LLAMA_SITE_DOWN };
#define LAYER_MAX_SITES 7

/* One transformer layer of either family: two norms (RMSNorm has no bias) around the
 * attention and the MLP, and the linears of enum gpt2_site or enum llama_site. */
struct layer {
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b; /* (C); the biases NULL for RMSNorm */
    float *dnorm1_w, *dnorm1_b, *dnorm2_w, *dnorm2_b;   /* NULL when frozen */
    struct linear lin[LAYER_MAX_SITES];
};

/* Activations of one forward pass (kept for backward), then the backward's scratch,
 * all pointers into one allocation. Per-layer tensors are stacked over L, but for those
 * the next product consumes at once: one layer's, which the backward recomputes from
 * what is kept (a norm's output) or, when no layer reads it back, never needs. */
struct gpt2_acts {
    float *encoded;                      /* (B,T,C) */
    float *ln1, *ln1_mean, *ln1_rstd;    /* (B,T,C) one layer's, (L,B,T), (L,B,T) */
    float *qkv;                          /* (L,B,T,3C) */
    float *atty;                         /* (L,B,T,C), one layer's when c_proj needs no input */
    float *lse;                          /* (L,B,NH,T) attention's log-sum-exps */
    float *residual2;                    /* (L,B,T,C) */
    float *ln2, *ln2_mean, *ln2_rstd;    /* (B,T,C) one layer's, (L,B,T), (L,B,T) */
    float *fch;                          /* (L,B,T,F) */
    float *fch_gelu;                     /* (B,T,F): GELU(fch) of one layer at a time */
    float *residual3;                    /* (L,B,T,C) */
    float *lnf, *lnf_mean, *lnf_rstd;    /* (B,T,C), (B,T), (B,T) */
    float *losses;                       /* (B,T) */
    float *dhead;                        /* (B,T,C) the LM head's input gradient */
    float *dresid, *dln, *datty, *tmp;   /* (B,T,C) */
    float *dqkv;                         /* (B,T,3C) */
    float *dfch, *dfch_gelu;             /* (B,T,F) */
};

/* The same for the Llama family; Q = NH·hd and KV = NKV·hd floats per row. */
struct llama_acts {
    float *encoded;                      /* (B,T,C) */
    float *n1, *r1;                      /* (B,T,C) one layer's, (L,B,T): RMSNorm out and 1/rms */
    float *q, *k, *v;                    /* (L,B,T,Q), (L,B,T,KV) x2, q and k rotated */
    float *lse;                          /* (L,B,NH,T) attention's log-sum-exps */
    float *atty;                         /* (L,B,T,Q), one layer's when o_proj needs no input */
    float *residual2;                    /* (L,B,T,C) */
    float *n2, *r2;                      /* (B,T,C) one layer's, (L,B,T) */
    float *gate, *up;                    /* (L,B,T,F): the projections */
    float *h;                            /* (B,T,F): one layer's SwiGLU */
    float *residual3;                    /* (L,B,T,C) */
    float *nf, *rf;                      /* (B,T,C), (B,T) */
    float *losses;                       /* (B,T) */
    float *dhead;                        /* (B,T,C) the LM head's input gradient */
    float *cos, *sin;                    /* (T, hd/2) rotary tables */
    float *dresid, *dln, *tmp;           /* (B,T,C) */
    float *datty, *dq;                   /* (B,T,Q) */
    float *dk, *dv;                      /* (B,T,KV) */
    float *dgate, *dup, *dh;             /* (B,T,F) */
};

struct arch;

struct model {
    struct model_config cfg;
    struct base *base; /* the files: borrowed, or OWN_BASE */
    struct base own_base;
    float *frozen; /* writable copies of the frozen tensors (merging), one allocation */
    struct qweight *qw; /* the quantized linears' weights (--base-dtype int8, nf4), or NULL */
    const struct arch *arch; /* the family's names, shapes and passes */
    const float *wte, *wpe, *lnf_w, *lnf_b; /* (V,C), (P,C) (GPT-2), final norm (C), (C) (GPT-2) */
    const struct st_tensor *wte_lookup_only; /* WTE mapped and read by no product: its pages dropped after each lookup */
    float *dwte, *dwpe, *dlnf_w, *dlnf_b;
    struct layer *layers;
    struct linear lm_head; /* tied to wte, or its own weight */
    struct linear **sites; /* the linears adapters may attach to, in file order */
    int32_t n_sites;
    struct lora_spec sets[LORA_MAX_SETS]; /* the options' sets, each with its targets in force */
    int32_t n_sets;
    struct lora_adapter *adapters; /* every set's, set by set */
    int32_t n_adapters;
    struct trainable tr;
    uint64_t set_off[LORA_MAX_SETS + 1]; /* set g's floats of TR: [set_off[g], set_off[g+1]); one set
                                          * (or full mode) holds them all */
    int32_t B, T;
    const int32_t *start; /* (B,T) the examples of the last forward's rows, or NULL */
    float *act_block;
    uint64_t act_bytes; /* of ACT_BLOCK: every activation and scratch tensor */
    union {
        struct gpt2_acts g;
        struct llama_acts l;
    } a;
    int inference;  /* no backward */
    int all_logits; /* m->logits holds every row (forwards without targets) */
    int recompute;  /* activations of one layer kept: the backward recomputes each layer (arch.h) */
    int32_t head_rows; /* else the rows it holds */
    float *logits;  /* (model_logit_rows, V): logits, then probabilities, then their gradient */
    float *lora_u;  /* every adapter's (B,T,r) */
    float *scratch; /* linear and attention scratch */
    int32_t attn_slots; /* threads attention's scratch has room for */
    int64_t n_params; /* every weight of the base model */
};

/* The --seq of a command left at its default (0): the model's context (n_positions, or
 * a shorter sliding_window, which lorad does not implement), at most MODEL_SEQ_DEFAULT. */
#define MODEL_SEQ_DEFAULT 256
int32_t model_seq_default(const struct model_config *cfg);
/* -1 with an error naming --seq, the value and the context, when SEQ does not fit CFG. */
int model_seq_check(const struct model_config *cfg, int32_t seq);

/* Loads DIR, attaches adapters and sizes activations. -1 with an error on bad input. */
int model_init(struct model *m, const struct model_options *o);
void model_free(struct model *m);

/* Forward over B sequences: inp, tgt (B,T); mask (B,T), 0 = target not counted; start
 * (B,T) the examples of packed rows (kernels.h), or NULL. ROWS: the rows (of B·T) each
 * adapter set adapts and its dropout; NULL for a model of one set, over every row,
 * without dropout. Returns the sum of the counted losses, each row's in model_losses.
 * With GRAD_SCALE nonzero it also starts the backward of GRAD_SCALE * (that sum) at the LM head, whose
 * logits are at hand only there (model_head), and model_backward must follow. With TGT
 * NULL (models of all_logits only) it stops at the logits, left in m->logits (B,T,V), and
 * returns 0. */
double model_forward(struct model *m, const int32_t *inp, const int32_t *start, const int32_t *tgt,
                     const uint8_t *mask, int B, const struct lora_rows *rows, float grad_scale);
/* The rest of the backward the last forward started, over its rows; accumulates into the
 * trainable gradient. */
void model_backward(struct model *m, const int32_t *inp, int B, const struct lora_rows *rows);

/* (B,T) each row's loss in the last forward with targets, counted or not. */
const float *model_losses(const struct model *m);

/* Rows of logits the LM head holds at once but with all_logits: never the whole (B·T, V). */
#define MODEL_HEAD_ROWS 128
/* The rows m->logits holds: B·T for a model of all_logits, else up to the head rows. */
int32_t model_logit_rows(const struct model *m);
/* The LM head and the loss over N rows of X (N,C), the final norm's output; LOSSES (N)
 * each row's loss. Returns the sum of the counted losses, computing the logits
 * model_logit_rows at a time; with GRAD_SCALE nonzero also, chunk by chunk, the head's
 * backward of GRAD_SCALE · that sum: DX (N,C) its input gradient (overwritten), and its
 * weight gradient where the head trains. Without targets: every row's logits into
 * m->logits. For the families' passes. */
double model_head(struct model *m, const float *x, float *dx, const int32_t *tgt, const uint8_t *mask, int N,
                  float grad_scale, float *losses);
/* After a family's embedding lookup: lets go of the mapped rows it read when nothing
 * else reads the table (model_init decides), so they do not pile up over the steps
 * (every lookup maps 64 KiB around its row). */
void model_lookup_done(const struct model *m);
/* The PEFT module path of site S ("transformer.h.0.attn.c_attn") into BUF. */
void model_site_path(const struct model *m, int32_t s, char *buf, size_t n);
/* The linear whose PEFT module path is MODULE (GPT-2's also without "transformer."), or
 * NULL. */
struct linear *model_site_find(const struct model *m, const char *module);
/* The module name of site S within its layer ("attn.c_attn", "self_attn.q_proj"). */
const char *model_site_name(const struct model *m, int32_t s);
/* The model's weights under their Hugging Face names as write entries of DTYPE (the
 * data points into the model); *N their count. The caller frees the array. */
struct st_write_entry *model_weights(const struct model *m, enum st_dtype dtype, int32_t *n);
/* Writes a GPT-2 of shape CFG with GPT-2's random initialisation (from SEED) as a
 * Hugging Face directory DIR: a base to pretrain with --mode full. */
int model_write_random(const struct model_config *cfg, uint64_t seed, const char *dir);
/* Trainable parameter count (without alignment padding). */
int64_t model_n_trainable(const struct model *m);
/* Adapter set SET's parameters, gradient and moments as a trainable of their own (0: all
 * of them in a model of one set, or in full mode), laid out as in a model of that set
 * alone: what a job's optimizer, clipping, checkpoints and replica checks work on. */
struct trainable model_set_params(const struct model *m, int32_t set);

#endif
