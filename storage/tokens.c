/*
 * tokens.c: token datasets (tokens.h). Opens llm.c .bin shards (mmapped) and HDF5 files
 * (read through hyperslabs), validates their shape and every token against the
 * vocabulary, hands out fixed-length samples, and writes HDF5 datasets atomically.
 */
#include "tokens.h"

#include "error.h"
#include "fileio.h"
#include "h5io.h"
#include "provenance.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BIN_HEADER_BYTES 1024
#define VALIDATE_BLOCK (1 << 20) /* tokens per block when scanning a dataset */
#define FORMAT_HINT "expected an llm.c .bin shard (magic 20240520 or 20240801) or an HDF5 file with /tokens"

static const unsigned char h5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- llm.c .bin shards ---- */

/* Checks the header against the file size, then maps the file. */
static int bin_open(struct tokens *ds, int fd, int64_t size) {
    unsigned char h[BIN_HEADER_BYTES];
    if (size < BIN_HEADER_BYTES) {
        err_set(ds->path, "%lld bytes is shorter than a .bin header (%d bytes)", (long long)size, BIN_HEADER_BYTES);
        return err_hint(FORMAT_HINT);
    }
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h)
        return err_set(ds->path, "cannot read the .bin header: %s", strerror(errno));
    uint32_t magic = le32(h);
    if (magic != TOKENS_MAGIC_U16 && magic != TOKENS_MAGIC_U32) {
        err_set(ds->path, "bad magic %u", magic);
        return err_hint(FORMAT_HINT);
    }
    ds->token_bytes = magic == TOKENS_MAGIC_U16 ? 2 : 4;
    int32_t count = (int32_t)le32(h + 8);
    int64_t want = BIN_HEADER_BYTES + (int64_t)count * ds->token_bytes;
    if (count < 0 || size != want) {
        err_set(ds->path, "header says %d tokens (%lld bytes) but the file has %lld bytes", count,
                (long long)want, (long long)size);
        return err_hint("the shard is truncated or its header is wrong");
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return err_set(ds->path, "cannot map: %s", strerror(errno));
    ds->map = map;
    ds->map_size = (uint64_t)size;
    ds->n_tokens = count;
    ds->format = TOKENS_FORMAT_BIN;
    return 0;
}

/* Tokens [start, start+n) of a mapped shard; uint32 values beyond int32 saturate. */
static void bin_read(const struct tokens *ds, int64_t start, int64_t n, int32_t *tok) {
    const unsigned char *p = (const unsigned char *)ds->map + BIN_HEADER_BYTES + start * ds->token_bytes;
    for (int64_t j = 0; j < n; j++, p += ds->token_bytes) {
        uint32_t v = ds->token_bytes == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : le32(p);
        tok[j] = v > INT32_MAX ? INT32_MAX : (int32_t)v;
    }
}

/* ---- HDF5 ---- */

/* Opens NAME as a 1-D integer dataset; its id goes to *ID (closed by tokens_close). */
static int h5_open_1d(struct tokens *ds, const char *name, int64_t *id, int64_t *len) {
    hid_t d = H5Dopen2(ds->h5_file, name, H5P_DEFAULT);
    if (d < 0) return err_set(ds->path, "%s is not a readable dataset", name);
    *id = d;
    hid_t type = H5Dget_type(d);
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    size_t size = type < 0 ? 0 : H5Tget_size(type);
    if (type >= 0) H5Tclose(type);
    /* only the standard widths: libhdf5 mishandles odd ones in crafted files */
    if (cls != H5T_INTEGER || (size != 1 && size != 2 && size != 4 && size != 8)) {
        err_set(ds->path, "%s does not hold integers of 8, 16, 32 or 64 bits", name);
        return err_hint("store token ids, mask bytes and example offsets as an integer type");
    }
    hid_t space = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK];
    int rank = space < 0 ? -1 : H5Sget_simple_extent_dims(space, dims, NULL);
    if (space >= 0) H5Sclose(space);
    if (rank != 1) return err_set(ds->path, "%s has %d dimensions, expected 1", name, rank);
    if (dims[0] > INT64_MAX)
        return err_set(ds->path, "%s is too long (%llu entries)", name, (unsigned long long)dims[0]);
    *len = (int64_t)dims[0];
    return 0;
}

/* The attributes lorad prep records about the tokenizer, when present. */
static int h5_open_meta(struct tokens *ds) {
    int has = h5_get_attr_i64(ds->h5_file, "vocab_size", &ds->vocab_size);
    if (has < 0 || (has && ds->vocab_size < 1))
        return err_set(ds->path, "attribute vocab_size is not a positive integer"), err_hint("the file may be corrupt");
    has = h5_get_attr_str(ds->h5_file, "tokenizer_fingerprint", &ds->fingerprint);
    if (has < 0 || (has && !provenance_is_fingerprint(ds->fingerprint)))
        return err_set(ds->path, "attribute tokenizer_fingerprint is not %d hex digits", PROVENANCE_HEX),
               err_hint("the file may be corrupt");
    return 0;
}

