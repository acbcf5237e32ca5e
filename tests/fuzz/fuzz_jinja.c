/*
 * fuzz_jinja.c: libFuzzer target for chat templates (storage/jinja.h): the template
 * source and the messages come from a model directory and a user's file, so both are
 * untrusted.
 *
 * The input is the template's bytes, a NUL, then the messages' bytes (the whole input
 * is the template when there is no NUL). The template is parsed; when it parses and
 * the messages are JSON, it is rendered with them (and bos/eos tokens and the
 * generation prompt), under small limits so that a runaway loop ends quickly. A
 * failure must leave an error line; a success must give generation spans inside the
 * output.
 */
#include "fuzz_util.h"

#include <jansson.h>

#include "error.h"
#include "jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, '\0', size);
    size_t tn = nul ? (size_t)(nul - data) : size;
    struct jinja_template t;
    if (jinja_template_parse(&t, (const char *)data, tn, "fuzz: chat_template") != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        return 0;
    }
    json_t *messages = nul ? json_loadb((const char *)nul + 1, size - tn - 1, JSON_DECODE_ANY, NULL) : json_array();
    if (messages) {
        json_t *vars = json_pack("{sOsssssb}", "messages", messages, "bos_token", "<s>", "eos_token", "</s>",
                                 "add_generation_prompt", 1);
        struct jinja_limits limits = {.max_bytes = (size_t)64 << 20, .max_steps = 200000};
        struct jinja_output out;
        if (jinja_render(&t, vars, &limits, &out) != 0) {
            FUZZ_REQUIRE(err_msg()[0] != '\0');
        } else {
            for (size_t i = 0; i < out.n_spans; i++)
                FUZZ_REQUIRE(out.spans[i].start <= out.spans[i].end && out.spans[i].end <= out.text.n);
            jinja_output_free(&out);
        }
        json_decref(vars);
        json_decref(messages);
    }
    jinja_template_free(&t);
    return 0;
}
