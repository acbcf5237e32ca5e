/*
 * fuzz_job_spec.c: libFuzzer target for the JobSpec decoding path: the protobuf bytes
 * rank 0 broadcasts to every rank and a checkpoint keeps as /job/spec.
 *
 * The input is the packed message. lorad__job_spec__unpack decodes it (protobuf-c,
 * generated from proto/lorad.proto); a decoded spec is turned into the JSON a
 * checkpoint stores beside it (proto_to_json, jsonio_text) and checked with
 * job_validate. A spec that validates must give a micro-batch dividing the batch and a
 * learning rate in [0, lr] (give or take rounding) at every step of its schedule that the target samples.
 */
#include "fuzz_util.h"

#include "error.h"
#include "job.h"
#include "jsonio.h"
#include "protojson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Lorad__JobSpec *job = lorad__job_spec__unpack(NULL, size, data);
    if (!job) return 0;

    json_t *obj = proto_to_json(&job->base);
    FUZZ_REQUIRE(obj && json_is_object(obj));
    char *text = jsonio_text(obj);
    json_decref(obj);
    free(text);

    if (job_validate(job) == 0) {
        int32_t mb = job_micro_batch(job);
        FUZZ_REQUIRE(mb >= 1 && job->batch % mb == 0);
        FUZZ_REQUIRE(job->model[0] && job->data[0] && job->out[0]);
        /* validated: warmup >= 0, steps >= 1, so only warmup + 1 can overflow */
        int64_t after = job->warmup < INT64_MAX ? job->warmup + 1 : job->warmup;
        int64_t probes[] = {0, 1, job->warmup - 1, job->warmup, after, job->steps / 2, job->steps - 1, job->steps};
        for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
            int64_t s = probes[i];
            if (s < 0 || s > job->steps) continue;
            double lr = job_lr(job, s);
            FUZZ_REQUIRE(lr >= 0 && lr <= job->lr * (1 + 1e-12)); /* rounding may add an ulp */
        }
    } else {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
    }
    lorad__job_spec__free_unpacked(job, NULL);
    return 0;
}
