/*
 * fuzz_adapter.c: libFuzzer target for an adapter's tensors as `lorad analyze` reads
 * them (worker/analysis.c, over storage/peft.c's module listing and
 * storage/safetensors.c).
 *
 * The input is adapter_model.safetensors, beside a fixed adapter_config.json (r 2, and
 * r 4 for c_attn through rank_pattern); factor_set_read parses it. A refused input
 * leaves an error and nothing allocated. An accepted one must give modules with
 * positive shapes whose A is (r,k) and B (d,r), a fused c_attn's slices named ".q",
 * ".k", ".v" with d = k; and each module's spectrum must be finite and descending, its
 * rank at most min(d,k,r), its energy shares in [0,1] and nondecreasing, and its
 * Frobenius norm that of ΔW = s·B·A formed directly.
 */
#include "fuzz_util.h"

#include <math.h>

#include "analysis.h"
#include "error.h"

static const char config[] = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": "
                             "[\"c_attn\", \"q_proj\"], \"rank_pattern\": {\"c_attn\": 4}}";
static char config_path[600];

static void config_remove(void) { unlink(config_path); }

/* ‖s·B·A‖_F, formed. */
static double formed_norm(const struct lora_factors *f) {
    double e = 0;
    for (int32_t i = 0; i < f->d; i++)
        for (int32_t j = 0; j < f->k; j++) {
            double v = 0;
            for (int32_t c = 0; c < f->r; c++) v += f->B[(size_t)i * f->r + c] * f->A[(size_t)c * f->k + j];
            e += (f->scale * v) * (f->scale * v);
        }
    return sqrt(e);
}

static void spectrum_verify(const struct lora_factors *f) {
    struct spectrum sp;
    if (spectrum_compute(&sp, f) != 0) { /* LAPACK may refuse; then with an error */
        FUZZ_REQUIRE(err_msg()[0] != '\0');
        return;
    }
    FUZZ_REQUIRE(sp.p <= f->r && sp.p <= f->d && sp.p <= f->k && sp.rank <= sp.p);
    for (int32_t i = 0; i < sp.p; i++)
        FUZZ_REQUIRE(isfinite(sp.S[i]) && sp.S[i] >= 0 && (i == 0 || sp.S[i] <= sp.S[i - 1]));
    double last = 0;
    for (int32_t n = 1; n <= 8; n++) {
        double e = spectrum_energy(&sp, n);
        FUZZ_REQUIRE(e >= last - 1e-12 && e <= 1 + 1e-12);
        last = e;
    }
    double want = formed_norm(f);
    FUZZ_REQUIRE(fabs(sp.fro - want) <= 1e-9 * want + 1e-300);
    spectrum_free(&sp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir_with("adapter_model.safetensors", data, size);
    if (!config_path[0]) {
        snprintf(config_path, sizeof config_path, "%s/adapter_config.json", dir);
        FILE *f = fopen(config_path, "w");
        if (!f || fputs(config, f) < 0 || fclose(f) != 0) fuzz_die("adapter_config.json");
        atexit(config_remove); /* runs before fuzz_dir_remove, registered earlier */
    }
    struct factor_set set;
    if (factor_set_read(&set, dir) != 0) {
        FUZZ_REQUIRE(err_msg()[0] != '\0' && set.f == NULL && set.n == 0);
        return 0;
    }
    FUZZ_REQUIRE(set.n > 0);
    for (int32_t i = 0; i < set.n; i++) {
        const struct lora_factors *f = &set.f[i];
        FUZZ_REQUIRE(f->d > 0 && f->k > 0 && f->r > 0 && f->A && f->B);
        FUZZ_REQUIRE(f->slice < 0 ? !strcmp(f->name, f->module)
                                  : f->d == f->k && strlen(f->name) == strlen(f->module) + 2);
        spectrum_verify(f);
    }
    factor_set_free(&set);
    return 0;
}
