/*
 * infer_cmd.c: eval and merge (infer_cmd.h).
 */
#include "infer_cmd.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "error.h"
#include "eval.h"
#include "export.h"
#include "fileio.h"
#include "gemm.h"
#include "merge.h"
#include "model.h"
#include "outputs.h"
#include "provenance.h"
#include "rundata.h"
#include "tok_text.h"

/* M over MODEL_DIR with the N adapters in ADAPTERS unmerged, set g from ADAPTERS[g]. */
static int sets_open(struct model *m, const char *model_dir, char *const *adapters, int32_t n, int32_t B, int32_t T) {
    if (n > LORA_MAX_SETS) {
        err_set("--adapter", "is given %d times; at most %d adapters run in one pass", n, LORA_MAX_SETS);
        return err_hint("split them over several runs");
    }
    struct adapter_dir dirs[LORA_MAX_SETS];
    struct lora_spec specs[LORA_MAX_SETS];
    int32_t opened = 0;
    int rc = 0;
    for (; opened < n && rc == 0; opened++) {
        rc = adapter_dir_open(&dirs[opened], adapters[opened]);
        if (rc == 0) specs[opened] = dirs[opened].spec;
    }
    if (rc) opened--;
    struct model_options o = {.dir = model_dir, .inference = 1, .max_batch = n * B, .seq = T, .sets = specs,
                              .n_sets = n};
    if (rc == 0) rc = model_init(m, &o);
    for (int32_t g = 0; g < n && rc == 0; g++)
        if ((rc = adapter_import(m, g, adapters[g]))) model_free(m);
    for (int32_t g = 0; g < n && rc == 0; g++) /* the specs pointed into DIRS, freed now */
        m->sets[g] = (struct lora_spec){.rank = m->sets[g].rank, .alpha = m->sets[g].alpha,
                                        .rslora = m->sets[g].rslora};
    for (int32_t g = 0; g < opened; g++) adapter_dir_free(&dirs[g]);
    return rc;
}

int infer_model_open(struct model *m, const char *model_dir, char *const *adapters, int32_t n, int merge, int32_t B,
                     int32_t T, int all_logits) {
    CHECK(!merge || n <= 1);
    CHECK(!all_logits || merge || n == 0);
    if (!merge && n > 0) return sets_open(m, model_dir, adapters, n, B, T);
    struct model_options o = {.dir = model_dir, .writable = n == 1, .inference = 1, .all_logits = all_logits,
                              .max_batch = B, .seq = T};
    if (model_init(m, &o)) return -1;
    if (n == 1 && model_merge_adapter(m, adapters[0])) {
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

/* A JSON number, or null for NaN (no targets). */
static json_t *json_number(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* One line of eval's result: its adapter first when it is one of several (ADAPTER not
 * NULL), as text or, with --json, a JSON object. */
static void result_print(const Lorad__EvalSpec *s, const char *adapter, const struct eval_result *r) {
    if (!s->json) {
        if (adapter) printf("adapter %s  ", adapter);
        printf("loss %.6f  perplexity %.4f  tokens %lld  samples %lld\n", r->loss, exp(r->loss), (long long)r->targets,
               (long long)r->samples);
        return;
    }
    json_t *o = json_object();
    if (adapter) json_object_set_new(o, "adapter", json_string(adapter)); /* UTF-8: eval_cmd checked */
    json_object_set_new(o, "loss", json_number(r->loss));
    json_object_set_new(o, "perplexity", json_number(exp(r->loss)));
    json_object_set_new(o, "tokens", json_integer(r->targets));
    json_object_set_new(o, "samples", json_integer(r->samples));
    char *text = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    printf("%s\n", text);
    free(text);
    json_decref(o);
}

int eval_cmd(const struct command_call *call) {
    const Lorad__EvalSpec *s = (const Lorad__EvalSpec *)call->spec[0];
    struct comm *comm = call->comm;
    if (s->logits[0] && comm->size > 1) return err_set("--logits", "needs a single process (run without mpirun)");
    gemm_set_threads(s->threads ? s->threads : comm_node_cores(comm));
    if (s->logits[0] && s->n_adapter > 1) return err_set("--logits", "takes a model with at most one --adapter");
    for (size_t g = 0; s->json && s->n_adapter > 1 && g < s->n_adapter; g++) /* each names its line */
        if (!utf8_valid(s->adapter[g], strlen(s->adapter[g]))) {
            err_set(s->adapter[g], "the path is not valid UTF-8");
            return err_hint("--json names each adapter by its path, which must be UTF-8");
        }
    const int32_t K = s->n_adapter > 1 ? (int32_t)s->n_adapter : 1;
    struct model m;
    struct tokens ds = {0};
    int rc = infer_model_open(&m, s->model, s->adapter, (int32_t)s->n_adapter, s->n_adapter == 1, s->batch, s->seq,
                              s->logits[0] != '\0');
    int loaded = rc == 0;
    if (rc == 0) rc = data_open(s, comm, &m, &ds);
    struct eval_result r[LORA_MAX_SETS] = {{0}};
    struct batch b = {0};
    if (comm_agree(comm, rc != 0) == 0) {
        batch_init(&b, s->batch, m.T);
        rc = eval_run(comm, &m, &b, &ds, s->batch, s->max_batches, r);
        if (rc == 0 && s->logits[0]) rc = logits_write(&m, &b, &ds, r[0].samples, s->logits);
        batch_free(&b);
    } else {
        rc = -1;
    }
    for (int32_t g = 0; g < K && rc == 0 && comm->rank == 0; g++) result_print(s, K > 1 ? s->adapter[g] : NULL, &r[g]);
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
    char *const adapters[1] = {s->adapter};
    if (infer_model_open(&m, s->model, adapters, 1, 1, 1, 1, 0)) return -1;
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
