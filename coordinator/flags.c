/*
 * flags.c: what the flag table's readers do with a row (flags.h): parse a value into
 * its field, print it back, apply the defaults, check the ranges, compare a resumed
 * run with its checkpoint, suggest a near name, and print --help.
 */
#include "flags.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "protojson.h"

void *flag_arena_keep(struct flag_arena *a, void *p) {
    a->p = xrealloc(a->p, (size_t)(a->n + 1) * sizeof *a->p);
    a->p[a->n++] = p;
    return p;
}

void flag_arena_free(struct flag_arena *a) {
    for (int i = 0; i < a->n; i++) free(a->p[i]);
    free(a->p);
    a->p = NULL;
    a->n = 0;
}

/* "micro-batch" and "micro_batch" both name field micro_batch. */
static int name_is(const char *field, const char *name) {
    for (; *field && *name; field++, name++)
        if (*field != *name && !(*field == '_' && *name == '-')) return 0;
    return *field == *name;
}

const struct flag *flag_find(const ProtobufCMessageDescriptor *spec, const char *name) {
    for (size_t i = 0; i < flag_count; i++)
        if (flag_rows[i].spec == spec && name_is(flag_rows[i].field, name)) return &flag_rows[i];
    return NULL;
}

static const ProtobufCFieldDescriptor *row_field(const struct flag *row) {
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(row->spec, row->field);
    CHECK(f != NULL);
    return f;
}

int flag_takes(const struct flag *row, const char *cmd) {
    if (!cmd || !row->commands) return 1;
    size_t n = strlen(cmd);
    for (const char *c = strstr(row->commands, cmd); c; c = strstr(c + 1, cmd))
        if ((c == row->commands || c[-1] == ' ') && (c[n] == ' ' || c[n] == '\0')) return 1;
    return 0;
}

const char *flag_name(const struct flag *row, char *buf, size_t n) {
    snprintf(buf, n, "--%s", row->field);
    for (char *c = buf + 2; *c; c++)
        if (*c == '_') *c = '-';
    return buf;
}

static int enum_parse(const ProtobufCFieldDescriptor *f, const char *flag, const char *v, int *out) {
    const ProtobufCEnumDescriptor *e = f->descriptor;
    char buf[64], list[256] = "";
    for (unsigned i = 0; i < e->n_values; i++) {
        proto_enum_short(e->values[i].name, buf, sizeof buf);
        if (strcmp(buf, v) == 0) {
            *out = e->values[i].value;
            return 0;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "|" : "", buf);
    }
    return err_set(flag, "'%s' is not one of %s", v, list);
}

static int int_parse(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return err_set(flag, "'%s' is not a valid integer", v);
    *out = x;
    return 0;
}

static int bool_parse(const char *flag, const char *v, protobuf_c_boolean *out) {
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1")) return *out = 1, 0;
    if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0")) return *out = 0, 0;
    return err_set(flag, "'%s' is not on or off", v);
}

/* "a,b,c" -> a new array of new strings, kept in the arena. */
static int list_parse(const char *flag, const char *v, struct flag_arena *a, char ***items, size_t *n) {
    CHECK(a != NULL);
    char *copy = flag_arena_keep(a, xstrdup(v));
    size_t count = 1;
    for (const char *c = copy; *c; c++) count += *c == ',';
    char **arr = flag_arena_keep(a, xcalloc(count, sizeof *arr));
    size_t k = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
        if (*tok) arr[k++] = tok;
    if (k == 0) return err_set(flag, "empty list");
    *items = arr;
    *n = k;
    return 0;
}

static int double_parse(const char *flag, const char *v, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end) return err_set(flag, "'%s' is not a number", v);
    *out = d + 0.0; /* -0 is 0: proto3 does not send a zero, so a copy would read +0 */
    return 0;
}

