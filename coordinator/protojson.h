/*
 * protojson.h: protobuf messages as owned copies, and as JSON: in checkpoints,
 * `lorad inspect`, the clients' --json and the flag listing of --help. Enum values use their short
 * lowercase names, the ones the flags take (MODE_FULL -> "full").
 */
#ifndef LORAD_PROTOJSON_H
#define LORAD_PROTOJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* "MODE_FULL" -> "full", "SPLIT_BLANK_LINES" -> "blank-lines" into BUF; returns BUF. */
const char *proto_enum_short(const char *name, char *buf, size_t n);
/* A deep copy of MSG (a packed round trip), freed with protobuf_c_message_free_unpacked. */
ProtobufCMessage *proto_copy(const ProtobufCMessage *msg);
/* MSG as a JSON object keyed by field name (the caller json_decref()s it). */
json_t *proto_to_json(const ProtobufCMessage *msg);

#endif
