/*
 * flags.h: the flag table. The proto messages are the vocabulary (a field micro_batch is
 * the flag --micro-batch); the table holds everything else about a flag, one row each:
 * its default, its bounds, the commands that take it, whether a resumed run keeps it,
 * its --help topic and its one-line description. The defaults, the range checks and
 * their errors, the resume check and --help all read it; nothing else restates a value.
 *
 * Values are text as a person types them ("2e-4", "lora", "q_proj,v_proj", "on"): a
 * default is parsed with the same code as the command line and a --config file.
 */
#ifndef LORAD_FLAGS_H
#define LORAD_FLAGS_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdio.h>

enum flag_resume {
    FLAG_RESUME_FREE = 0,  /* may change when a run resumes */
    FLAG_RESUME_KEPT,      /* a resumed run must keep it */
    FLAG_RESUME_KEPT_LORA, /* kept in LoRA mode (it shapes the adapters); --mode full has none */
};

struct flag {
    const ProtobufCMessageDescriptor *spec; /* the message whose field it fills */
    const char *field;      /* the field: "micro_batch" is --micro-batch */
    const char *arg;        /* its value in --help ("DIR"); NULL: by type (N, X, TEXT, a|b) */
    const char *value;      /* the default as typed; NULL: the proto's zero ("", 0, off, the first enum value) */
    const char *range;      /* numbers: "[1,)" at least 1, "[0,1)", "(0,)", "[1,256]"; NULL: any */
    const char *zero;       /* what 0 means where the range allows it ("takes the whole batch") */
    const char *commands;   /* the commands that take it, space-separated; NULL: every command of SPEC */
    int required;           /* a command that takes it needs it */
    int repeat;             /* a list flag given again adds to its list (--adapter A --adapter B); else the last counts */
    enum flag_resume resume;
    const char *topic;      /* its group in --help */
    const char *help;       /* what it does, one line */
};

/* The table, in --help order; flag_rows[flag_count - 1] is the last row. */
extern const struct flag flag_rows[];
extern const size_t flag_count;

/* Strings the parser allocated for a message (repeated fields, --config values); freed
 * together by flag_arena_free once the message has been copied. */
struct flag_arena {
    void **p;
    int n;
};
/* Keeps P (malloc'd) in A until flag_arena_free; returns P. */
void *flag_arena_keep(struct flag_arena *a, void *p);
void flag_arena_free(struct flag_arena *a);

/* The row of SPEC's field NAME, given as a flag ("micro-batch") or a field
 * ("micro_batch"); NULL when SPEC has none. */
const struct flag *flag_find(const ProtobufCMessageDescriptor *spec, const char *name);
/* Whether command CMD takes ROW's flag (CMD NULL: every command of the message does). */
int flag_takes(const struct flag *row, const char *cmd);
/* "--micro-batch" into BUF; returns BUF. */
const char *flag_name(const struct flag *row, char *buf, size_t n);
/* Sets ROW's field of MSG from TEXT (a bool also takes on/off, true/false, 1/0; a list
 * is comma-separated). -1 with an error naming the flag. TEXT must outlive MSG unless
 * it is a list, whose items A keeps. */
int flag_set(ProtobufCMessage *msg, const struct flag *row, const char *text, struct flag_arena *a);
/* ROW's value in MSG as text, the form flag_set takes ("2e-4" prints as 0.0002). */
void flag_text(const ProtobufCMessage *msg, const struct flag *row, char *buf, size_t n);
/* Initialises MSG (of DESCRIPTOR) and sets every field to its row's default. */
void flags_defaults(ProtobufCMessage *msg, const ProtobufCMessageDescriptor *descriptor);
/* Checks ROW's value in MSG: within its range, and a float's value fits a float. -1 with
 * an error naming the flag, the value and the bound. */
int flag_check(const ProtobufCMessage *msg, const struct flag *row);
/* Checks MSG against its rows: the fields CMD takes that are required are given, and
 * flag_check holds for each. CMD NULL checks every row. -1 with an error naming the flag. */
int flags_check(const ProtobufCMessage *msg, const char *cmd);
/* A resumed run's spec NOW against the checkpoint's SAVED (both of one message):
 * -1 with an error naming the first kept flag that differs (LORA: the LoRA-only ones
 * too) and a hint listing every kept flag. */
int flags_resume_check(const ProtobufCMessage *now, const ProtobufCMessage *saved, int lora);
/* The flag of the N messages SPECS that command CMD takes nearest to NAME (at most a
 * few edits away), as "--name" in BUF; NULL when none is near. */
const char *flag_nearest(const ProtobufCMessageDescriptor *const *specs, int n, const char *cmd, const char *name,
                         char *buf, size_t len);
/* --help: the flags of the N messages SPECS that command CMD takes, grouped by topic,
 * each with its value, description, default and whether a resumed run keeps it. */
void flags_help(const ProtobufCMessageDescriptor *const *specs, int n, const char *cmd, FILE *out);

#endif
