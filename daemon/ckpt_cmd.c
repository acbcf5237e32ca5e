/*
 * ckpt_cmd.c: inspect and export of checkpoint files (ckpt_cmd.h).
 */
#include "ckpt_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt.h"
#include "error.h"
#include "export.h"
#include "outputs.h"

int ckpt_inspect(const struct command_call *call) {
    const Lorad__CheckpointSpec *spec = (const Lorad__CheckpointSpec *)call->spec[0];
    struct ckpt c;
    if (ckpt_read(spec->checkpoint, &c)) return -1;
    char when[64];
    time_t wall = (time_t)c.wall_time;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&wall));
    printf("checkpoint   %s\n", spec->checkpoint);
    printf("step         %lld\n", (long long)c.step);
    printf("samples      %lld (epoch %lld, position %lld of %lld)\n", (long long)c.samples,
           (long long)(c.n_samples ? c.samples / c.n_samples : 0), (long long)(c.n_samples ? c.samples % c.n_samples : 0),
           (long long)c.n_samples);
    printf("tokens       %lld\n", (long long)c.tokens);
    printf("loss         %.6f (lr %.3g)\n", c.loss, c.lr);
    printf("world size   %d\n", c.world_size);
    printf("saved        %s\n", when);
    printf("base model   fingerprint %016llx\n", (unsigned long long)c.fingerprint);
    int64_t total = 0;
    for (int32_t i = 0; i < c.n_tensors; i++)
        total += c.tensors[i].shape[0] * (c.tensors[i].ndim == 2 ? c.tensors[i].shape[1] : 1);
    printf("%-12s %d tensors, %lld parameters, optimizer state %llu values\n", c.group, c.n_tensors,
           (long long)total, (unsigned long long)c.n);
    for (int32_t i = 0; i < c.n_tensors; i++) {
        const struct ckpt_tensor *t = &c.tensors[i];
        if (t->ndim == 2)
            printf("  %-70s [%lld, %lld]\n", t->name, (long long)t->shape[0], (long long)t->shape[1]);
        else
            printf("  %-70s [%lld]\n", t->name, (long long)t->shape[0]);
    }
    printf("job\n%s", c.job_json);
    ckpt_free(&c);
    return 0;
}

/* What export writes into --out: an adapter's files or a full model's (either, so that
 * one directory never holds both). */
static const char *const export_files_all[] = {
    OUTPUTS_WITH_TMP("adapter_config.json"), OUTPUTS_WITH_TMP("adapter_model.safetensors"),
    OUTPUTS_WITH_TMP("config.json"), OUTPUTS_WITH_TMP("model.safetensors"), NULL,
};

int ckpt_export(const struct command_call *call) {
    const Lorad__CheckpointSpec *spec = (const Lorad__CheckpointSpec *)call->spec[0];
    if (outputs_claim(spec->out, export_files_all, spec->overwrite, "--out", "an export")) return -1;
    struct ckpt c;
    if (ckpt_read(spec->checkpoint, &c)) return -1;
    if (spec->overwrite && outputs_remove(spec->out, export_files_all)) {
        ckpt_free(&c);
        return -1;
    }
    struct st_write_entry *e = xcalloc((size_t)c.n_tensors + 1, sizeof *e);
    for (int32_t i = 0; i < c.n_tensors; i++)
        e[i] = (struct st_write_entry){.name = c.tensors[i].name, .data = c.tensors[i].data, .ndim = c.tensors[i].ndim,
                                       .shape = {c.tensors[i].shape[0], c.tensors[i].shape[1]}, .dtype = ST_DTYPE_F32};
    int full = strcmp(c.group, "params") == 0;
    int rc = export_write_dir(spec->out, full, c.config_json, e, c.n_tensors);
    if (rc == 0) fprintf(stderr, "lorad: wrote %s from step %lld\n", spec->out, (long long)c.step);
    free(e);
    ckpt_free(&c);
    return rc;
}
