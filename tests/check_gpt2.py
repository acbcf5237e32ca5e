"""check_gpt2.py: `lorad train` on GPT-2 against the PyTorch float64 reference of torch_gpt2.py.

Each case (--case) is one train_case.TrainCase run by train_case.run_train_case (which
says what is compared), on a tiny random GPT-2 in the storage the case names (F32, F16,
BF16; with or without the "transformer." prefix and the old attention buffers):

  lora_c_attn            c_attn, constant lr; also --gemm openblas and --base-dtype bf16
  lora_qv_rslora         the q and v slices of c_attn, rsLoRA, micro-batch 1, F16 weights
                         without the prefix, uint32 tokens, linear warmup and clipping
  lora_all_linear_micro  all-linear, cosine schedule, clipping that triggers, old buffers;
                         micro-batch 1, 2 and 4 agree; the other products
  lora_mlp_mask          mlp.c_fc and attn.c_proj on BF16 weights, HDF5 with a loss mask,
                         --val (7 samples: a partial eval micro-batch), --eval-every 5
  full                   --mode full: OUT/model/ against the reference's every tensor
  dropout                --dropout 0.2 on q, v and mlp.c_fc with --shuffle on: the checks
                         the contract promises where the reference cannot follow
  lora_patterns          --rank-pattern / --alpha-pattern: four different scales; refusals
                         of the init adapter; overlapping keys, where the first match wins

Exits 0 on pass, 1 with one line per difference otherwise. A missing lorad binary fails.
Usage: check_gpt2.py --lorad PATH --case CASE --workdir DIR
"""

import json
import os
import sys
from functools import partial

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch_gpt2 as gpt2  # noqa: E402
from harness import Failures, run_driver  # noqa: E402
from torch_train import TrainSpec  # noqa: E402
from train_case import Family, OrderRun, TrainCase, run_train_case  # noqa: E402


def check_config(fails: Failures, mdir: str, cfg: gpt2.GPT2Config) -> None:
    """A written model's config.json: GPT-2 with the case's shape."""
    with open(os.path.join(mdir, "config.json")) as f:
        conf = json.load(f)
    fails.check(conf.get("model_type") == "gpt2", f"config.json: model_type {conf.get('model_type')!r}")
    for key in ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size"):
        fails.check(conf.get(key) == getattr(cfg, key),
                    f"config.json: {key} = {conf.get(key)!r}, expected {getattr(cfg, key)}")
    fails.check(conf.get("n_inner") in (None, cfg.hidden) and
                abs(conf.get("layer_norm_epsilon", -1) - cfg.layer_norm_epsilon) < 1e-12,
                f"config.json: n_inner/layer_norm_epsilon = {conf.get('n_inner')!r}/"
                f"{conf.get('layer_norm_epsilon')!r}")


GPT2 = Family(logits=gpt2.gpt2_logits, make_model=gpt2.make_model, resolve_targets=gpt2.resolve_targets,
              export_adapters=gpt2.export_adapters, import_adapters=gpt2.import_adapters,
              peft_merge=gpt2.peft_merge, all_modules=gpt2.all_modules, check_config=check_config,
              module_prefix="transformer.", stored_prefix="transformer.", fan_in_fan_out=True)


def _cfg(vocab, n_inner=None, eps=1e-5):
    return gpt2.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_head=4, n_layer=2,
                           n_inner=n_inner, layer_norm_epsilon=eps)


# lora_patterns' second run: keys that overlap, so that only the FIRST matching key in
# the flags' order gives each module's rank and alpha (h.0's c_attn: rank 3, not 5;
# h.1's c_fc: alpha 4, not 7), from its own init adapter for 3 steps.
ORDER = OrderRun(
    overrides=dict(targets=("c_attn", "mlp.c_fc"), schedule="constant", warmup=0, steps=3,
                   rank_pattern=(("attn.c_attn", 3), ("h.0.attn.c_attn", 5), ("h.1.mlp.c_fc", 2)),
                   alpha_pattern=(("mlp.c_fc", 4), ("h.1.mlp.c_fc", 7), ("h.0.attn.c_attn", 6))),
    table={"h.0.attn.c_attn": (3, 6), "h.1.attn.c_attn": (3, 8), "h.0.mlp.c_fc": (4, 4), "h.1.mlp.c_fc": (2, 4)})

