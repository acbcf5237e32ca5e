/*
 * test_ckpt.c: HDF5 checkpoints (storage/ckpt.c). A realistic checkpoint round-trips
 * field by field and byte by byte, its tensors in the order written; an empty one
 * does too. Truncated, bit-flipped, incomplete, foreign and partial files fail with
 * one line naming the file and the problem; a failed write (no directory, a full
 * disk) leaves neither a temporary file nor a changed checkpoint behind, and no
 * HDF5 object stays open. Files go to $LORAD_TEST_TMP/ckpt. Exits 1 on any failure.
 */
#include "check.h"
#include "ckpt.h"
#include "error.h"
#include "fileio.h"

#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *tmp_dir; /* scratch_dir("ckpt") */

/* Tensor names out of alphabetical order, to see the creation order kept. */
static const char *const tensor_names[] = {
    "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight",
    "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight",
    "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
    "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
    "base_model.model.transformer.ln_f.bias",
};
static const int64_t tensor_shapes[][2] = {{8, 64}, {192, 8}, {8, 64}, {192, 8}, {64, 0}};
#define N_TENSORS 5
#define N_MOMENTS 3000
#define JOB_BYTES 300

static void expect_read_fails(const char *path, const char *want) {
    struct ckpt c;
    memset(&c, 0xab, sizeof c); /* ckpt_read must not trust what was there */
    EXPECT_ERROR(ckpt_read(path, &c), path, want);
    EXPECT(c.tensors == NULL && c.m == NULL && c.job == NULL && c.group == NULL); /* released */
    ckpt_free(&c);
}

/* No HDF5 object (file, group, dataset, attribute, type...) is left open. */
static void expect_h5_closed(void) { EXPECT(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0); }

static float *floats_make(size_t n, float scale, float shift) {
    float *p = xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = scale * (float)((i * 7919) % 1000) + shift;
    return p;
}

/* A checkpoint like the ones training writes, every field set. */
static void sample_make(struct ckpt *c) {
    *c = (struct ckpt){.step = 1234,
                       .samples = 98765,
                       .tokens = 98765LL * 1024,
                       .n_samples = 50000,
                       .loss = 2.345678901234567,
                       .lr = 3e-4,
                       .world_size = 4,
                       .wall_time = 1764000000.25,
                       .seed = 0xdeadbeefcafef00dULL, /* above INT64_MAX */
                       .fingerprint = 0xfedcba9876543210ULL,
                       .n = N_MOMENTS,
                       .job_len = JOB_BYTES};
    c->group = xstrdup("adapter");
    c->config_json = xstrdup("{\"r\": 8, \"lora_alpha\": 16, \"target_modules\": [\"c_attn\"], \"note\": \"caf\xc3\xa9\"}");
    c->job_json = xstrdup("{\"model\": \"/models/gpt2\", \"steps\": 5000, \"lr\": 0.0003}");
    c->n_tensors = N_TENSORS;
    c->tensors = xcalloc(N_TENSORS, sizeof *c->tensors);
    for (int i = 0; i < N_TENSORS; i++) {
        struct ckpt_tensor *t = &c->tensors[i];
        t->name = xstrdup(tensor_names[i]);
        t->ndim = tensor_shapes[i][1] ? 2 : 1;
        t->shape[0] = tensor_shapes[i][0];
        t->shape[1] = tensor_shapes[i][1];
        t->data = floats_make((size_t)(t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1)), 0.001f * (float)(i + 1), -0.5f);
    }
    c->m = floats_make(N_MOMENTS, 1e-4f, -0.05f);
    c->v = floats_make(N_MOMENTS, 1e-7f, 1e-9f);
    c->job = xmalloc(JOB_BYTES);
    for (int i = 0; i < JOB_BYTES; i++) c->job[i] = i % 7 ? (uint8_t)(i * 37) : 0; /* zeros inside */
}

static int64_t tensor_count(const struct ckpt_tensor *t) { return t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1); }

