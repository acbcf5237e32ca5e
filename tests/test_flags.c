/*
 * test_flags.c: the flag table (coordinator/flag_table.c) is whole and its readers do
 * what its rows say:
 *   - every field of every spec message has exactly one row, and every row a field, a
 *     topic, a help line and well-formed commands and range;
 *   - every default parses, passes its own range, and prints back as itself;
 *   - each range accepts its closed bounds and refuses what lies just beyond them, with
 *     an error naming the flag and the value;
 *   - the resume check refuses a kept flag that changed, names it, and lets a free one
 *     change; LoRA-only rows are ignored in full mode;
 *   - the nearest-name suggestion finds typos and nothing for strangers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "flags.h"
#include "lorad.pb-c.h"

static const ProtobufCMessageDescriptor *const specs[] = {
    &lorad__job_spec__descriptor,   &lorad__prep_spec__descriptor,  &lorad__init_model_spec__descriptor,
    &lorad__init_tokenizer_spec__descriptor,
    &lorad__tokenize_spec__descriptor, &lorad__template_spec__descriptor,
    &lorad__checkpoint_spec__descriptor, &lorad__eval_spec__descriptor, &lorad__merge_spec__descriptor,
    &lorad__generate_spec__descriptor, &lorad__analyze_spec__descriptor, &lorad__serve_spec__descriptor,
    &lorad__client_spec__descriptor,
};
#define N_SPECS (sizeof specs / sizeof specs[0])

/* The commands of main.c's table that a row may name. */
static const char *const command_names[] = {"train", "prep", "tokenize", "template", "init-model", "init-tokenizer",
                                            "eval", "merge", "generate", "analyze", "inspect", "export", "serve",
                                            "submit", "status", "list", "cancel", "logs", "shutdown"};

static int known_command(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof command_names / sizeof command_names[0]; i++)
        if (strlen(command_names[i]) == n && !strncmp(command_names[i], name, n)) return 1;
    return 0;
}

static void test_whole(void) {
    for (size_t s = 0; s < N_SPECS; s++)
        for (unsigned f = 0; f < specs[s]->n_fields; f++) {
            int rows = 0;
            for (size_t i = 0; i < flag_count; i++)
                rows += flag_rows[i].spec == specs[s] && !strcmp(flag_rows[i].field, specs[s]->fields[f].name);
            checks_case = specs[s]->fields[f].name;
            EXPECT(rows == 1);
        }
    for (size_t i = 0; i < flag_count; i++) {
        const struct flag *r = &flag_rows[i];
        checks_case = r->field;
        int listed = 0;
        for (size_t s = 0; s < N_SPECS; s++) listed |= r->spec == specs[s];
        EXPECT(listed);
        EXPECT(protobuf_c_message_descriptor_get_field_by_name(r->spec, r->field) != NULL);
        EXPECT(r->topic && r->topic[0] && r->help && r->help[0]);
        for (const char *c = r->commands; c && *c;) {
            size_t n = strcspn(c, " ");
            EXPECT(known_command(c, n));
            c += n + (c[n] == ' ');
        }
        if (r->range) {
            size_t n = strlen(r->range);
            EXPECT(strchr("[(", r->range[0]) && strchr("])", r->range[n - 1]) && strchr(r->range, ','));
        }
        EXPECT(!r->zero || r->range); /* what 0 means is said where a range admits it */
        const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field_by_name(r->spec, r->field);
        EXPECT(!r->repeat || (fd && fd->label == PROTOBUF_C_LABEL_REPEATED)); /* only a list adds up */
    }
    checks_case = "";
}

/* Every default parses, is within its range, and prints back as what it parsed from. */
static void test_defaults(void) {
    for (size_t s = 0; s < N_SPECS; s++) {
        ProtobufCMessage *m = xcalloc(1, specs[s]->sizeof_message);
        flags_defaults(m, specs[s]);
        for (size_t i = 0; i < flag_count; i++) {
            const struct flag *r = &flag_rows[i];
            if (r->spec != specs[s]) continue;
            checks_case = r->field;
            EXPECT(flag_check(m, r) == 0);
            char text[256];
            flag_text(m, r, text, sizeof text);
            if (r->value) { /* the same value: parsed back, it prints the same */
                ProtobufCMessage *again = xcalloc(1, specs[s]->sizeof_message);
                protobuf_c_message_init(specs[s], again);
                struct flag_arena a = {0};
                char copy[256], back[256];
                snprintf(copy, sizeof copy, "%s", text);
                EXPECT(flag_set(again, r, copy, &a) == 0);
                flag_text(again, r, back, sizeof back);
                EXPECT(!strcmp(back, text));
                EXPECT(strtod(text, NULL) == strtod(r->value, NULL)); /* "2e-4" prints as 0.0002 */
                flag_arena_free(&a);
                free(again);
            }
        }
        free(m);
    }
    checks_case = "";
}

/* Sets ROW of M to TEXT and checks it; the flag's error must name the flag and TEXT. */
static int try_value(ProtobufCMessage *m, const struct flag *r, const char *text) {
    if (flag_set(m, r, text, NULL)) return -2;
    int rc = flag_check(m, r);
    if (rc) {
        char flag[64];
        flag_name(r, flag, sizeof flag);
        EXPECT(strstr(err_msg(), flag) == err_msg());
        EXPECT(strstr(err_msg(), "got ") != NULL);
    }
    return rc;
}

