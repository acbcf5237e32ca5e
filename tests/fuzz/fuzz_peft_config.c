/*
 * fuzz_peft_config.c: libFuzzer target for a PEFT adapter's adapter_config.json
 * (storage/peft.c, through storage/jsonio.c), read by --init-adapter, merge and generate.
 *
 * The input is the text of adapter_config.json in a scratch directory;
 * peft_config_read parses it. An accepted config must satisfy what the reader promises
 * (r > 0, dropout in [0, 1), non-empty module names, positive pattern ranks), every
 * target module must resolve to a positive rank through the patterns, and the config
 * must survive a round trip through peft_config_text and peft_config_read unchanged.
 */
#include "fuzz_util.h"

#include "error.h"
#include "peft.h"

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static int same(const struct peft_config *a, const struct peft_config *b) {
    if (a->r != b->r || a->lora_alpha != b->lora_alpha || a->use_rslora != b->use_rslora ||
        a->fan_in_fan_out != b->fan_in_fan_out || a->lora_dropout != b->lora_dropout ||
        a->n_targets != b->n_targets || a->n_patterns != b->n_patterns || !same_str(a->base_model, b->base_model))
        return 0;
    for (int32_t i = 0; i < a->n_targets; i++)
        if (strcmp(a->target_modules[i], b->target_modules[i])) return 0;
    for (int32_t i = 0; i < a->n_patterns; i++) {
        const struct peft_pattern *p = &a->patterns[i], *q = &b->patterns[i];
        if (strcmp(p->key, q->key) || p->r != q->r || p->alpha != q->alpha) return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir_with("adapter_config.json", data, size);
    struct peft_config cfg;
    if (peft_config_read(&cfg, dir) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        FUZZ_REQUIRE(cfg.target_modules == NULL && cfg.patterns == NULL && cfg.base_model == NULL);
        return 0;
    }
    FUZZ_REQUIRE(cfg.r > 0 && cfg.lora_dropout >= 0 && cfg.lora_dropout < 1);
    FUZZ_REQUIRE(cfg.n_targets > 0);
    for (int32_t i = 0; i < cfg.n_targets; i++) {
        const char *m = cfg.target_modules[i];
        FUZZ_REQUIRE(m && m[0]);
        int32_t r;
        double alpha;
        peft_module_rank_alpha(&cfg, m, &r, &alpha);
        FUZZ_REQUIRE(r > 0);
        (void)peft_module_scale(&cfg, m);
        char key[512];
        if (strlen(m) < 400) {
            peft_key(key, sizeof key, m, 'A');
            peft_key(key, sizeof key, m, 'B');
        }
    }
    for (int32_t i = 0; i < cfg.n_patterns; i++) {
        const struct peft_pattern *p = &cfg.patterns[i];
        FUZZ_REQUIRE(p->key && p->key[0] && (p->r > 0 || (p->r == 0 && p->alpha != 0)));
    }

    char *text = peft_config_text(&cfg);
    FUZZ_REQUIRE(text != NULL); /* everything read came from valid JSON, hence valid UTF-8 */
    struct peft_config back;
    dir = fuzz_dir_with("adapter_config.json", (const uint8_t *)text, strlen(text));
    FUZZ_REQUIRE(peft_config_read(&back, dir) == 0);
    FUZZ_REQUIRE(same(&cfg, &back));
    peft_config_free(&back);
    free(text);
    peft_config_free(&cfg);
    return 0;
}
