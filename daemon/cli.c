/*
 * cli.c: a command's argv and --config file into its specs (cli.h).
 */
#include "cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "jsonio.h"

/* The row of flag (or key) NAME among the N messages MSGS, and its message; NULL with
 * an error when none has it or CMD does not take it. */
static const struct flag *row_lookup(ProtobufCMessage *const *msgs, int n, const char *cmd, const char *name,
                                     const char *where, ProtobufCMessage **msg) {
    const struct flag *row = NULL;
    for (int i = 0; i < n && !row; i++) row = flag_find((*msg = msgs[i])->descriptor, name);
    if (row && flag_takes(row, cmd)) return row;
    const ProtobufCMessageDescriptor *specs[4];
    for (int i = 0; i < n && i < 4; i++) specs[i] = msgs[i]->descriptor;
    char near[64];
    if (row) err_set(where, "lorad %s does not take it", cmd);
    else err_set(where, "unknown %s", strncmp(where, "--", 2) == 0 ? "flag" : "key");
    if (!row && flag_nearest(specs, n < 4 ? n : 4, cmd, name, near, sizeof near)) err_hint("did you mean %s?", near);
    else err_hint("lorad %s --help lists the flags", cmd);
    return NULL;
}

/* The flags the command line has set so far: a repeatable list flag given again adds to
 * its list. */
struct flags_seen {
    const struct flag *row[64];
    int n;
};

/* V for ROW of MSG: V itself, or when the command line gave the repeatable list flag ROW
 * before, that list and then V ("--adapter A --adapter B" is "--adapter A,B"), kept in A. */
static const char *list_extend(const ProtobufCMessage *msg, const struct flag *row, const ProtobufCFieldDescriptor *f,
                               const char *v, struct flags_seen *seen, struct flag_arena *a) {
    int before = 0;
    for (int i = 0; i < seen->n; i++) before |= seen->row[i] == row;
    if (!before && seen->n < (int)(sizeof seen->row / sizeof seen->row[0])) seen->row[seen->n++] = row;
    if (!before || !row->repeat) return v;
    const size_t count = *(const size_t *)((const char *)msg + f->quantifier_offset);
    char *const *items = *(char *const *const *)((const char *)msg + f->offset);
    size_t len = strlen(v) + 1;
    for (size_t i = 0; i < count; i++) len += strlen(items[i]) + 1;
    char *list = flag_arena_keep(a, xcalloc(1, len));
    for (size_t i = 0; i < count; i++) strcat(strcat(list, items[i]), ",");
    return strcat(list, v);
}

/* One flag: "--name value", "--name=value", or a bool switch "--name [on|off]".
 * Returns the arguments it used, or -1 with an error. */
static int flag_parse(ProtobufCMessage *const *msgs, int n, const char *cmd, int argc, char **argv,
                      struct flags_seen *seen, struct flag_arena *a) {
    char flag[64];
    const char *eq = strchr(argv[0], '=');
    size_t len = eq ? (size_t)(eq - argv[0]) : strlen(argv[0]);
    snprintf(flag, sizeof flag, "%.*s", (int)(len < sizeof flag - 1 ? len : sizeof flag - 1), argv[0]);
    if (strncmp(flag, "--", 2) != 0) {
        err_set(argv[0], "unexpected argument");
        return err_hint("flags start with --");
    }
    ProtobufCMessage *msg;
    const struct flag *row = row_lookup(msgs, n, cmd, flag + 2, flag, &msg);
    if (!row) return -1;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, row->field);
    if (eq) return flag_set(msg, row, list_extend(msg, row, f, eq + 1, seen, a), a) ? -1 : 1;
    if (f->type == PROTOBUF_C_TYPE_BOOL) /* a switch; a following on/off is its value */
        return argc > 1 && flag_set(msg, row, argv[1], a) == 0 ? 2 : flag_set(msg, row, "on", a) ? -1 : 1;
    if (argc < 2) return err_set(flag, "missing value");
    return flag_set(msg, row, list_extend(msg, row, f, argv[1], seen, a), a) ? -1 : 2;
}