int flag_set(ProtobufCMessage *msg, const struct flag *row, const char *v, struct flag_arena *a) {
    const ProtobufCFieldDescriptor *f = row_field(row);
    void *p = (char *)msg + f->offset;
    char flag[64];
    flag_name(row, flag, sizeof flag);
    long long x;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            return list_parse(flag, v, a, (char ***)p, (size_t *)((char *)msg + f->quantifier_offset));
        *(const char **)p = v;
        return 0;
    case PROTOBUF_C_TYPE_INT32:
        if (int_parse(flag, v, INT32_MIN, INT32_MAX, &x)) return -1;
        *(int32_t *)p = (int32_t)x;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
        if (int_parse(flag, v, INT64_MIN, INT64_MAX, &x)) return -1;
        *(int64_t *)p = x;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
        if (int_parse(flag, v, 0, INT64_MAX, &x)) return -1;
        *(uint64_t *)p = (uint64_t)x;
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return double_parse(flag, v, (double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return bool_parse(flag, v, (protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM:
        return enum_parse(f, flag, v, (int *)p);
    default:
        CHECK(0 && "flag of an unsupported field type");
    }
    return -1;
}

/* A numeric field's value as a double (0 for other types). */
static double field_number(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f) {
    const void *p = (const char *)msg + f->offset;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: return *(const int32_t *)p;
    case PROTOBUF_C_TYPE_INT64: return (double)*(const int64_t *)p;
    case PROTOBUF_C_TYPE_UINT64: return (double)*(const uint64_t *)p;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p;
    default: return 0;
    }
}

void flag_text(const ProtobufCMessage *msg, const struct flag *row, char *buf, size_t n) {
    const ProtobufCFieldDescriptor *f = row_field(row);
    const void *p = (const char *)msg + f->offset;
    buf[0] = '\0';
    if (f->type == PROTOBUF_C_TYPE_STRING && f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t count = *(const size_t *)((const char *)msg + f->quantifier_offset);
        for (size_t i = 0; i < count; i++)
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", i ? "," : "", (*(char *const *const *)p)[i]);
        return;
    }
    const ProtobufCEnumValue *e = NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: snprintf(buf, n, "%s", *(const char *const *)p); break;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_INT64: snprintf(buf, n, "%.0f", field_number(msg, f)); break;
    case PROTOBUF_C_TYPE_UINT64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case PROTOBUF_C_TYPE_DOUBLE: snprintf(buf, n, "%g", *(const double *)p); break;
    case PROTOBUF_C_TYPE_BOOL: snprintf(buf, n, "%s", *(const protobuf_c_boolean *)p ? "on" : "off"); break;
    case PROTOBUF_C_TYPE_ENUM:
        e = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        proto_enum_short(e ? e->name : "?", buf, n);
        break;
    default: CHECK(0 && "flag of an unsupported field type");
    }
}

void flags_defaults(ProtobufCMessage *msg, const ProtobufCMessageDescriptor *descriptor) {
    protobuf_c_message_init(descriptor, msg);
    for (size_t i = 0; i < flag_count; i++)
        if (flag_rows[i].spec == descriptor && flag_rows[i].value) CHECK(flag_set(msg, &flag_rows[i], flag_rows[i].value, NULL) == 0);
}

/* A range "[lo,hi)" as its parts; an empty bound is unbounded. */
struct range {
    int has_lo, has_hi, lo_open, hi_open;
    double lo, hi;
};

static struct range range_parse(const char *text) {
    struct range r = {.lo_open = text[0] == '(', .hi_open = text[strlen(text) - 1] == ')'};
    char *end;
    r.lo = strtod(text + 1, &end);
    r.has_lo = end != text + 1;
    CHECK(*end == ',');
    const char *hi = end + 1;
    r.hi = strtod(hi, &end);
    r.has_hi = end != hi;
    return r;
}

static int range_holds(const struct range *r, double x) {
    if (r->has_lo && (r->lo_open ? !(x > r->lo) : !(x >= r->lo))) return 0;
    if (r->has_hi && (r->hi_open ? !(x < r->hi) : !(x <= r->hi))) return 0;
    return 1;
}

/* "must be at least 1", "must be non-negative, 0 takes the whole batch", "must be in [0, 1)" */
static void range_words(const struct flag *row, const struct range *r, int integer, char *buf, size_t n) {
    if (r->has_lo && r->has_hi && integer && !r->lo_open && !r->hi_open)
        snprintf(buf, n, "must be %g..%g", r->lo, r->hi);
    else if (r->has_lo && r->has_hi)
        snprintf(buf, n, "must be in %c%g, %g%c", r->lo_open ? '(' : '[', r->lo, r->hi, r->hi_open ? ')' : ']');
    else if (r->has_lo && r->lo == 0)
        snprintf(buf, n, "must be %s", r->lo_open ? "positive" : "non-negative");
    else if (r->has_lo)
        snprintf(buf, n, "must be %s %g", r->lo_open ? "above" : "at least", r->lo);
    else
        snprintf(buf, n, "must be %s %g", r->hi_open ? "below" : "at most", r->hi);
    if (row->zero && range_holds(r, 0)) snprintf(buf + strlen(buf), n - strlen(buf), ", 0 %s", row->zero);
}

int flag_check(const ProtobufCMessage *msg, const struct flag *row) {
    if (!row->range) return 0;
    const ProtobufCFieldDescriptor *f = row_field(row);
    char flag[64], value[64];
    flag_name(row, flag, sizeof flag);
    double x = field_number(msg, f);
    flag_text(msg, row, value, sizeof value);
    if (f->type == PROTOBUF_C_TYPE_DOUBLE && !(fabs(x) <= FLT_MAX))
        return err_set(flag, "must be a finite float (got %s)", value);
    if (f->type == PROTOBUF_C_TYPE_DOUBLE && x != 0 && (float)x == 0)
        return err_set(flag, "is too small for a float (got %s)", value);
    struct range r = range_parse(row->range);
    if (range_holds(&r, x)) return 0;
    char words[256];
    range_words(row, &r, f->type != PROTOBUF_C_TYPE_DOUBLE, words, sizeof words);
    return err_set(flag, "%s (got %s)", words, value);
}

/* A required string field is empty. */
static int row_missing(const ProtobufCMessage *msg, const struct flag *row) {
    const ProtobufCFieldDescriptor *f = row_field(row);
    return row->required && f->type == PROTOBUF_C_TYPE_STRING && !(*(const char *const *)((const char *)msg + f->offset))[0];
}

int flags_check(const ProtobufCMessage *msg, const char *cmd) {
    char flag[64];
    for (size_t i = 0; i < flag_count; i++) {
        const struct flag *row = &flag_rows[i];
        if (row->spec != msg->descriptor || !flag_takes(row, cmd)) continue;
        if (row_missing(msg, row)) {
            err_set(flag_name(row, flag, sizeof flag), "is required");
            return cmd ? err_hint("lorad %s --help lists the flags", cmd) : -1;
        }
        if (flag_check(msg, row)) return -1;
    }
    return 0;
}

static int row_kept(const struct flag *row, const ProtobufCMessageDescriptor *spec, int lora) {
    return row->spec == spec && (row->resume == FLAG_RESUME_KEPT || (lora && row->resume == FLAG_RESUME_KEPT_LORA));
}

int flags_resume_check(const ProtobufCMessage *now, const ProtobufCMessage *saved, int lora) {
    CHECK(now->descriptor == saved->descriptor);
    char a[512], b[512], flag[64];
    for (size_t i = 0; i < flag_count; i++) {
        const struct flag *row = &flag_rows[i];
        if (!row_kept(row, now->descriptor, lora)) continue;
        flag_text(now, row, a, sizeof a);
        flag_text(saved, row, b, sizeof b);
        if (strcmp(a, b) == 0) continue;
        err_set(flag_name(row, flag, sizeof flag), "%s differs from the checkpoint's %s", a[0] ? a : "(none)",
                b[0] ? b : "(none)");
        char list[512] = "";
        for (size_t k = 0; k < flag_count; k++)
            if (row_kept(&flag_rows[k], now->descriptor, 1))
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "",
                         flag_name(&flag_rows[k], flag, sizeof flag));
        return err_hint("a resumed run keeps its base model and %s", list);
    }
    return 0;
}

