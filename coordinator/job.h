/*
 * job.h: a training job's spec (the proto JobSpec; its defaults and ranges are rows of
 * the flag table, flags.h): the checks that every value makes sense before any rank
 * starts work, and what the values imply. Errors name the flag.
 */
#ifndef LORAD_JOB_H
#define LORAD_JOB_H

#include "lorad.pb-c.h"
#include "lora.h"
#include "peft.h"

/* Checks the flag table's ranges and the combinations; -1 with an error naming the flag. */
int job_validate(const Lorad__JobSpec *job);
/* Fills in what depends on the model (read from its config.json): --seq 0 becomes
 * model_seq_default. -1 with an error when the config cannot be read or --seq exceeds
 * the model's context. Rank 0 runs it once, before the job goes to the other ranks, so
 * the resolved value is the one every rank uses and the checkpoint keeps. */
int job_resolve(Lorad__JobSpec *job);
/* The job's --rank-pattern and --alpha-pattern items (MODULE=VALUE) as PEFT patterns,
 * rank items first; keys point into JOB; the caller frees *OUT. -1 with an error naming
 * the flag when an item is malformed. */
int job_patterns(const Lorad__JobSpec *job, struct peft_pattern **out, int32_t *n);
/* The job's adapter set (LoRA mode): targets, rank, alpha, rsLoRA, init and seed, and its
 * patterns (job_patterns; the caller frees *PATTERNS). -1 as job_patterns. */
int job_lora_spec(const Lorad__JobSpec *job, struct lora_spec *spec, struct peft_pattern **patterns);
/* Sequences per forward: --micro-batch, or --batch when 0. */
int32_t job_micro_batch(const Lorad__JobSpec *job);
/* The learning rate of step STEP (0-based) under the job's schedule and warmup, with
 * Hugging Face's formulas (get_{constant,linear,cosine}_schedule_with_warmup). */
double job_lr(const Lorad__JobSpec *job, int64_t step);

#endif