/* Every field of B equals A's, floats bit for bit. */
static void expect_same(const struct ckpt *a, const struct ckpt *b) {
    EXPECT(a->step == b->step && a->samples == b->samples && a->tokens == b->tokens);
    EXPECT(a->n_samples == b->n_samples && a->world_size == b->world_size);
    EXPECT(a->loss == b->loss && a->lr == b->lr && a->wall_time == b->wall_time);
    EXPECT(a->seed == b->seed && a->fingerprint == b->fingerprint);
    EXPECT(!strcmp(a->group, b->group) && !strcmp(a->config_json, b->config_json));
    EXPECT(!strcmp(a->job_json, b->job_json));
    EXPECT(a->job_len == b->job_len && (a->job_len == 0 || !memcmp(a->job, b->job, a->job_len)));
    EXPECT(a->n == b->n);
    EXPECT(a->n == 0 || (!memcmp(a->m, b->m, a->n * sizeof *a->m) && !memcmp(a->v, b->v, a->n * sizeof *a->v)));
    EXPECT(a->n_tensors == b->n_tensors);
    for (int32_t i = 0; i < a->n_tensors && i < b->n_tensors; i++) {
        const struct ckpt_tensor *s = &a->tensors[i], *t = &b->tensors[i];
        EXPECT(!strcmp(s->name, t->name) && s->ndim == t->ndim && s->shape[0] == t->shape[0]);
        EXPECT(s->ndim == 1 || s->shape[1] == t->shape[1]);
        EXPECT(!memcmp(s->data, t->data, (size_t)tensor_count(s) * sizeof *s->data));
    }
}

/* Dataset NAME of the checkpoint at PATH is chunked with Fletcher32. */
static void expect_checksummed(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(d);
    EXPECT(H5Pget_layout(dcpl) == H5D_CHUNKED);
    unsigned flags = 0, conf = 0;
    size_t n_values = 0;
    EXPECT(H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &n_values, NULL, 0, NULL, &conf) >= 0);
    H5Pclose(dcpl);
    H5Dclose(d);
    H5Fclose(f);
}

/* String attribute NAME of the root of PATH equals WANT. */
static void expect_root_str(const char *path, const char *name, const char *want) {
    char buf[64] = {0};
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    EXPECT(H5Tget_size(t) < sizeof buf && H5Aread(a, t, buf) >= 0 && !strcmp(buf, want));
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
}

static void test_round_trip(const char *path) {
    struct ckpt c, back;
    sample_make(&c);
    c.step = 1; /* then replaced in place */
    EXPECT(ckpt_write(path, &c) == 0);
    c.step = 1234;
    EXPECT(ckpt_write(path, &c) == 0);
    EXPECT(ckpt_read(path, &back) == 0);
    expect_same(&c, &back);
    ckpt_free(&back);
    ckpt_free(&back); /* safe twice */
    expect_checksummed(path, "/optimizer/m");
    expect_checksummed(path, "/job/spec");
    expect_checksummed(path, "/adapter/base_model.model.transformer.h.0.attn.c_attn.lora_B.weight");
    expect_root_str(path, "base_fingerprint_hex", "fedcba9876543210");
    expect_root_str(path, "lorad_version", LORAD_VERSION);

    /* Full mode, with /params. */
    char *full = path_join(tmp_dir, "full.h5");
    free(c.group);
    c.group = xstrdup("params");
    EXPECT(ckpt_write(full, &c) == 0);
    EXPECT(ckpt_read(full, &back) == 0);
    expect_same(&c, &back);
    ckpt_free(&back);
    ckpt_free(&c);
    free(full);
    EXPECT_NO_TEMPORARIES(tmp_dir);
    expect_h5_closed();
}

/* No tensors, no moments, no job bytes, empty strings. */
static void test_empty(void) {
    struct ckpt c = {.world_size = 1}, back;
    c.group = "params";
    c.config_json = c.job_json = "";
    char *path = path_join(tmp_dir, "empty.h5");
    EXPECT(ckpt_write(path, &c) == 0);
    EXPECT(ckpt_read(path, &back) == 0);
    expect_same(&c, &back);
    EXPECT(back.n_tensors == 0 && back.n == 0 && back.job_len == 0);
    ckpt_free(&back);
    free(path);
    expect_h5_closed();
}

/* The good checkpoint at GOOD, cut to several lengths. */
static void test_truncated(const char *good) {
    size_t len;
    char *bytes = file_read_all(good, &len);
    CHECK(bytes && len > 4096);
    char *path = path_join(tmp_dir, "cut.h5");
    size_t cuts[] = {0, 7, 100, 2048, len / 3, len / 2, len - 4096, len - 100, len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        scratch_put(path, bytes, cuts[k]);
        expect_read_fails(path, "");
    }
    scratch_put(path, bytes, len - 1);
    expect_read_fails(path, "truncated");
    free(path);
    free(bytes);
    expect_h5_closed();
}

/* The file offset and size of the first chunk of dataset NAME in PATH. */
static void chunk_find(const char *path, const char *name, haddr_t *addr, hsize_t *size) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    hsize_t offset[2];
    unsigned mask;
    CHECK(H5Dget_chunk_info(d, space, 0, offset, &mask, addr, size) >= 0);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
}