/* Levenshtein distance of A and B, both shorter than 64 characters. */
static size_t edit_distance(const char *a, const char *b) {
    size_t n = strlen(b), row[64];
    if (strlen(a) >= 64 || n >= 64) return SIZE_MAX;
    for (size_t j = 0; j <= n; j++) row[j] = j;
    for (size_t i = 1; a[i - 1]; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= n; j++) {
            size_t up = row[j], cost = a[i - 1] != b[j - 1] && !(a[i - 1] == '-' && b[j - 1] == '_');
            size_t best = diag + cost < up + 1 ? diag + cost : up + 1;
            row[j] = best < row[j - 1] + 1 ? best : row[j - 1] + 1;
            diag = up;
        }
    }
    return row[n];
}

const char *flag_nearest(const ProtobufCMessageDescriptor *const *specs, int n, const char *cmd, const char *name,
                         char *buf, size_t len) {
    size_t best = strlen(name) / 3 > 2 ? strlen(name) / 3 : 2;
    const struct flag *found = NULL;
    for (size_t i = 0; i < flag_count; i++)
        for (int s = 0; s < n; s++) {
            const struct flag *row = &flag_rows[i];
            size_t d = row->spec == specs[s] && flag_takes(row, cmd) ? edit_distance(name, row->field) : SIZE_MAX;
            if (d <= best) best = d, found = row;
        }
    return found ? flag_name(found, buf, len) : NULL;
}

