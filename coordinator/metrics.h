/*
 * metrics.h: what a run reports: one JSON object per step in OUT/metrics.jsonl, and a
 * progress line on stderr (one updating line on a terminal, plain periodic lines
 * otherwise). Every line shown on stderr also goes to OUT/train.log, the log that
 * `lorad logs` streams.
 */
#ifndef LORAD_METRICS_H
#define LORAD_METRICS_H

#include <stdint.h>
#include <stdio.h>

struct step_report {
    int64_t step;          /* 1-based */
    double loss;           /* of this step's forward, before its update */
    double lr;
    double grad_norm;      /* before clipping */
    int64_t tokens;        /* tokens processed in the step (G·T) */
    int64_t target_tokens; /* targets counted in the loss */
    int64_t allreduce_bytes; /* bytes each rank all-reduced this step (0 alone) */
    double comm_s;         /* seconds in the all-reduce */
    double wait_s;         /* seconds waiting for the other ranks before it */
    double step_s;
    double elapsed_s;
    double val_loss;       /* NaN when the step ran no evaluation */
};

struct metrics {
    FILE *jsonl;
    FILE *log; /* OUT/train.log */
    int tty;
    int64_t total_steps;
    int64_t log_every;
    int line_open; /* a terminal progress line awaits its newline */
};

/* Opens OUT/metrics.jsonl: a fresh file, or when resuming after step RESUME_STEP the
 * existing one cut back to its rows of steps up to RESUME_STEP (a crash may have left
 * later rows); and OUT/train.log, fresh or (resuming) appended to. -1 with an error
 * naming the file. */
int metrics_open(struct metrics *mt, const char *out_dir, int64_t total_steps, int64_t log_every,
                 int64_t resume_step);
/* Appends the row and updates the progress line. */
void metrics_step(struct metrics *mt, const struct step_report *r);
/* Prints a message line "lorad: ..." on stderr without breaking the progress line. */
void metrics_say(struct metrics *mt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void metrics_close(struct metrics *mt);
/* Writes OUT/profile.jsonl (atomically): one row per product shape of the profile that
 * STEPS steps gathered (gemm_profile_rows). -1 with an error naming the file. */
int metrics_profile(const char *out_dir, int64_t steps);

#endif
