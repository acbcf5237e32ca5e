/*
 * cli.c: the descriptor-driven flag parser (cli.h).
 */
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "protojson.h"

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

/* One flag of the first of the N messages MSGS that has it: "--name value",
 * "--name=value", or a bool switch "--name [on|off]". Returns the arguments it used,
 * or -1 with an error. */
static int flag_parse(ProtobufCMessage *const *msgs, int n, int argc, char **argv, struct cli_arena *arena) {
    char flag[64];
    const char *eq = strchr(argv[0], '=');
    size_t len = eq ? (size_t)(eq - argv[0]) : strlen(argv[0]);
    snprintf(flag, sizeof flag, "%.*s", (int)(len < sizeof flag - 1 ? len : sizeof flag - 1), argv[0]);
    if (strncmp(flag, "--", 2) != 0) {
        err_set(argv[0], "unexpected argument");
        return err_hint("flags start with --");
    }
    const ProtobufCFieldDescriptor *f = NULL;
    ProtobufCMessage *msg = NULL;
    for (int i = 0; i < n && !f; i++) f = field_find((msg = msgs[i])->descriptor, flag + 2);
    if (!f) {
        err_set(flag, "unknown flag");
        return err_hint("--help lists the flags");
    }
    if (f->type == PROTOBUF_C_TYPE_BOOL) {
        int value = 1, used = 1;
        if (eq && bool_parse(eq + 1, &value)) return err_set(flag, "'%s' is not on or off", eq + 1);
        if (!eq && argc > 1 && bool_parse(argv[1], &value) == 0) used = 2;
        *(protobuf_c_boolean *)((char *)msg + f->offset) = value;
        return used;
    }
    if (eq) return field_set(msg, f, flag, eq + 1, arena) ? -1 : 1;
    if (argc < 2) return err_set(flag, "missing value");
    return field_set(msg, f, flag, argv[1], arena) ? -1 : 2;
}

int cli_parse(ProtobufCMessage *const *msgs, int n, int argc, char **argv, struct cli_arena *arena) {
    for (int i = 0; i < argc;) {
        int used = flag_parse(msgs, n, argc - i, argv + i, arena);
        if (used < 0) return -1;
        i += used;
    }
    return 0;
}

/* A flag's value as typed on the command line: strings bare, lists comma-joined. */
static void value_print(const json_t *v, FILE *out) {
    if (json_is_string(v)) {
        fputs(json_string_value(v), out);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            fprintf(out, "%s%s", i ? "," : "", json_string_value(json_array_get(v, i)));
    } else if (json_is_boolean(v)) {
        fputs(json_is_true(v) ? "on" : "off", out);
    } else {
        char *text = json_dumps(v, JSON_ENCODE_ANY);
        fputs(text, out);
        free(text);
    }
}

void cli_usage(const ProtobufCMessage *msg, FILE *out) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    json_t *values = proto_to_json(msg);
    for (unsigned i = 0; i < d->n_fields; i++) {
        char name[64];
        flag_name(name, sizeof name, d->fields[i].name);
        fprintf(out, "  --%-20s ", name);
        value_print(json_object_get(values, d->fields[i].name), out);
        fputc('\n', out);
    }
    json_decref(values);
}
