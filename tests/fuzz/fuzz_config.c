/*
 * fuzz_config.c: libFuzzer target for `--config FILE.json` (daemon/cli.c, through
 * storage/jsonio.c and the flag table), a file users write by hand or have a script
 * write.
 *
 * The input is the file. The first byte picks the command it is read for: `lorad
 * train` (a JobSpec) or `lorad submit` (a ClientSpec, then a JobSpec, the pair that
 * has the most keys to confuse). A refusal must leave one line of error. An accepted
 * file must leave specs whose every value passes its row's check (a config value out
 * of range is refused, not kept), and that survive a protobuf round trip unchanged.
 */
#include "fuzz_util.h"

#include "cli.h"
#include "error.h"
#include "flags.h"
#include "lorad.pb-c.h"
#include "protojson.h"

/* Every row of MSG's message holds a checked value, and MSG's copy prints the same. */
static void spec_verify(const ProtobufCMessage *msg) {
    ProtobufCMessage *copy = proto_copy(msg);
    char a[4096], b[4096];
    for (size_t i = 0; i < flag_count; i++) {
        if (flag_rows[i].spec != msg->descriptor) continue;
        FUZZ_REQUIRE(flag_check(msg, &flag_rows[i]) == 0);
        flag_text(msg, &flag_rows[i], a, sizeof a);
        flag_text(copy, &flag_rows[i], b, sizeof b);
        FUZZ_REQUIRE(strcmp(a, b) == 0);
    }
    protobuf_c_message_free_unpacked(copy, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int submit = data[0] & 1;
    const char *path = fuzz_path_with("job.json", data + 1, size - 1);
    Lorad__ClientSpec client;
    Lorad__JobSpec job;
    flags_defaults(&client.base, &lorad__client_spec__descriptor);
    flags_defaults(&job.base, &lorad__job_spec__descriptor);
    ProtobufCMessage *msgs[] = {submit ? &client.base : &job.base, &job.base};
    char *argv[] = {"--config", (char *)path};
    struct flag_arena arena = {0};
    if (cli_parse(msgs, submit ? 2 : 1, submit ? "submit" : "train", NULL, 2, argv, &arena) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0' && strchr(err_msg(), '\n') == NULL);
    } else {
        spec_verify(&job.base);
        if (submit) spec_verify(&client.base);
    }
    flag_arena_free(&arena);
    return 0;
}