CASES = {
    "lora_c_attn": TrainCase(
        _cfg(77), TrainSpec(targets=("c_attn",), rank=4, alpha=8, batch=4, micro_batch=4,
                            seq=16, lr=1e-2, schedule="constant", warmup=0,
                            weight_decay=0.0, clip=0.0),
        seed=101, dtype="F32", layout=dict(prefix=True), data="bin16", n_tokens=300, products=True),
    "lora_qv_rslora": TrainCase(
        _cfg(83, n_inner=128, eps=1e-6),
        TrainSpec(targets=("q", "v"), rank=4, alpha=16, rslora=True, batch=4, micro_batch=1,
                  seq=12, lr=1e-2, schedule="linear", warmup=2, weight_decay=0.01, clip=1.0),
        seed=202, dtype="F16", layout=dict(prefix=False), data="bin32", n_tokens=263),
    "lora_all_linear_micro": TrainCase(
        _cfg(97), TrainSpec(targets=("all-linear",), rank=2, alpha=4, batch=4, micro_batch=2,
                            seq=16, lr=1e-2, schedule="cosine", warmup=3, weight_decay=0.05,
                            clip=0.05),
        seed=303, dtype="F32", layout=dict(prefix=False, buffers=True), data="bin16", n_tokens=300,
        micro_variants=(1, 4), clip_must_trigger=True, products=True),
    "lora_mlp_mask": TrainCase(
        _cfg(71, n_inner=96),
        TrainSpec(targets=("mlp.c_fc", "attn.c_proj"), rank=4, alpha=4, batch=6,
                  micro_batch=3, seq=16, lr=1e-2, schedule="constant", warmup=3,
                  weight_decay=0.0, clip=0.5, eval_every=5),
        seed=404, dtype="BF16", layout=dict(prefix=True), data="h5", n_tokens=7 * 16 + 1 + 6,
        mask_zero_frac=0.3, val_samples=7, products=True),  # 7 = 3+3+1: a partial eval micro-batch
    # eps 1e-6: the key bias of c_attn has an exactly zero gradient (softmax is invariant
    # to it), so AdamW's update there is float32 noise / (noise + eps); a larger eps keeps
    # that noise far below the 1e-3 tolerance.
    "full": TrainCase(
        _cfg(89), TrainSpec(mode="full", rank=4, alpha=8, batch=3, micro_batch=1, seq=16,
                            lr=1e-3, schedule="linear", warmup=2, weight_decay=0.1,
                            clip=1.0, eps=1e-6),
        seed=505, dtype="F32", layout=dict(prefix=True), data="bin16", n_tokens=250),
    # Dropout on the q and v slices (which share c_attn's input) and on mlp.c_fc. 16
    # samples: 10 steps of 4 cross two reshuffles. micro_variants apply to the dropout runs.
    # The validation set (evaluated before training and after the last step) checks that
    # evaluation runs without dropout.
    "dropout": TrainCase(
        _cfg(67), TrainSpec(targets=("q", "v", "mlp.c_fc"), rank=4, alpha=8, batch=4,
                            micro_batch=4, seq=16, lr=1e-2, schedule="linear", warmup=2,
                            weight_decay=0.01, clip=1.0, seed=77),
        seed=606, dtype="F32", layout=dict(prefix=True), data="h5", n_tokens=16 * 16 + 1,
        hardest_first=True, dropout=0.2, micro_variants=(1, 2), val_samples=5),
    # --rank-pattern / --alpha-pattern: h.0's c_attn at rank 2 (h.1's keeps --rank 4),
    # c_fc at rank 6 with alpha 3, attention's c_proj (not the MLP's) with alpha 5: four
    # different scales (4, 2, 0.5, 1.25) from an init adapter with those ranks.
    "lora_patterns": TrainCase(
        _cfg(79, n_inner=80),
        TrainSpec(targets=("c_attn", "mlp.c_fc", "attn.c_proj"), rank=4, alpha=8,
                  rank_pattern=(("h.0.attn.c_attn", 2), ("c_fc", 6)),
                  alpha_pattern=(("c_fc", 3), ("attn.c_proj", 5)), batch=4, micro_batch=2,
                  seq=16, lr=1e-2, schedule="linear", warmup=2, weight_decay=0.01, clip=1.0),
        seed=707, dtype="F32", layout=dict(prefix=True), data="bin16", n_tokens=300,
        module_table={"h.0.attn.c_attn": (2, 8), "h.1.attn.c_attn": (4, 8),
                      "h.0.mlp.c_fc": (6, 3), "h.1.mlp.c_fc": (6, 3),
                      "h.0.attn.c_proj": (4, 5), "h.1.attn.c_proj": (4, 5)},
        more_refusals=(("with c_fc's alpha 4 instead of 3", dict(alpha_pattern=(("c_fc", 4), ("attn.c_proj", 5)))),
                       ("with c_fc at rank 3 and alpha 1.5 (the same scale, another rank)",
                        dict(rank_pattern=(("h.0.attn.c_attn", 2), ("c_fc", 3)),
                             alpha_pattern=(("c_fc", 1.5), ("attn.c_proj", 5))))),
        order=ORDER),
}

if __name__ == "__main__":
    run_driver("check_gpt2", {name: partial(run_train_case, GPT2, case) for name, case in CASES.items()})
