/*
 * infer_cmd.c: eval and merge (infer_cmd.h).
 */
#include "infer_cmd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "error.h"
#include "eval.h"
#include "fileio.h"
#include "gemm.h"
#include "merge.h"
#include "model.h"
#include "outputs.h"
#include "provenance.h"
#include "rundata.h"

int infer_model_open(struct model *m, const char *model_dir, const char *adapter, int32_t B, int32_t T) {
    struct model_options o = {.dir = model_dir, .writable = adapter[0] != '\0', .inference = 1, .max_batch = B, .seq = T};
    if (model_init(m, &o)) return -1;
    if (adapter[0] && model_merge_adapter(m, adapter)) {
        model_free(m);
        return -1;
    }
    return 0;
}

/* Writes the logits of the first N samples of DS to PATH: float32 (N, T, V), C order. */
static int logits_write(struct model *m, struct batch *b, const struct tokens *ds, int64_t n, const char *path) {
    struct file_atomic fa;
    if (file_atomic_open(&fa, path)) return -1;
    int64_t *ids = xcalloc((size_t)b->cap, sizeof *ids);
    const size_t row = (size_t)b->T * m->cfg.vocab_size * sizeof(float);
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i += b->cap) {
        int32_t k = (int32_t)(n - i < b->cap ? n - i : b->cap);
        for (int32_t j = 0; j < k; j++) ids[j] = i + j;
        rc = batch_load(b, ds, ids, k);
        if (rc == 0) model_forward(m, b->inp, batch_start(b, 0), NULL, NULL, k, NULL, 0.0f);
        if (rc == 0) rc = file_atomic_write(&fa, m->logits, (size_t)k * row);
    }
    free(ids);
    if (rc) {
        file_atomic_abort(&fa);
        return -1;
    }
    return file_atomic_commit(&fa);
}

/* --data: a token file, or .jsonl or .txt that this rank prepares as lorad prep would
 * (the same tokens on every rank), for M's vocabulary and T (--seq, or the default). */
static int data_open(const Lorad__EvalSpec *s, const struct comm *comm, struct model *m, struct tokens *ds) {
    struct rundata_options o = rundata_eval_options(s);
    if (!dataset_is_text(s->data))
        return rundata_check(s->data, &o) ? -1
                                          : provenance_open(ds, s->data, s->model, m->cfg.vocab_size, m->T, s->packing,
                                                            s->truncate);
    o.quiet = comm->rank != 0;
    if (!o.threads) o.threads = comm_node_cores(comm);
    char *path;
    int rc = rundata_temp(s->model, s->data, &o, &path);
    if (rc == 0) rc = provenance_open(ds, path, s->model, m->cfg.vocab_size, m->T, s->packing, s->truncate);
    rundata_temp_remove(path);
    free(path);
    return rc;
}

int eval_cmd(const struct command_call *call) {
    const Lorad__EvalSpec *s = (const Lorad__EvalSpec *)call->spec[0];
    struct comm *comm = call->comm;
    if (s->logits[0] && comm->size > 1) return err_set("--logits", "needs a single process (run without mpirun)");
    gemm_set_threads(s->threads ? s->threads : comm_node_cores(comm));
    struct model m;
    struct tokens ds = {0};
    int rc = infer_model_open(&m, s->model, s->adapter, s->batch, s->seq);
    int loaded = rc == 0;
    if (rc == 0) rc = data_open(s, comm, &m, &ds);
    struct eval_result r = {0};
    struct batch b = {0};
    if (comm_agree(comm, rc != 0) == 0) {
        batch_init(&b, s->batch, m.T);
        rc = eval_run(comm, &m, &b, &ds, s->batch, s->max_batches, &r);
        if (rc == 0 && s->logits[0]) rc = logits_write(&m, &b, &ds, r.samples, s->logits);
        batch_free(&b);
    } else {
        rc = -1;
    }
    if (rc == 0 && comm->rank == 0) {
        if (s->json)
            printf("{\"loss\": %.9g, \"perplexity\": %.9g, \"tokens\": %lld, \"samples\": %lld}\n", r.loss, exp(r.loss),
                   (long long)r.targets, (long long)r.samples);
        else
            printf("loss %.6f  perplexity %.4f  tokens %lld  samples %lld\n", r.loss, exp(r.loss), (long long)r.targets,
                   (long long)r.samples);
    }
    tokens_close(&ds);
    if (loaded) model_free(&m);
    return rc;
}

/* Copies the tokenizer and generation files of SRC into DST, as they are. */
static int extras_copy(const char *src, const char *dst) {
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                                        "merges.txt", "special_tokens_map.json", "added_tokens.json",
                                        "generation_config.json", "config.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *from = path_join(src, names[i]), *to = path_join(dst, names[i]);
        size_t n;
        char *data = access(from, F_OK) == 0 ? file_read_all(from, &n) : NULL;
        int rc = data ? file_write_atomic(to, data, n) : access(from, F_OK) == 0 ? -1 : 0;
        free(data);
        free(from);
        free(to);
        if (rc) return -1;
    }
    return 0;
}

/* What merge writes into --out: the weights (one file, or shards and their index) and
 * the files extras_copy copies. */
static const char *const merge_files[] = {
    OUTPUTS_WITH_TMP("model.safetensors"), OUTPUTS_WITH_TMP("model-[0-9]*-of-[0-9]*.safetensors"),
    OUTPUTS_WITH_TMP("model.safetensors.index.json"), OUTPUTS_WITH_TMP("config.json"),
    OUTPUTS_WITH_TMP("generation_config.json"), OUTPUTS_WITH_TMP("tokenizer.json"),
    OUTPUTS_WITH_TMP("tokenizer_config.json"), OUTPUTS_WITH_TMP("tokenizer.model"), OUTPUTS_WITH_TMP("vocab.json"),
    OUTPUTS_WITH_TMP("merges.txt"), OUTPUTS_WITH_TMP("special_tokens_map.json"), OUTPUTS_WITH_TMP("added_tokens.json"),
    NULL,
};

/* Whether paths A and B name the same existing directory. */
static int same_dir(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int merge_cmd(const struct command_call *call) {
    const Lorad__MergeSpec *s = (const Lorad__MergeSpec *)call->spec[0];
    if (same_dir(s->out, s->model)) {
        err_set("--out", "%s is the --model directory", s->out);
        return err_hint("merge into a directory of its own");
    }
    if (outputs_claim(s->out, merge_files, s->overwrite, "--out", "a model")) return -1;
    struct model m;
    if (infer_model_open(&m, s->model, s->adapter, 1, 1)) return -1;
    static const enum st_dtype dtypes[] = {ST_DTYPE_F32, ST_DTYPE_BF16, ST_DTYPE_F16};
    int32_t n;
    struct st_write_entry *e = model_weights(&m, dtypes[s->dtype], &n);
    int rc = s->overwrite ? outputs_remove(s->out, merge_files) : 0;
    if (rc == 0) rc = dir_make(s->out);
    if (rc == 0) rc = st_set_write(s->out, e, n, (uint64_t)(s->max_shard_mb * 1048576.0));
    if (rc == 0) rc = extras_copy(s->model, s->out);
    if (rc == 0) fprintf(stderr, "lorad: wrote %s (%s + %s)\n", s->out, s->model, s->adapter);
    free(e);
    model_free(&m);
    return rc;
}
