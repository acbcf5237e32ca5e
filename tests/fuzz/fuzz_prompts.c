/*
 * fuzz_prompts.c: libFuzzer target for `lorad generate --prompts FILE.jsonl`
 * (storage/prompts.c).
 *
 * The input is the whole file, parsed in memory as "fuzz.jsonl". A refusal is one line
 * naming "fuzz.jsonl" (with ":LINE:" when a line is at fault). An accepted file gives at
 * least one prompt; each prompt is read here again with jansson from the line it names:
 * that line of the input is a JSON object whose "prompt" is the prompt's bytes (NUL-free)
 * and whose "adapter" is the adapter's name, or null or absent for none; lines ascend.
 */
#include "fuzz_util.h"

#include <jansson.h>

#include "error.h"
#include "prompts.h"

/* Line LINE (from 1) of DATA: *N bytes at the returned pointer, without its newline. */
static const char *line_at(const uint8_t *data, size_t size, int64_t line, size_t *n) {
    size_t at = 0;
    for (int64_t l = 1; l < line; l++) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        FUZZ_REQUIRE(nl);
        at = (size_t)(nl - data) + 1;
    }
    const uint8_t *nl = memchr(data + at, '\n', size - at);
    *n = (nl ? (size_t)(nl - data) : size) - at;
    return (const char *)data + at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct prompts p;
    if (prompts_parse(&p, (const char *)data, size, "fuzz.jsonl")) {
        FUZZ_REQUIRE(!strncmp(err_msg(), "fuzz.jsonl", 10) && !strchr(err_msg(), '\n'));
        return 0;
    }
    FUZZ_REQUIRE(p.n >= 1);
    for (int32_t i = 0; i < p.n; i++) {
        FUZZ_REQUIRE(i == 0 || p.v[i].line > p.v[i - 1].line);
        size_t n;
        const char *line = line_at(data, size, p.v[i].line, &n);
        if (n && line[n - 1] == '\r') n--;
        json_t *o = json_loadb(line, n, JSON_ALLOW_NUL, NULL);
        FUZZ_REQUIRE(json_is_object(o));
        const json_t *prompt = json_object_get(o, "prompt"), *adapter = json_object_get(o, "adapter");
        FUZZ_REQUIRE(json_is_string(prompt) && json_string_length(prompt) == strlen(p.v[i].prompt) &&
                     !memcmp(json_string_value(prompt), p.v[i].prompt, strlen(p.v[i].prompt)));
        if (p.v[i].adapter) FUZZ_REQUIRE(json_is_string(adapter) && !strcmp(json_string_value(adapter), p.v[i].adapter));
        else FUZZ_REQUIRE(!adapter || json_is_null(adapter));
        json_decref(o);
    }
    prompts_free(&p);
    return 0;
}