/* Reads entries [start, start+n) of dataset D into OUT as MEM_TYPE. */
static int h5_read(const struct tokens *ds, hid_t d, const char *name, int64_t start, int64_t n, hid_t mem_type,
                   void *out) {
    hsize_t off = (hsize_t)start, cnt = (hsize_t)n;
    hid_t fspace = H5Dget_space(d);
    hid_t mspace = H5Screate_simple(1, &cnt, NULL);
    herr_t rc = -1;
    if (fspace >= 0 && mspace >= 0 && H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &off, NULL, &cnt, NULL) >= 0)
        rc = H5Dread(d, mem_type, mspace, fspace, H5P_DEFAULT, out);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (rc < 0) {
        err_set(ds->path, "cannot read %s [%lld, %lld)", name, (long long)start, (long long)(start + n));
        return err_hint("the file may be corrupt");
    }
    return 0;
}

/* Reads /doc_offsets, when present: ascending from 0, within /tokens. */
static int h5_open_docs(struct tokens *ds) {
    htri_t has = H5Lexists(ds->h5_file, "doc_offsets", H5P_DEFAULT);
    if (has <= 0) return has < 0 ? err_set(ds->path, "cannot look up /doc_offsets") : 0;
    int64_t id = H5I_INVALID_HID, n = 0;
    int rc = h5_open_1d(ds, "/doc_offsets", &id, &n);
    if (rc == 0 && n < 1) rc = err_set(ds->path, "/doc_offsets is empty");
    if (rc == 0 && n > ds->n_tokens) /* ascending below n_tokens: never more of them */
        rc = err_set(ds->path, "/doc_offsets has %lld entries but /tokens has %lld", (long long)n,
                     (long long)ds->n_tokens);
    if (rc == 0) {
        ds->doc_offsets = xmalloc((size_t)n * sizeof *ds->doc_offsets);
        ds->n_docs = n;
        rc = h5_read(ds, id, "/doc_offsets", 0, n, H5T_NATIVE_INT64, ds->doc_offsets);
    }
    if (id > 0) H5Dclose(id);
    for (int64_t i = 0; i < n && rc == 0; i++) {
        const int64_t d = ds->doc_offsets[i], prev = i ? ds->doc_offsets[i - 1] : 0;
        if (i == 0 && d != 0) rc = err_set(ds->path, "/doc_offsets starts at %lld, not 0", (long long)d);
        else if (d < prev || d >= ds->n_tokens)
            rc = err_set(ds->path, "/doc_offsets[%lld] = %lld is not in [%lld, %lld) (/tokens has %lld)", (long long)i,
                         (long long)d, (long long)prev, (long long)ds->n_tokens, (long long)ds->n_tokens);
        if (rc) err_hint("each example's first token, ascending: the file may be corrupt");
    }
    return rc;
}

/* Opens /tokens and, when present, /loss_mask (same length) and /doc_offsets. */
static int h5_open(struct tokens *ds) {
    h5_quiet();
    ds->format = TOKENS_FORMAT_HDF5;
    ds->h5_file = H5Fopen(ds->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ds->h5_file < 0) {
        err_set(ds->path, "cannot open as HDF5");
        return err_hint("the file is truncated or corrupt, or its filesystem has no file locks: then set "
                        "HDF5_USE_FILE_LOCKING=FALSE");
    }
    if (H5Lexists(ds->h5_file, "tokens", H5P_DEFAULT) <= 0) {
        err_set(ds->path, "no /tokens dataset");
        return err_hint(FORMAT_HINT);
    }
    if (h5_open_1d(ds, "/tokens", &ds->h5_tokens, &ds->n_tokens) || h5_open_meta(ds)) return -1;
    htri_t has_mask = H5Lexists(ds->h5_file, "loss_mask", H5P_DEFAULT);
    if (has_mask < 0) return err_set(ds->path, "cannot look up /loss_mask");
    if (has_mask) {
        int64_t n_mask;
        if (h5_open_1d(ds, "/loss_mask", &ds->h5_mask, &n_mask)) return -1;
        if (n_mask != ds->n_tokens)
            return err_set(ds->path, "/loss_mask has %lld entries but /tokens has %lld", (long long)n_mask,
                           (long long)ds->n_tokens);
        ds->has_mask = 1;
    }
    return h5_open_docs(ds);
}

