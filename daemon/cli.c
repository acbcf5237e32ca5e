/*
 * cli.c: the descriptor-driven flag parser (cli.h).
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static void *arena_keep(struct cli_arena *a, void *p) {
    a->p = xrealloc(a->p, (size_t)(a->n + 1) * sizeof *a->p);
    a->p[a->n++] = p;
    return p;
}

void cli_arena_free(struct cli_arena *a) {
    for (int i = 0; i < a->n; i++) free(a->p[i]);
    free(a->p);
    a->p = NULL;
    a->n = 0;
}

/* "micro_batch" -> "micro-batch" */
static void flag_name(char *buf, size_t n, const char *field) {
    snprintf(buf, n, "%s", field);
    for (char *c = buf; *c; c++)
        if (*c == '_') *c = '-';
}

static const ProtobufCFieldDescriptor *field_find(const ProtobufCMessageDescriptor *d, const char *flag) {
    char name[64];
    for (unsigned i = 0; i < d->n_fields; i++) {
        flag_name(name, sizeof name, d->fields[i].name);
        if (strcmp(name, flag) == 0) return &d->fields[i];
    }
    return NULL;
}

/* "MODE_FULL" -> "full" */
static const char *enum_short(const char *name, char *buf, size_t n) {
    const char *u = strchr(name, '_');
    snprintf(buf, n, "%s", u ? u + 1 : name);
    for (char *c = buf; *c; c++) *c = (char)tolower((unsigned char)*c);
    return buf;
}

static int enum_parse(const ProtobufCFieldDescriptor *f, const char *flag, const char *v, int *out) {
    const ProtobufCEnumDescriptor *e = f->descriptor;
    char buf[64], list[256] = "";
    for (unsigned i = 0; i < e->n_values; i++) {
        enum_short(e->values[i].name, buf, sizeof buf);
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

static int bool_parse(const char *v, int *out) {
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1")) return *out = 1, 0;
    if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0")) return *out = 0, 0;
    return -1;
}

/* "a,b,c" -> a new array of new strings, kept in the arena. */
static int list_parse(const char *flag, const char *v, struct cli_arena *a, char ***items, size_t *n) {
    char *copy = arena_keep(a, xstrdup(v));
    size_t count = 1;
    for (const char *c = copy; *c; c++) count += *c == ',';
    char **arr = arena_keep(a, xcalloc(count, sizeof *arr));
    size_t k = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
        if (*tok) arr[k++] = tok;
    if (k == 0) return err_set(flag, "empty list");
    *items = arr;
    *n = k;
    return 0;
}

static int field_set(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const char *flag, const char *v,
                     struct cli_arena *a) {
    void *p = (char *)msg + f->offset;
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
    case PROTOBUF_C_TYPE_DOUBLE: {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (errno || end == v || *end) return err_set(flag, "'%s' is not a number", v);
        *(double *)p = d;
        return 0;
    }
    case PROTOBUF_C_TYPE_ENUM:
        return enum_parse(f, flag, v, (int *)p);
    default:
        CHECK(0 && "flag of an unsupported field type");
    }
    return -1;
}

int cli_parse(ProtobufCMessage *msg, int argc, char **argv, struct cli_arena *arena) {
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            err_set(arg, "unexpected argument");
            return err_hint("flags start with --");
        }
        const ProtobufCFieldDescriptor *f = field_find(msg->descriptor, arg + 2);
        if (!f) {
            err_set(arg, "unknown flag");
            return err_hint("--help lists the flags");
        }
        if (f->type == PROTOBUF_C_TYPE_BOOL) {
            int value = 1;
            if (i + 1 < argc && bool_parse(argv[i + 1], &value) == 0) i++;
            *(protobuf_c_boolean *)((char *)msg + f->offset) = value;
            continue;
        }
        if (i + 1 >= argc) return err_set(arg, "missing value");
        if (field_set(msg, f, arg, argv[++i], arena)) return -1;
    }
    return 0;
}

static void value_print(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, FILE *out) {
    const void *p = (const char *)msg + f->offset;
    char buf[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
            for (size_t i = 0; i < n; i++) fprintf(out, "%s%s", i ? "," : "", (*(char *const *const *)p)[i]);
        } else {
            fputs(*(const char *const *)p, out);
        }
        break;
    case PROTOBUF_C_TYPE_INT32: fprintf(out, "%d", *(const int32_t *)p); break;
    case PROTOBUF_C_TYPE_INT64: fprintf(out, "%lld", (long long)*(const int64_t *)p); break;
    case PROTOBUF_C_TYPE_UINT64: fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case PROTOBUF_C_TYPE_DOUBLE: fprintf(out, "%g", *(const double *)p); break;
    case PROTOBUF_C_TYPE_BOOL: fputs(*(const protobuf_c_boolean *)p ? "on" : "off", out); break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        fputs(e ? enum_short(e->name, buf, sizeof buf) : "?", out);
        break;
    }
    default: break;
    }
}

void cli_usage(const ProtobufCMessage *msg, FILE *out) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        char name[64];
        flag_name(name, sizeof name, d->fields[i].name);
        fprintf(out, "  --%-16s ", name);
        value_print(msg, &d->fields[i], out);
        fputc('\n', out);
    }
}