/* The line of TEXT where key KEY ("KEY" then a colon) first appears; 0 when not found. */
static int key_line(const char *text, const char *key) {
    size_t n = strlen(key);
    for (const char *p = strchr(text, '"'); p; p = strchr(p + 1, '"')) {
        const char *q = p + 1 + n;
        if (strncmp(p + 1, key, n) != 0 || *q != '"') continue;
        for (q++; *q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'; q++) {}
        if (*q != ':') continue;
        int line = 1;
        for (const char *c = text; c < p; c++) line += *c == '\n';
        return line;
    }
    return 0;
}

/* A JSON value as the text a flag takes ("on", "2e-4" as 0.0002, "a,b"); kept in A.
 * NULL when it has no such form. */
static const char *json_text(const json_t *v, struct flag_arena *a) {
    char buf[64];
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_boolean(v)) return json_is_true(v) ? "on" : "off";
    if (json_is_integer(v)) snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
    if (json_is_number(v)) return flag_arena_keep(a, xstrdup(buf));
    if (!json_is_array(v) || json_array_size(v) == 0) return NULL;
    size_t len = 0, i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_string(item)) return NULL;
        len += strlen(json_string_value(item)) + 1;
    }
    char *list = flag_arena_keep(a, xcalloc(1, len));
    json_array_foreach(v, i, item) snprintf(list + strlen(list), len - strlen(list), "%s%s", i ? "," : "",
                                            json_string_value(item));
    return list;
}

/* One key of the --config file PATH (whose text is TEXT). */
static int config_key(ProtobufCMessage *const *msgs, int n, const char *cmd, const char *path, const char *text,
                      const char *key, const json_t *value, struct flag_arena *a) {
    char where[4200];
    int line = key_line(text, key);
    if (line) snprintf(where, sizeof where, "%s:%d: \"%s\"", path, line, key);
    else snprintf(where, sizeof where, "%s: \"%s\"", path, key);
    if (!strcmp(key, "config")) return err_set(where, "a config file cannot name another");
    ProtobufCMessage *msg;
    const struct flag *row = row_lookup(msgs, n, cmd, key, where, &msg);
    if (!row) return -1;
    const char *v = json_text(value, a);
    if (!v) return err_set(where, "must be a string, a number, true or false, or a list of strings");
    if (flag_set(msg, row, flag_arena_keep(a, xstrdup(v)), a) == 0 && flag_check(msg, row) == 0) return 0;
    char *problem = xstrdup(err_msg()); /* "--lr: must be ..." */
    err_set(where, "%s", strchr(problem, ' ') ? strchr(problem, ' ') + 1 : problem);
    free(problem);
    return -1;
}

/* Sets the messages from the JSON object in PATH. */
static int config_load(ProtobufCMessage *const *msgs, int n, const char *cmd, const char *path, struct flag_arena *a) {
    size_t len;
    char *text = file_read_all(path, &len);
    json_t *root = text ? jsonio_read(path) : NULL;
    int rc = root ? 0 : -1;
    const char *key;
    json_t *value;
    if (root) json_object_foreach(root, key, value) {
            if ((rc = config_key(msgs, n, cmd, path, text, key, value, a))) break;
        }
    json_decref(root);
    free(text);
    return rc;
}

/* *PATH: the value of --config in ARGV, or NULL. -1 when it has no value or comes twice. */
static int config_path(int argc, char **argv, const char **path) {
    *path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *v;
        if (!strncmp(argv[i], "--config=", 9)) v = argv[i] + 9;
        else if (!strcmp(argv[i], "--config")) v = ++i < argc ? argv[i] : "";
        else continue;
        if (*path) return err_set("--config", "given twice");
        if (!v[0]) return err_set("--config", "missing value");
        *path = v;
    }
    return 0;
}

int cli_parse(ProtobufCMessage *const *msgs, int n, const char *cmd, const char *positional, int argc, char **argv,
              struct flag_arena *a) {
    if (positional && argc > 0 && strncmp(argv[0], "--", 2) != 0) {
        if (flag_set(msgs[0], flag_find(msgs[0]->descriptor, positional), argv[0], a)) return -1;
        argc--, argv++;
    }
    const char *config;
    if (config_path(argc, argv, &config) || (config && config_load(msgs, n, cmd, config, a))) return -1;
    struct flags_seen seen = {.n = 0};
    for (int i = 0; i < argc;) {
        int skip = !strcmp(argv[i], "--config") ? 2 : !strncmp(argv[i], "--config=", 9) ? 1 : 0;
        int used = skip ? skip : flag_parse(msgs, n, cmd, argc - i, argv + i, &seen, a);
        if (used < 0) return -1;
        i += used;
    }
    return 0;
}

int cli_one_of(const char *const *values, const char *const *flags, int n) {
    int found = -1;
    for (int i = 0; i < n; i++) {
        if (!values[i][0]) continue;
        if (found >= 0) return err_set(flags[i], "and %s are given; give one", flags[found]);
        found = i;
    }
    if (found < 0) return err_set(flags[0], "is required"), err_hint("or %s", flags[1]), -1;
    return found;
}