/* ---- both formats ---- */

/* Tokens [start, start+n), which the caller has bounds-checked. */
static int tokens_read_range(const struct tokens *ds, int64_t start, int64_t n, int32_t *tok) {
    if (ds->format == TOKENS_FORMAT_BIN) {
        bin_read(ds, start, n, tok);
        return 0;
    }
    return h5_read(ds, ds->h5_tokens, "/tokens", start, n, H5T_NATIVE_INT32, tok);
}

/* Mask bytes [start, start+n) as 0/1; all 1 without /loss_mask. */
static int tokens_read_mask(const struct tokens *ds, int64_t start, int64_t n, uint8_t *mask) {
    if (!ds->has_mask) {
        memset(mask, 1, (size_t)n);
        return 0;
    }
    /* int8 keeps zero as zero and saturates any nonzero value of a wider type to nonzero. */
    if (h5_read(ds, ds->h5_mask, "/loss_mask", start, n, H5T_NATIVE_INT8, mask)) return -1;
    for (int64_t j = 0; j < n; j++) mask[j] = mask[j] != 0;
    return 0;
}

/* Tells the format apart by the first bytes and opens DS->path accordingly. */
static int tokens_open_file(struct tokens *ds) {
    struct stat st;
    if (stat(ds->path, &st)) return err_set(ds->path, "cannot open: %s", strerror(errno));
    if (!S_ISREG(st.st_mode)) return err_set(ds->path, "not a regular file");
    int fd = open(ds->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(ds->path, "cannot open: %s", strerror(errno));
    unsigned char sig[sizeof h5_signature];
    int is_h5 = pread(fd, sig, sizeof sig, 0) == (ssize_t)sizeof sig && !memcmp(sig, h5_signature, sizeof sig);
    int rc = is_h5 ? h5_open(ds) : bin_open(ds, fd, (int64_t)st.st_size);
    close(fd);
    return rc;
}

int tokens_open(struct tokens *ds, const char *path) {
    memset(ds, 0, sizeof *ds);
    ds->h5_file = ds->h5_tokens = ds->h5_mask = H5I_INVALID_HID;
    ds->path = xstrdup(path);
    int rc = tokens_open_file(ds);
    if (rc) tokens_close(ds);
    return rc;
}

void tokens_close(struct tokens *ds) {
    if (ds->map) munmap(ds->map, (size_t)ds->map_size);
    if (ds->h5_mask > 0) H5Dclose(ds->h5_mask);
    if (ds->h5_tokens > 0) H5Dclose(ds->h5_tokens);
    if (ds->h5_file > 0) H5Fclose(ds->h5_file);
    free(ds->path);
    free(ds->fingerprint);
    free(ds->doc_offsets);
    packing_free(&ds->plan);
    memset(ds, 0, sizeof *ds);
    ds->h5_file = ds->h5_tokens = ds->h5_mask = H5I_INVALID_HID;
}

void tokens_plan(struct tokens *ds, int32_t T, int pack, int truncate) {
    packing_free(&ds->plan);
    if (ds->doc_offsets) packing_plan(&ds->plan, ds->doc_offsets, ds->n_docs, ds->n_tokens, T, pack, truncate);
}

int tokens_planned(const struct tokens *ds) { return ds->plan.first != NULL; }

int tokens_validate(const struct tokens *ds, int32_t vocab, int32_t T) {
    CHECK(vocab > 0);
    if (T < 1) return err_set(ds->path, "sequence length %d must be at least 1", T);
    if (tokens_planned(ds) && ds->plan.n_samples == 0) {
        err_set(ds->path, "none of its %lld examples has 2 tokens, so none has a target", (long long)ds->n_docs);
        return err_hint("an example needs a token to predict from and one to predict");
    }
    if (!tokens_planned(ds) && ds->n_tokens < (int64_t)T + 1) {
        err_set(ds->path, "%lld tokens is shorter than one sample (seq %d needs %lld)", (long long)ds->n_tokens, T,
                (long long)T + 1);
        return err_hint("use a shorter sequence length or more data");
    }
    int32_t *buf = xmalloc(VALIDATE_BLOCK * sizeof *buf);
    int rc = 0;
    for (int64_t start = 0; start < ds->n_tokens && !rc; start += VALIDATE_BLOCK) {
        int64_t n = ds->n_tokens - start < VALIDATE_BLOCK ? ds->n_tokens - start : VALIDATE_BLOCK;
        rc = tokens_read_range(ds, start, n, buf);
        for (int64_t j = 0; j < n && !rc; j++) {
            if (buf[j] >= 0 && buf[j] < vocab) continue;
            /* Reads saturate at int32, so INT32_MAX stands for any larger value. */
            err_set(ds->path, "token %s%d at position %lld is outside the vocabulary (size %d)",
                    buf[j] == INT32_MAX ? ">= " : "", buf[j], (long long)(start + j), vocab);
            rc = err_hint("the data was tokenized for another model");
        }
    }
    free(buf);
    return rc;
}

int64_t tokens_n_samples(const struct tokens *ds, int32_t T) {
    if (tokens_planned(ds)) return ds->plan.T == T ? ds->plan.n_samples : 0;
    if (T < 1 || ds->n_tokens < 1) return 0;
    return (ds->n_tokens - 1) / T;
}

/* Planned sample I (in range): its pieces one after another, then padding (token 0,
 * not counted, an example of its own). */
static int plan_read(const struct tokens *ds, int64_t i, int32_t *tok, uint8_t *mask, int32_t *start) {
    const struct packing *p = &ds->plan;
    int32_t o = 0;
    for (int64_t k = p->first[i]; k < p->first[i + 1]; k++) {
        const struct pack_piece pc = p->pieces[k];
        if (tokens_read_range(ds, pc.begin, pc.n, tok + o)) return -1;
        if (mask && tokens_read_mask(ds, pc.begin, pc.n, mask + o)) return -1;
        if (mask) mask[o] = 0; /* predicted from another example */
        for (int32_t j = 0; start && j < pc.n; j++) start[o + j] = o;
        o += pc.n;
    }
    for (int32_t j = o; j <= p->T; j++) {
        tok[j] = 0;
        if (mask) mask[j] = 0;
        if (start) start[j] = o;
    }
    return 0;
}

int tokens_read_sample(const struct tokens *ds, int64_t i, int32_t T, int32_t *tok, uint8_t *mask,
                       int32_t *start) {
    int64_t n_samples = tokens_n_samples(ds, T);
    if (i < 0 || i >= n_samples)
        return err_set(ds->path, "sample %lld is out of range (%lld samples of seq %d)", (long long)i,
                       (long long)n_samples, T);
    if (tokens_planned(ds)) return plan_read(ds, i, tok, mask, start);
    int64_t first = i * T;
    if (start) memset(start, 0, ((size_t)T + 1) * sizeof *start);
    if (tokens_read_range(ds, first, (int64_t)T + 1, tok)) return -1;
    return mask ? tokens_read_mask(ds, first, (int64_t)T + 1, mask) : 0;
}

/* ---- writing ---- */

struct tokens_h5 {
    const uint32_t *tok;
    const uint8_t *mask;
    int64_t n;
    const struct tokens_meta *meta;
};

/* META's text attributes and numbers on the root group FILE. */
static int tokens_fill_attrs(hid_t file, const struct tokens_meta *m) {
    const char *names[] = {"tokenizer_fingerprint", "tokenizer_files", "sources", "format", "train_on"};
    const char *values[] = {m->fingerprint, m->tokenizer_files, m->sources, m->format, m->train_on};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (values[i] && h5_put_attr_str(file, names[i], values[i])) return -1;
    if (m->vocab_size && h5_put_attr(file, "vocab_size", H5T_STD_I64LE, H5T_NATIVE_INT64, &m->vocab_size))
        return -1;
    if (m->n_eos && h5_put_attr_array(file, "eos_ids", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)m->n_eos, m->eos_ids))
        return -1;
    return 0;
}

