/*
 * protojson.h: a protobuf message (a job spec, a job record) as JSON: in checkpoints,
 * `lorad inspect`, the clients' --json and the flag listing of --help. Enum values use their short
 * lowercase names, the ones the flags take (MODE_FULL -> "full").
 */
#ifndef LORAD_PROTOJSON_H
#define LORAD_PROTOJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* "MODE_FULL" -> "full" into BUF; returns BUF. */
const char *proto_enum_short(const char *name, char *buf, size_t n);
/* MSG as a JSON object keyed by field name (the caller json_decref()s it). */
json_t *proto_to_json(const ProtobufCMessage *msg);

#endif
