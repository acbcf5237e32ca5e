/*
 * job.c: JobSpec validation, patterns and the learning-rate schedule (job.h).
 */
#include "job.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "flags.h"
#include "hf_config.h"
#include "model.h"
#include "protojson.h"

/* One MODULE=VALUE item of FLAG into P, its key copied to KEY: a rank (an integer, at
 * least 1) or an alpha (positive). */
static int pattern_parse(const char *flag, const char *item, int is_rank, struct peft_pattern *p, char *key) {
    const char *eq = strchr(item, '=');
    char *end = NULL;
    double v = !eq ? 0 : is_rank ? (double)strtol(eq + 1, &end, 10) : strtod(eq + 1, &end);
    int digits = eq && (!is_rank || (eq[1] >= '0' && eq[1] <= '9'));
    if (!eq || eq == item || !end || *end || end == eq + 1 || !digits || !(v > 0 && v < FLT_MAX) ||
        (is_rank && v > INT32_MAX)) {
        err_set(flag, "'%s' is not MODULE=%s", item, is_rank ? "RANK" : "ALPHA");
        return err_hint("e.g. %s q_proj=%s,down_proj=%s", flag, is_rank ? "16" : "32", is_rank ? "4" : "8");
    }
    memcpy(key, item, (size_t)(eq - item));
    key[eq - item] = '\0';
    if (!peft_key_plain(key)) {
        err_set(flag, "'%s' is a regex", key);
        return err_hint("lorad matches module names and dotted suffixes only");
    }
    *p = (struct peft_pattern){.key = key, .r = is_rank ? (int32_t)v : 0, .alpha = is_rank ? 0 : v};
    return 0;
}

int job_patterns(const Lorad__JobSpec *job, struct peft_pattern **out, int32_t *n) {
    const size_t count = job->n_rank_pattern + job->n_alpha_pattern;
    size_t chars = 0;
    for (size_t i = 0; i < count; i++)
        chars += strlen(i < job->n_rank_pattern ? job->rank_pattern[i] : job->alpha_pattern[i - job->n_rank_pattern]) + 1;
    /* the patterns, then their keys, in one allocation */
    *out = xcalloc(1, (count + 1) * sizeof **out + chars + 1);
    char *keys = (char *)(*out + count + 1);
    *n = 0;
    for (size_t i = 0; i < count; i++) {
        int is_rank = i < job->n_rank_pattern;
        const char *item = is_rank ? job->rank_pattern[i] : job->alpha_pattern[i - job->n_rank_pattern];
        if (pattern_parse(is_rank ? "--rank-pattern" : "--alpha-pattern", item, is_rank, &(*out)[*n], keys)) {
            free(*out);
            *out = NULL;
            return -1;
        }
        keys += strlen(keys) + 1;
        (*n)++;
    }
    return 0;
}

int job_lora_spec(const Lorad__JobSpec *job, struct lora_spec *spec, struct peft_pattern **patterns) {
    *spec = (struct lora_spec){.targets = (const char *const *)job->targets, .n_targets = (int32_t)job->n_targets,
                               .rank = job->rank, .alpha = (float)job->alpha, .rslora = job->rslora,
                               .init_gaussian = job->init == LORAD__INIT__INIT_GAUSSIAN, .seed = job->seed};
    if (job_patterns(job, patterns, &spec->n_patterns)) return -1;
    spec->patterns = *patterns;
    return 0;
}

int job_validate(const Lorad__JobSpec *job) {
    if (flags_check(&job->base, NULL)) return -1;
    int full = job->mode == LORAD__MODE__MODE_FULL;
    if (job->batch % job_micro_batch(job)) {
        err_set("--micro-batch", "%d does not divide --batch %d", job->micro_batch, job->batch);
        return err_hint("choose a micro-batch that divides the batch");
    }
    if (job->overwrite && job->resume[0] && strcmp(job->resume, "auto") != 0) {
        err_set("--overwrite", "starts the run again, --resume %s continues one", job->resume);
        return err_hint("drop one of them");
    }
    if (full && job->init_adapter[0]) return err_set("--init-adapter", "has no meaning with --mode full");
    struct peft_pattern *patterns;
    int32_t n_patterns;
    if (job_patterns(job, &patterns, &n_patterns)) return -1;
    free(patterns);
    if (full && n_patterns)
        return err_set(job->n_rank_pattern ? "--rank-pattern" : "--alpha-pattern",
                       "applies to LoRA adapters; --mode full has none");
    if (full && (job->dropout > 0 || job->rslora))
        return err_set(job->rslora ? "--rslora" : "--dropout", "applies to LoRA adapters; --mode full has none");
    if (full && job->base_dtype != LORAD__BASE_DTYPE__BASEDTYPE_F32) {
        char name[16];
        err_set("--base-dtype", "%s applies to frozen weights; --mode full trains every weight in f32",
                proto_enum_short(protobuf_c_enum_descriptor_get_value(&lorad__base_dtype__descriptor,
                                                                      job->base_dtype)->name,
                                 name, sizeof name));
        return err_hint("drop --base-dtype or use --mode lora");
    }
    return 0;
}

int job_resolve(Lorad__JobSpec *job) {
    struct model_config cfg;
    if (hf_config_read(&cfg, job->model)) return -1;
    if (job->seq == 0) job->seq = model_seq_default(&cfg);
    return model_seq_check(&cfg, job->seq);
}

int32_t job_micro_batch(const Lorad__JobSpec *job) { return job->micro_batch ? job->micro_batch : job->batch; }

double job_lr(const Lorad__JobSpec *job, int64_t step) {
    const double warmup = (double)job->warmup, total = (double)job->steps, s = (double)step;
    if (step < job->warmup) return job->lr * s / (warmup > 1 ? warmup : 1);
    double rest = total - warmup > 1 ? total - warmup : 1;
    switch (job->schedule) {
    case LORAD__SCHEDULE__SCHEDULE_LINEAR:
        return job->lr * fmax(0.0, (total - s) / rest);
    case LORAD__SCHEDULE__SCHEDULE_COSINE:
        return job->lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * (s - warmup) / rest)));
    default:
        return job->lr;
    }
}