/* Writes /tokens, the optional /loss_mask and what META holds into a new HDF5 file
 * (h5_fill_fn). */
static int tokens_fill_h5(hid_t file, const char *path, const void *arg) {
    const struct tokens_h5 *t = arg;
    hsize_t dim = (hsize_t)t->n;
    if (h5_put_array(file, "/tokens", H5T_STD_U32LE, H5T_NATIVE_UINT32, 1, &dim, t->tok))
        return h5_write_error(path, "/tokens");
    if (t->mask && h5_put_array(file, "/loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &dim, t->mask))
        return h5_write_error(path, "/loss_mask");
    if (!t->meta) return 0;
    hsize_t docs = (hsize_t)t->meta->n_docs;
    if (t->meta->doc_offsets &&
        h5_put_array(file, "/doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &docs, t->meta->doc_offsets))
        return h5_write_error(path, "/doc_offsets");
    return tokens_fill_attrs(file, t->meta) ? h5_write_error(path, "the attributes") : 0;
}

int tokens_write_h5(const char *path, const uint32_t *tok, int64_t n, const uint8_t *mask,
                    const struct tokens_meta *meta) {
    if (n < 1) return err_set(path, "no tokens to write");
    struct tokens_h5 t = {tok, mask, n, meta};
    return h5_write_atomic(path, tokens_fill_h5, &t);
}