/* One byte flipped inside the raw data of dataset NAME of GOOD's copy. */
static void test_flipped(const char *good, const char *name, double where) {
    size_t len;
    char *bytes = file_read_all(good, &len);
    CHECK(bytes);
    haddr_t addr;
    hsize_t size;
    chunk_find(good, name, &addr, &size);
    CHECK(addr + size <= len);
    bytes[addr + (hsize_t)(where * (double)(size - 1))] ^= 0xff;
    char *path = path_join(tmp_dir, "flipped.h5");
    scratch_put(path, bytes, len);
    char want[512];
    snprintf(want, sizeof want, "checksum mismatch in %s (hint: the file is corrupt", name);
    expect_read_fails(path, want);
    free(path);
    free(bytes);
    expect_h5_closed();
}

/* Copies GOOD to a new file, applies EDIT to it through HDF5 and expects the read to
 * fail with WANT. */
static void test_edited(const char *good, void (*edit)(hid_t f), const char *want) {
    size_t len;
    char *bytes = file_read_all(good, &len);
    CHECK(bytes);
    char *path = path_join(tmp_dir, "edited.h5");
    scratch_put(path, bytes, len);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    edit(f);
    CHECK(H5Fclose(f) >= 0);
    expect_read_fails(path, want);
    free(path);
    free(bytes);
    expect_h5_closed();
}

static void attr_set_i64(hid_t loc, const char *name, int64_t v) {
    if (H5Aexists(loc, name) > 0) CHECK(H5Adelete(loc, name) >= 0);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Sclose(space);
}

static void edit_no_marker(hid_t f) { CHECK(H5Adelete(f, "complete") >= 0); }
static void edit_zero_marker(hid_t f) { attr_set_i64(f, "complete", 0); }
static void edit_version(hid_t f) { attr_set_i64(f, "format_version", 2); }
static void edit_no_step(hid_t f) { CHECK(H5Adelete(f, "step") >= 0); }
static void edit_no_optimizer(hid_t f) { CHECK(H5Ldelete(f, "/optimizer", H5P_DEFAULT) >= 0); }
static void edit_no_v(hid_t f) { CHECK(H5Ldelete(f, "/optimizer/v", H5P_DEFAULT) >= 0); }
static void edit_no_job_json(hid_t f) { CHECK(H5Ldelete(f, "/job/json", H5P_DEFAULT) >= 0); }
static void edit_world_size(hid_t f) { attr_set_i64(f, "world_size", 0); }

static void edit_optimizer_step(hid_t f) {
    hid_t g = H5Gopen2(f, "/optimizer", H5P_DEFAULT);
    attr_set_i64(g, "step", 1233);
    H5Gclose(g);
}

/* ATTR of OBJ becomes a string. */
static void str_attr_replace(hid_t f, const char *obj, const char *attr, const char *s) {
    CHECK(H5Adelete_by_name(f, obj, attr, H5P_DEFAULT) >= 0);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate_by_name(f, obj, attr, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, t, s) >= 0);
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(t);
}

static void edit_scheme(hid_t f) { str_attr_replace(f, "/rng", "scheme", "philox4x32"); }
static void edit_lr_type(hid_t f) { str_attr_replace(f, "/optimizer", "lr", "0.0003"); }

/* Dataset NAME of F replaced by a plain one of RANK dims DIMS of TYPE (zero-filled). */
static void dset_replace(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims) {
    CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(d >= 0);
    H5Dclose(d);
    H5Sclose(space);
}

static void edit_short_v(hid_t f) {
    hsize_t n = N_MOMENTS - 1;
    dset_replace(f, "/optimizer/v", H5T_IEEE_F32LE, 1, &n);
}

static void edit_3d_tensor(hid_t f) {
    hsize_t dims[3] = {2, 4, 64};
    dset_replace(f, "/adapter/base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", H5T_IEEE_F32LE, 3, dims);
}

static void edit_int_m(hid_t f) {
    hsize_t n = N_MOMENTS;
    dset_replace(f, "/optimizer/m", H5T_STD_I32LE, 1, &n);
}

