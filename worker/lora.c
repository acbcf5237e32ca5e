/*
 * lora.c: target matching and initial values of LoRA adapters (lora.h).
 */
#include "lora.h"

#include <math.h>
#include <string.h>

#include "peft.h"
#include "rng.h"

int lora_match(const char *const *targets, int32_t n_targets, const char *module, int fused_qkv,
               int32_t *hits) {
    static const char *const slices[3] = {"q", "k", "v"};
    int match = LORA_MATCH_NONE;
    for (int32_t i = 0; i < n_targets; i++) {
        int got = LORA_MATCH_NONE;
        if (strcmp(targets[i], "all-linear") == 0 || peft_module_matches(module, targets[i])) got = LORA_MATCH_WHOLE;
        for (int s = 0; s < 3 && fused_qkv; s++)
            if (strcmp(targets[i], slices[s]) == 0) got = 1 << s;
        if (got) hits[i]++;
        match |= got;
    }
    return match;
}

void lora_init(struct lora_adapter *ad, int gaussian, uint64_t seed) {
    uint64_t key = rng_key(RNG_STREAM_INIT, seed, (uint64_t)ad->id, 0);
    size_t n = (size_t)ad->r * ad->in;
    float bound = 1.0f / sqrtf((float)ad->in);
    float std = 1.0f / (float)ad->r;
    for (size_t i = 0; i < n; i++)
        ad->A[i] = gaussian ? std * rng_normal(key, i) : bound * (2.0f * rng_uniform(key, i) - 1.0f);
    memset(ad->B, 0, (size_t)ad->out * ad->r * sizeof(float));
}