/* What ROW's value looks like in --help: its arg, or one by type. */
static void arg_text(const struct flag *row, char *buf, size_t n) {
    const ProtobufCFieldDescriptor *f = row_field(row);
    char v[64];
    buf[0] = '\0';
    if (row->arg) snprintf(buf, n, "%s", row->arg);
    else if (f->label == PROTOBUF_C_LABEL_REPEATED) snprintf(buf, n, "A,B,...");
    else if (f->type == PROTOBUF_C_TYPE_BOOL) snprintf(buf, n, "[on|off]");
    else if (f->type == PROTOBUF_C_TYPE_STRING) snprintf(buf, n, "TEXT");
    else if (f->type == PROTOBUF_C_TYPE_DOUBLE) snprintf(buf, n, "X");
    else if (f->type != PROTOBUF_C_TYPE_ENUM) snprintf(buf, n, "N");
    else
        for (unsigned i = 0; i < ((const ProtobufCEnumDescriptor *)f->descriptor)->n_values; i++)
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", i ? "|" : "",
                     proto_enum_short(((const ProtobufCEnumDescriptor *)f->descriptor)->values[i].name, v, sizeof v));
}

/* One --help line: "  --rank N   LoRA rank r (default 8; kept on resume)". */
static void row_help(const struct flag *row, FILE *out) {
    const ProtobufCFieldDescriptor *f = row_field(row);
    char flag[64], arg[128], head[192], def[64] = "";
    snprintf(head, sizeof head, "%s %s", flag_name(row, flag, sizeof flag), (arg_text(row, arg, sizeof arg), arg));
    if (row->value) snprintf(def, sizeof def, "%s", row->value);
    else if (f->type == PROTOBUF_C_TYPE_BOOL) snprintf(def, sizeof def, "off");
    else if (f->type == PROTOBUF_C_TYPE_ENUM)
        proto_enum_short(((const ProtobufCEnumDescriptor *)f->descriptor)->values[0].name, def, sizeof def);
    else if (f->type != PROTOBUF_C_TYPE_STRING) snprintf(def, sizeof def, "0");
    fprintf(out, "  %-34s %s", head, row->help);
    if (row->zero) fprintf(out, "; 0 %s", row->zero);
    const char *notes[] = {row->required ? "required" : NULL, NULL,
                           row->resume != FLAG_RESUME_FREE ? "kept on resume" : NULL};
    char with_def[80];
    if (def[0] && !row->required) notes[1] = (snprintf(with_def, sizeof with_def, "default %s", def), with_def);
    int k = 0;
    for (size_t i = 0; i < sizeof notes / sizeof notes[0]; i++)
        if (notes[i]) fprintf(out, "%s%s", k++ ? "; " : " (", notes[i]);
    fputs(k ? ")\n" : "\n", out);
}

void flags_help(const ProtobufCMessageDescriptor *const *specs, int n, const char *cmd, FILE *out) {
    const char *done[32];
    int n_done = 0;
    for (int s = 0; s < n; s++)
        for (size_t i = 0; i < flag_count; i++) {
            const char *topic = flag_rows[i].topic;
            int seen = 0;
            for (int k = 0; k < n_done; k++) seen |= !strcmp(done[k], topic);
            if (flag_rows[i].spec != specs[s] || !flag_takes(&flag_rows[i], cmd) || seen) continue;
            CHECK(n_done < 32);
            done[n_done++] = topic;
            fprintf(out, "\n%s:\n", topic);
            for (size_t j = i; j < flag_count; j++)
                if (flag_rows[j].spec == specs[s] && flag_takes(&flag_rows[j], cmd) && !strcmp(flag_rows[j].topic, topic))
                    row_help(&flag_rows[j], out);
        }
}
