/*
 * prep.c: byte-level tokenisation of a text file into an HDF5 dataset (prep.h).
 */
#include "prep.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "tokens.h"

int prep_run(const struct command_call *call) {
    const Lorad__PrepSpec *spec = (const Lorad__PrepSpec *)call->spec[0];
    if (!spec->overwrite && access(spec->out, F_OK) == 0) {
        err_set("--out", "%s exists", spec->out);
        return err_hint("--overwrite replaces it");
    }
    size_t n;
    char *text = file_read_all(spec->text, &n);
    if (!text) return -1;
    if (n == 0) {
        free(text);
        return err_set(spec->text, "is empty");
    }
    uint32_t *tok = xmalloc(n * sizeof *tok);
    for (size_t i = 0; i < n; i++) tok[i] = (unsigned char)text[i];
    int rc = tokens_write_h5(spec->out, tok, (int64_t)n, NULL);
    if (rc == 0) fprintf(stderr, "lorad: wrote %zu byte-level tokens to %s\n", n, spec->out);
    free(tok);
    free(text);
    return rc;
}
