/*
 * checkpoint.h: saving a run into OUT/checkpoints/step-NNNNNNNN.h5 and resuming from
 * one. Rank 0 saves (adapters and optimizer state are replicated and small), replaces
 * OUT/checkpoints/latest atomically, and deletes the oldest files beyond --keep.
 * Resuming picks --resume PATH, or with --resume auto the newest valid checkpoint
 * (falling back past corrupt ones), checks that it belongs to this base model and this
 * LoRA shape, and loads the trainable block, AdamW's moments and the run's position.
 */
#ifndef LORAD_CHECKPOINT_H
#define LORAD_CHECKPOINT_H

#include <stdint.h>

#include "ckpt.h"
#include "export.h"
#include "lorad.pb-c.h"
#include "model.h"

/* Where a run stands, saved and restored with the weights. */
struct run_state {
    int64_t step;    /* optimizer steps done */
    int64_t samples; /* samples consumed from the stream */
    int64_t tokens;  /* tokens consumed */
    double loss;     /* of the last step */
    double lr;       /* of the last step */
};

/* Writes the checkpoint of RS (rank 0): M's adapter set META->set (its tensors and
 * moments, as a model of that set alone holds them). N_SAMPLES: samples per epoch.
 * Returns the new file's path (the caller frees), or NULL with an error. */
char *checkpoint_save(const Lorad__JobSpec *job, const struct model *m, const struct export_meta *meta,
                      const struct run_state *rs, int32_t world_size, int64_t n_samples);
/* Resolves job->resume into a checkpoint read into C. *FOUND = 0 when "auto" finds no
 * checkpoint (a fresh start). -1 with an error when nothing valid can be read. */
int checkpoint_find(const Lorad__JobSpec *job, struct ckpt *c, char **path, int *found);
/* Checks that C fits JOB and M (base fingerprint, mode, targets, rank, alpha, rsLoRA,
 * sequence length) and loads it into M's adapter set SET (0 for a model of one) and RS. */
int checkpoint_restore(const Lorad__JobSpec *job, struct model *m, int32_t set, const struct ckpt *c,
                       struct run_state *rs);

#endif
