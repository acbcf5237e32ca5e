/*
 * protojson.c: descriptor-driven protobuf-to-JSON (protojson.h).
 */
#include "protojson.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

const char *proto_enum_short(const char *name, char *buf, size_t n) {
    const char *u = strchr(name, '_');
    snprintf(buf, n, "%s", u ? u + 1 : name);
    for (char *c = buf; *c; c++) *c = *c == '_' ? '-' : (char)tolower((unsigned char)*c);
    return buf;
}

/* A message field: an object (null when unset), or an array of them when repeated. */
static json_t *message_json(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f) {
    const void *p = (const char *)msg + f->offset;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;
        return sub ? proto_to_json(sub) : json_null();
    }
    size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, proto_to_json((*(ProtobufCMessage *const *const *)p)[i]));
    return a;
}

static json_t *field_json(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f) {
    const void *p = (const char *)msg + f->offset;
    char buf[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE: return message_json(msg, f);
    case PROTOBUF_C_TYPE_UINT32: return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_STRING:
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
            json_t *a = json_array();
            for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string((*(char *const *const *)p)[i]));
            return a;
        }
        return json_string(*(const char *const *)p);
    case PROTOBUF_C_TYPE_INT32: return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_INT64: return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64: return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_DOUBLE: return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL: return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        return json_string(e ? proto_enum_short(e->name, buf, sizeof buf) : "?");
    }
    default:
        CHECK(0 && "field type without a JSON form");
    }
    return NULL;
}

ProtobufCMessage *proto_copy(const ProtobufCMessage *msg) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = xmalloc(n ? n : 1);
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(msg->descriptor, NULL, n, buf);
    CHECK(copy != NULL);
    free(buf);
    return copy;
}

json_t *proto_to_json(const ProtobufCMessage *msg) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    json_t *obj = json_object();
    CHECK(obj);
    for (unsigned i = 0; i < d->n_fields; i++) json_object_set_new(obj, d->fields[i].name, field_json(msg, &d->fields[i]));
    return obj;
}