/* The bounds of each range: closed ones accepted, open ones and just beyond refused. */
static void test_ranges(void) {
    for (size_t i = 0; i < flag_count; i++) {
        const struct flag *r = &flag_rows[i];
        if (!r->range) continue;
        checks_case = r->field;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(r->spec, r->field);
        int integer = f->type != PROTOBUF_C_TYPE_DOUBLE;
        ProtobufCMessage *m = xcalloc(1, r->spec->sizeof_message);
        flags_defaults(m, r->spec);
        char *end, buf[64];
        double lo = strtod(r->range + 1, &end), step = integer ? 1 : 1e-9;
        int has_lo = end != r->range + 1;
        const char *hi_text = strchr(r->range, ',') + 1;
        double hi = strtod(hi_text, &end);
        int has_hi = end != hi_text;
        if (has_lo) {
            snprintf(buf, sizeof buf, integer ? "%.0f" : "%.17g", lo);
            EXPECT(try_value(m, r, buf) == (r->range[0] == '(' ? -1 : 0));
            snprintf(buf, sizeof buf, integer ? "%.0f" : "%.17g", lo - step);
            EXPECT(try_value(m, r, buf) == -1);
        }
        if (has_hi) {
            snprintf(buf, sizeof buf, integer ? "%.0f" : "%.17g", hi);
            EXPECT(try_value(m, r, buf) == (r->range[strlen(r->range) - 1] == ')' ? -1 : 0));
            snprintf(buf, sizeof buf, integer ? "%.0f" : "%.17g", hi + step);
            EXPECT(try_value(m, r, buf) == -1);
        }
        if (!integer) {
            EXPECT(try_value(m, r, "inf") == -1);
            EXPECT(try_value(m, r, "nan") == -1);
            EXPECT(try_value(m, r, "1e39") == -1); /* beyond a float */
        }
        free(m);
    }
    checks_case = "";
}

static void test_resume(void) {
    Lorad__JobSpec a, b;
    flags_defaults(&a.base, &lorad__job_spec__descriptor);
    flags_defaults(&b.base, &lorad__job_spec__descriptor);
    EXPECT(flags_resume_check(&a.base, &b.base, 1) == 0);
    b.lr = 1e-3; /* free to change */
    b.steps = 5;
    EXPECT(flags_resume_check(&a.base, &b.base, 1) == 0);
    b.rank = 16;
    EXPECT(flags_resume_check(&a.base, &b.base, 1) == -1);
    EXPECT(strstr(err_msg(), "--rank: 8 differs from the checkpoint's 16") == err_msg());
    EXPECT(strstr(err_msg(), "--rank-pattern") && strstr(err_msg(), "--seq"));
    EXPECT(flags_resume_check(&a.base, &b.base, 0) == 0); /* --mode full has no adapters */
    b.seq = 64;
    EXPECT(flags_resume_check(&a.base, &b.base, 0) == -1);
    EXPECT(strstr(err_msg(), "--seq: 0 differs from the checkpoint's 64") == err_msg());
    b = a;
    char *targets[] = {"q_proj", "v_proj"};
    b.targets = targets;
    b.n_targets = 2;
    EXPECT(flags_resume_check(&a.base, &b.base, 1) == -1);
    EXPECT(strstr(err_msg(), "--targets: (none) differs from the checkpoint's q_proj,v_proj") == err_msg());
}

static void test_nearest(void) {
    const ProtobufCMessageDescriptor *job[] = {&lorad__job_spec__descriptor};
    const ProtobufCMessageDescriptor *submit[] = {&lorad__client_spec__descriptor, &lorad__job_spec__descriptor};
    char buf[64];
    const char *n = flag_nearest(job, 1, "train", "lrr", buf, sizeof buf);
    EXPECT(n && !strcmp(n, "--lr"));
    n = flag_nearest(job, 1, "train", "micro-bach", buf, sizeof buf);
    EXPECT(n && !strcmp(n, "--micro-batch"));
    n = flag_nearest(job, 1, "train", "ckpt_every_second", buf, sizeof buf);
    EXPECT(n && !strcmp(n, "--ckpt-every-seconds"));
    EXPECT(flag_nearest(job, 1, "train", "frobnicate", buf, sizeof buf) == NULL);
    n = flag_nearest(submit, 2, "submit", "sockt", buf, sizeof buf);
    EXPECT(n && !strcmp(n, "--socket"));
    EXPECT(flag_nearest(submit, 2, "submit", "outt", buf, sizeof buf) == NULL); /* --out is train's */
}

static void test_takes(void) {
    const struct flag *out = flag_find(&lorad__checkpoint_spec__descriptor, "out");
    EXPECT(out && flag_takes(out, "export") && !flag_takes(out, "inspect") && flag_takes(out, NULL));
    const struct flag *job = flag_find(&lorad__client_spec__descriptor, "job");
    EXPECT(job && flag_takes(job, "logs") && !flag_takes(job, "log") && !flag_takes(job, "list"));
    EXPECT(flag_find(&lorad__job_spec__descriptor, "micro-batch") == flag_find(&lorad__job_spec__descriptor, "micro_batch"));
    EXPECT(flag_find(&lorad__job_spec__descriptor, "micro-batchx") == NULL);
}

int main(void) {
    test_whole();
    test_defaults();
    test_ranges();
    test_resume();
    test_nearest();
    test_takes();
    return check_finish();
}
