/*
 * fuzz_hf_config.c: libFuzzer target for a model directory's config.json
 * (storage/hf_config.c, through storage/jsonio.c), which comes with downloaded models.
 *
 * The input is the text of config.json in a scratch directory; hf_config_read parses
 * it (GPT-2, or the Llama family: Llama, Mistral, Qwen2). An accepted config must
 * satisfy what the reader promises: positive sizes, heads that divide (n_embd by n_head
 * for GPT-2, n_head by n_kv_head for Llama), an even Llama head_dim, an epsilon in
 * (0, 1], rope_theta above 1 and sane Llama 3 scaling. A GPT-2 config must also survive
 * a round trip: the text hf_config_text makes of it, read back, gives the same numbers.
 */
#include "fuzz_util.h"

#include "error.h"
#include "hf_config.h"

static int same(const struct model_config *a, const struct model_config *b) {
    return a->arch == b->arch && a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_kv_head == b->n_kv_head &&
           a->head_dim == b->head_dim && a->n_embd == b->n_embd && a->n_inner == b->n_inner &&
           a->n_positions == b->n_positions && a->vocab_size == b->vocab_size &&
           a->layer_norm_eps == b->layer_norm_eps && a->tied == b->tied && a->qkv_bias == b->qkv_bias &&
           a->o_bias == b->o_bias && a->sliding_window == b->sliding_window && a->rope_theta == b->rope_theta &&
           a->rope_factor == b->rope_factor && a->rope_low_freq_factor == b->rope_low_freq_factor &&
           a->rope_high_freq_factor == b->rope_high_freq_factor && a->rope_original_max == b->rope_original_max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir_with("config.json", data, size);
    struct model_config cfg;
    if (hf_config_read(&cfg, dir) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        return 0;
    }
    FUZZ_REQUIRE(cfg.n_layer > 0 && cfg.n_head > 0 && cfg.n_kv_head > 0 && cfg.head_dim > 0);
    FUZZ_REQUIRE(cfg.n_embd > 0 && cfg.n_inner > 0 && cfg.n_positions > 0 && cfg.vocab_size > 0);
    FUZZ_REQUIRE(cfg.layer_norm_eps > 0 && cfg.layer_norm_eps <= 1);
    FUZZ_REQUIRE(cfg.sliding_window >= 0);
    if (cfg.arch == MODEL_ARCH_LLAMA) {
        FUZZ_REQUIRE(cfg.n_head % cfg.n_kv_head == 0 && cfg.head_dim % 2 == 0);
        FUZZ_REQUIRE((int64_t)cfg.n_head * cfg.head_dim <= INT32_MAX / 4);
        FUZZ_REQUIRE(cfg.rope_theta > 1);
        FUZZ_REQUIRE(cfg.rope_factor == 0 ||
                     (cfg.rope_factor >= 1 && cfg.rope_low_freq_factor > 0 &&
                      cfg.rope_high_freq_factor > cfg.rope_low_freq_factor && cfg.rope_original_max > 0));
        return 0;
    }
    FUZZ_REQUIRE(cfg.arch == MODEL_ARCH_GPT2);
    FUZZ_REQUIRE(cfg.n_embd % cfg.n_head == 0 && cfg.n_kv_head == cfg.n_head);
    FUZZ_REQUIRE(cfg.head_dim * cfg.n_head == cfg.n_embd && cfg.tied);

    char *text = hf_config_text(&cfg);
    struct model_config back;
    dir = fuzz_dir_with("config.json", (const uint8_t *)text, strlen(text));
    FUZZ_REQUIRE(hf_config_read(&back, dir) == 0);
    FUZZ_REQUIRE(same(&cfg, &back));
    free(text);
    return 0;
}
