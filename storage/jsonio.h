/*
 * jsonio.h: the small JSON files of model and adapter directories (config.json,
 * adapter_config.json): whole-file reads into a jansson object, atomic writes, and
 * typed field lookups whose errors name the file and the key.
 */
#ifndef LORAD_JSONIO_H
#define LORAD_JSONIO_H

#include <jansson.h>
#include <stdint.h>

/* Reads PATH, which must hold one JSON object (duplicate keys are refused). Returns the
 * object (the caller json_decref()s it), or NULL with an error naming PATH. */
json_t *jsonio_read(const char *path);
/* jsonio_read with jansson's decoding FLAGS added (JSON_DECODE_INT_AS_REAL for files
 * whose integers may exceed 64 bits, as tokenizer_config.json's model_max_length). */
json_t *jsonio_read_flags(const char *path, size_t flags);
/* ROOT as the text jsonio_write writes, ending in a newline; the caller frees. */
char *jsonio_text(const json_t *root);
/* Writes ROOT to PATH atomically, indented, keys in insertion order. Reals get 15
 * significant digits when that prints them exactly, else 17. */
int jsonio_write(const char *path, const json_t *root);

/* Field lookups on OBJ, read from FILE. Each returns 1 and sets *OUT when KEY holds a
 * value of the right kind, 0 (leaving *OUT alone) when KEY is absent or null, and -1
 * with an error naming FILE and KEY when it holds anything else. */
int jsonio_get_i32(const json_t *obj, const char *key, const char *file, int32_t *out);
int jsonio_get_number(const json_t *obj, const char *key, const char *file, double *out);
int jsonio_get_bool(const json_t *obj, const char *key, const char *file, int32_t *out);
int jsonio_get_string(const json_t *obj, const char *key, const char *file, const char **out);

#endif