static void edit_both_groups(hid_t f) { H5Gclose(H5Gcreate2(f, "/params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)); }
static void edit_no_group(hid_t f) { CHECK(H5Ldelete(f, "/adapter", H5P_DEFAULT) >= 0); }

static void edit_soft_link(hid_t f) {
    CHECK(H5Lcreate_soft("/optimizer/m", f, "/adapter/zz.soft", H5P_DEFAULT, H5P_DEFAULT) >= 0);
}

static void test_corrupt(const char *good) {
    test_flipped(good, "/optimizer/m", 0.5);
    test_flipped(good, "/optimizer/m", 1.0); /* the checksum itself */
    test_flipped(good, "/optimizer/v", 0.0);
    test_flipped(good, "/job/spec", 0.3);
    test_flipped(good, "/adapter/base_model.model.transformer.ln_f.bias", 0.7);
    test_edited(good, edit_no_marker, "incomplete checkpoint");
    test_edited(good, edit_zero_marker, "incomplete checkpoint");
    test_edited(good, edit_version, "checkpoint format version 2, this lorad reads version 1");
    test_edited(good, edit_no_step, "attribute \"step\" of / is missing");
    test_edited(good, edit_no_optimizer, "/optimizer/m is missing");
    test_edited(good, edit_no_v, "/optimizer/v is missing");
    test_edited(good, edit_no_job_json, "/job/json is missing");
    test_edited(good, edit_world_size, "world size 0 is out of range");
    test_edited(good, edit_optimizer_step, "the optimizer is at step 1233 but the checkpoint at step 1234");
    test_edited(good, edit_scheme, "RNG scheme \"philox4x32\"");
    test_edited(good, edit_lr_type, "attribute \"lr\" of /optimizer has the wrong type or shape");
    test_edited(good, edit_short_v, "/optimizer/m has 3000 entries but /optimizer/v has 2999");
    test_edited(good, edit_3d_tensor, "lora_A.weight has the wrong type or shape");
    test_edited(good, edit_int_m, "/optimizer/m has the wrong type or shape");
    test_edited(good, edit_both_groups, "holds both /adapter and /params");
    test_edited(good, edit_no_group, "holds neither /adapter nor /params");
    test_edited(good, edit_soft_link, "cannot list the tensors in /adapter");
}

static void test_foreign(void) {
    char *path = path_join(tmp_dir, "text.h5");
    const char text[] = "{\"this\": \"is JSON, not HDF5\"}\n";
    scratch_put(path, text, sizeof text - 1);
    expect_read_fails(path, "not an HDF5 file");
    free(path);
    path = path_join(tmp_dir, "missing.h5");
    expect_read_fails(path, "cannot open: No such file");
    free(path);
    expect_read_fails(tmp_dir, "not a regular file");
    expect_h5_closed();
}

/* ckpt_write(PATH, C) with a file size limit, so that write() fails mid-file as on a
 * full disk. In a child process: after an H5Fclose that failed on I/O, HDF5 1.10
 * keeps a freed file in its ID table and crashes when the library shuts down at exit
 * (HDFGroup/hdf5 pull request 2291), so the child leaves with _exit. */
static void write_too_large(const char *path, const struct ckpt *c) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct rlimit small = {16384, 16384};
        signal(SIGXFSZ, SIG_IGN);
        CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
        int rc = ckpt_write(path, c);
        int ok = rc == -1 && strstr(err_msg(), path) && strstr(err_msg(), "cannot write");
        if (!ok) fprintf(stderr, "FAIL %s: rc %d, error \"%s\", wanted \"cannot write\"\n", path, rc, err_msg());
        _exit(!ok);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Writes that fail leave nothing half-written: not the target, not a temporary. */
static void test_write_fails(const char *good) {
    struct ckpt c, back;
    sample_make(&c);
    char *nowhere = path_join(tmp_dir, "no/such/dir/ckpt.h5");
    EXPECT_ERROR(ckpt_write(nowhere, &c), nowhere, "cannot create");
    free(nowhere);

    /* A disk that fills up mid-write. */
    c.step = 99;
    write_too_large(good, &c);
    EXPECT(ckpt_read(good, &back) == 0 && back.step == 1234); /* the old one stands */
    ckpt_free(&back);

    /* Duplicate names: HDF5 refuses the second tensor mid-write. */
    free(c.tensors[1].name);
    c.tensors[1].name = xstrdup(c.tensors[0].name);
    EXPECT_ERROR(ckpt_write(good, &c), good, "cannot write /adapter");
    ckpt_free(&c);
    EXPECT_NO_TEMPORARIES(tmp_dir);
    expect_h5_closed();
}

int main(void) {
    tmp_dir = scratch_dir("ckpt");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char *good = path_join(tmp_dir, "ckpt.h5");
    test_round_trip(good);
    test_empty();
    test_truncated(good);
    test_corrupt(good);
    test_foreign();
    test_write_fails(good);
    free(good);
    return check_finish();
}
