"""ref_gpt2.py: checks `lorad train` against an independent PyTorch float64 reference.

For one case (--case) it writes a tiny random GPT-2 model directory, a token dataset and
(LoRA cases) a PEFT init adapter with random A and non-zero random B, runs the reference
trainer from gpt2_ref.py for 10 steps, runs lorad with the same settings, and compares:

  - every metrics.jsonl step row: loss (rel 1e-4), grad_norm (rel 1e-3), lr (rel 1e-6);
  - LoRA: every tensor of OUT/adapter/adapter_model.safetensors (norm-wise rel 1e-3),
    adapter_config.json's fields, and the export's meaning: the adapter merged the PEFT
    way gives the reference model's logits (max abs diff < 1e-4 of the logits' scale);
  - full: every tensor of OUT/model/model.safetensors (rel 1e-3), its config.json, and
    the logits of the written model;
  - lora_all_linear_micro also reruns lorad with other micro-batch sizes and requires the
    same per-step losses (rel 1e-5).

Exits 0 on pass, 1 with one line per difference otherwise. A missing lorad binary fails.
Usage: ref_gpt2.py --lorad PATH --case CASE --workdir DIR
"""

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_ref import (  # noqa: E402
    Failures, GPT2Config, TrainSpec, export_adapters, fmt_num, fresh_dir, gpt2_logits,
    import_adapters, layer_linears, make_lora, module_path, param_shapes, peft_merge,
    peft_module_scale, peft_targeted, random_adapters, random_gpt2_weights, read_metrics,
    read_model_dir, read_peft_dir, read_safetensors, reference_train, rel_err,
    require_lorad, resolve_targets, run_lorad, to_torch, to_torch_pairs, write_bin,
    write_h5, write_model_dir, write_peft_dir)

TOL_LOSS, TOL_GRAD_NORM, TOL_LR, TOL_PARAM = 1e-4, 1e-3, 1e-6, 1e-3
TOL_LOGITS = 1e-4    # max |diff| relative to max |logit|
TOL_MICRO = 1e-5     # losses of other micro-batch sizes against the main run
MIN_MOVE = 0.05      # LoRA: every trained tensor must move at least this much (relative)
METRIC_KEYS = ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s")


@dataclass
class Case:
    """One reference case: the model, its storage, the dataset and the training flags."""
    cfg: GPT2Config
    ts: TrainSpec
    dtype: str                      # storage dtype of model.safetensors
    prefix: bool                    # "transformer." on tensor names
    data: str                       # bin16 | bin32 | h5
    n_tokens: int
    seed: int
    buffers: bool = False           # include h.{i}.attn.bias / attn.masked_bias
    mask_zero_frac: float = 0.0     # h5 only: fraction of loss_mask zeros
    micro_variants: Tuple[int, ...] = ()
    clip_must_trigger: bool = False


def _cfg(vocab, n_inner=None, eps=1e-5):
    return GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_head=4, n_layer=2,
                      n_inner=n_inner, layer_norm_epsilon=eps)


CASES = {
    "lora_c_attn": Case(
        _cfg(77), TrainSpec(targets=("c_attn",), rank=4, alpha=8, batch=4, micro_batch=4,
                            seq=16, lr=1e-2, schedule="constant", warmup=0,
                            weight_decay=0.0, clip=0.0),
        dtype="F32", prefix=True, data="bin16", n_tokens=300, seed=101),
    "lora_qv_rslora": Case(
        _cfg(83, n_inner=128, eps=1e-6),
        TrainSpec(targets=("q", "v"), rank=4, alpha=16, rslora=True, batch=4, micro_batch=1,
                  seq=12, lr=1e-2, schedule="linear", warmup=2, weight_decay=0.01, clip=1.0),
        dtype="F16", prefix=False, data="bin32", n_tokens=263, seed=202),
    "lora_all_linear_micro": Case(
        _cfg(97), TrainSpec(targets=("all-linear",), rank=2, alpha=4, batch=4, micro_batch=2,
                            seq=16, lr=1e-2, schedule="cosine", warmup=3, weight_decay=0.05,
                            clip=0.05),
        dtype="F32", prefix=False, data="bin16", n_tokens=300, seed=303, buffers=True,
        micro_variants=(1, 4), clip_must_trigger=True),
    "lora_mlp_mask": Case(
        _cfg(71, n_inner=96),
        TrainSpec(targets=("mlp.c_fc", "attn.c_proj"), rank=4, alpha=4, batch=5,
                  micro_batch=1, seq=16, lr=1e-2, schedule="constant", warmup=3,
                  weight_decay=0.0, clip=0.5),
        dtype="BF16", prefix=True, data="h5", n_tokens=7 * 16 + 1 + 6, seed=404,
        mask_zero_frac=0.3),
    # eps 1e-6: the key bias of c_attn has an exactly zero gradient (softmax is invariant
    # to it), so AdamW's update there is float32 noise / (noise + eps); a larger eps keeps
    # that noise far below the 1e-3 tolerance.
    "full": Case(
        _cfg(89), TrainSpec(mode="full", rank=4, alpha=8, batch=3, micro_batch=1, seq=16,
                            lr=1e-3, schedule="linear", warmup=2, weight_decay=0.1,
                            clip=1.0, eps=1e-6),
        dtype="F32", prefix=True, data="bin16", n_tokens=250, seed=505),
}


# --------------------------------------------------------------------------------------
# Inputs and the reference
# --------------------------------------------------------------------------------------

@dataclass
class Setup:
    """Files written for a case and the reference's view of them."""
    model_dir: str
    data_path: str
    init_dir: Optional[str]
    base: dict                 # float64 weights as stored (rounded to the file's dtype)
    tokens: np.ndarray
    mask: Optional[np.ndarray]
    specs: list                # LoRA adapters (empty in full mode)
    init: Optional[dict]       # key -> (A, B), as stored in the init adapter (F32)


def prepare(case: Case, wd: str) -> Setup:
    rng = np.random.default_rng(case.seed)
    cfg, ts = case.cfg, case.ts
    model_dir = os.path.join(wd, "model")
    write_model_dir(model_dir, cfg, random_gpt2_weights(cfg, rng), case.dtype, case.prefix,
                    case.buffers)
    cfg_back, base = read_model_dir(model_dir)
    assert cfg_back == cfg and set(base) == set(param_shapes(cfg))

    tokens = rng.integers(0, cfg.vocab_size, case.n_tokens)
    mask = None
    if case.data == "h5":
        data_path = os.path.join(wd, "train.h5")
        mask = np.where(rng.random(case.n_tokens) < case.mask_zero_frac, 0,
                        rng.choice([1, 7, 255], case.n_tokens)).astype(np.uint8)
        write_h5(data_path, tokens, mask, tokens_dtype="int32")
    else:
        data_path = os.path.join(wd, "train.bin")
        write_bin(data_path, tokens, u32=case.data == "bin32")

    specs, init, init_dir = [], None, None
    if ts.mode == "lora":
        specs = resolve_targets(cfg, list(ts.targets))
        assert specs, "case targets match no module"
        params = random_adapters(specs, ts.rank, ts.scale, rng)
        config, tensors = export_adapters(specs, params, cfg, list(ts.targets), ts.rank,
                                          ts.alpha, ts.rslora, base_model=model_dir)
        init_dir = os.path.join(wd, "init_adapter")
        write_peft_dir(init_dir, config, tensors, "F32")
        _, stored = read_peft_dir(init_dir)
        init = import_adapters(specs, stored, ts.rank)
    return Setup(model_dir, data_path, init_dir, base, tokens, mask, specs, init)


def check_own_export(case: Case, s: Setup) -> None:
    """Our own machinery must agree with itself before lorad is judged by it: the init
    adapter, merged the PEFT way, equals the unmerged model with sliced adapters."""
    if s.init_dir is None:
        return
    config, tensors = read_peft_dir(s.init_dir)
    idx = torch.tensor(sample_inputs(case, s))
    merged = gpt2_logits(case.cfg, to_torch(peft_merge(case.cfg, s.base, config, tensors)), idx)
    unmerged = gpt2_logits(case.cfg, to_torch(s.base), idx,
                           make_lora(s.specs, to_torch_pairs(s.init), case.ts.scale))
    err = (merged - unmerged).abs().max().item()
    assert err < 1e-9, f"test defect: own PEFT export/merge disagree by {err}"


def sample_inputs(case: Case, s: Setup) -> np.ndarray:
    """A batch of inputs for logits comparisons: the first two samples."""
    T = case.ts.seq
    return np.stack([s.tokens[i * T:i * T + T] for i in range(2)]).astype(np.int64)


def lorad_args(case: Case, s: Setup, out: str, micro: int):
    """The full `lorad train` command line of CASE: every numeric flag explicit."""
    ts = case.ts
    args = ["train", "--model", s.model_dir, "--data", s.data_path, "--out", out]
    if ts.mode == "lora":
        args += ["--targets", ",".join(ts.targets)]
        if ts.rslora:
            args.append("--rslora")
        args += ["--init", "kaiming", "--init-adapter", s.init_dir]
    flags = [("--rank", ts.rank), ("--alpha", float(ts.alpha)), ("--dropout", 0.0),
             ("--steps", ts.steps), ("--batch", ts.batch), ("--micro-batch", micro),
             ("--seq", ts.seq), ("--lr", ts.lr), ("--warmup", ts.warmup),
             ("--weight-decay", ts.weight_decay), ("--beta1", ts.beta1),
             ("--beta2", ts.beta2), ("--eps", ts.eps), ("--clip", ts.clip),
             ("--seed", ts.seed), ("--threads", 1), ("--log-every", 1), ("--eval-every", 0)]
    args += ["--mode", ts.mode, "--schedule", ts.schedule, "--shuffle", "off"]
    for flag, val in flags:
        args += [flag, fmt_num(val)]
    return args


# --------------------------------------------------------------------------------------
# Checks of lorad's output
# --------------------------------------------------------------------------------------

def run_ok(fails: Failures, lorad: str, args, label: str) -> bool:
    res = run_lorad(lorad, args)
    if res.returncode != 0:
        fails.add(f"{label}: lorad exited with {res.returncode}; stderr: {res.stderr.strip()[-2000:]}")
        return False
    return True


def step_rows(fails: Failures, out: str, n_steps: int, label: str):
    """The training row of each step 1..n_steps from OUT/metrics.jsonl, or None."""
    path = os.path.join(out, "metrics.jsonl")
    if not fails.check(os.path.isfile(path), f"{label}: {path} missing"):
        return None
    try:
        rows = read_metrics(path)
    except (ValueError, OSError) as e:
        fails.add(f"{label}: metrics.jsonl is not JSON lines: {e}")
        return None
    by_step = {}
    for row in rows:
        if "grad_norm" in row:  # eval rows (val_loss only) are not step rows
            if row.get("step") in by_step:
                fails.add(f"{label}: two step rows for step {row.get('step')}")
            by_step[row.get("step")] = row
    if not fails.check(set(by_step) == set(range(1, n_steps + 1)),
                       f"{label}: step rows are {sorted(by_step, key=str)}, "
                       f"expected 1..{n_steps}"):
        return None
    ordered = [by_step[s] for s in range(1, n_steps + 1)]
    for row in ordered:
        missing = [k for k in METRIC_KEYS if not isinstance(row.get(k), (int, float))]
        fails.check(not missing, f"{label}: step {row['step']}: missing/non-numeric {missing}")
    return ordered


def check_metrics(fails: Failures, rows, ref, label: str) -> None:
    worst = {"loss": 0.0, "grad_norm": 0.0, "lr": 0.0}
    for s, row in enumerate(rows):
        for key, want, tol in (("loss", ref.losses[s], TOL_LOSS),
                               ("grad_norm", ref.grad_norms[s], TOL_GRAD_NORM),
                               ("lr", ref.lrs[s], TOL_LR)):
            got = row.get(key)
            if not isinstance(got, (int, float)):
                continue  # already reported
            err = abs(got - want) / abs(want) if want != 0 else abs(got)
            worst[key] = max(worst[key], err)
            fails.check(err <= tol or (want == 0 and abs(got) <= 1e-12),
                        f"{label}: step {s + 1}: {key} lorad={got!r} ref={want!r} "
                        f"rel err {err:.3g} > {tol:g}")
    print(f"{label}: worst rel err " + ", ".join(f"{k} {v:.3g}" for k, v in worst.items()),
          flush=True)


def check_adapter_config(fails: Failures, case: Case, config: dict, modules) -> None:
    """adapter_config.json: PEFT's fields and, per module, the rank and scale."""
    ts = case.ts
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none",
            "fan_in_fan_out": True, "use_rslora": ts.rslora}
    for key, val in want.items():
        fails.check(config.get(key) == val,
                    f"adapter_config.json: {key} = {config.get(key)!r}, expected {val!r}")
    fails.check(config.get("lora_dropout") == 0,
                f"adapter_config.json: lora_dropout = {config.get('lora_dropout')!r}, expected 0")
    fails.check(not config.get("use_dora", False), "adapter_config.json: use_dora is set")
    fails.check("base_model_name_or_path" in config,
                "adapter_config.json: base_model_name_or_path missing")
    for key in ("r", "lora_alpha", "target_modules"):
        if not fails.check(key in config, f"adapter_config.json: {key} missing"):
            return
    sliced = any(t in ("q", "k", "v") for t in ts.targets)
    if not sliced:
        fails.check(config["r"] == ts.rank and abs(config["lora_alpha"] - ts.alpha) < 1e-9,
                    f"adapter_config.json: r/lora_alpha = {config['r']}/{config['lora_alpha']},"
                    f" expected {ts.rank}/{ts.alpha}")
    all_modules = [module_path(i, n) for i in range(case.cfg.n_layer)
                   for n, _, _ in layer_linears(case.cfg)]
    targeted = sorted(peft_targeted(config, all_modules))
    fails.check(targeted == sorted(modules),
                f"adapter_config.json: target_modules {config['target_modules']!r} select "
                f"{targeted}, but the adapter holds {sorted(modules)}")
    for mod in modules:
        _, _, scale = peft_module_scale(config, mod)
        fails.check(abs(scale - ts.scale) <= 1e-6 * ts.scale,
                    f"adapter_config.json: PEFT scale of {mod} is {scale!r}, expected {ts.scale!r}")


def check_lora_output(fails: Failures, case: Case, s: Setup, ref, out: str) -> None:
    ts = case.ts
    adir = os.path.join(out, "adapter")
    try:
        config, got = read_peft_dir(adir)
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"cannot read lorad's adapter {adir}: {e}")
        return
    _, want = export_adapters(s.specs, ref.params, case.cfg, list(ts.targets), ts.rank,
                              ts.alpha, ts.rslora)
    fails.check(sorted(got) == sorted(want),
                f"adapter keys differ: extra {sorted(set(got) - set(want))}, "
                f"missing {sorted(set(want) - set(got))}")
    worst = 0.0
    for key in sorted(set(got) & set(want)):
        if not fails.check(got[key].shape == want[key].shape,
                           f"{key}: shape {got[key].shape}, expected {want[key].shape}"):
            continue
        err = rel_err(got[key], want[key])
        worst = max(worst, err)
        fails.check(err <= TOL_PARAM, f"{key}: rel err {err:.3g} > {TOL_PARAM:g}")
        if key.endswith("lora_B.weight") and any(sp.slice for sp in s.specs):
            off = np.abs(got[key][want[key] == 0]).max(initial=0.0)
            fails.check(off == 0.0, f"{key}: nonzero ({off:.3g}) outside the slices' blocks")
    print(f"adapter: {len(got)} tensors, worst rel err {worst:.3g}", flush=True)
    modules = sorted({k[len("base_model.model."):-len(".lora_A.weight")]
                      for k in got if k.endswith(".lora_A.weight")})
    check_adapter_config(fails, case, config, modules)
    # The export's meaning: PEFT-merged lorad adapter vs the reference's own adapters.
    idx = torch.tensor(sample_inputs(case, s))
    want_logits = gpt2_logits(case.cfg, to_torch(s.base), idx,
                              make_lora(s.specs, to_torch_pairs(ref.params), ts.scale))
    try:
        merged = peft_merge(case.cfg, s.base, config, got)
    except (ValueError, KeyError, TypeError) as e:
        fails.add(f"PEFT cannot apply lorad's adapter: {e}")
        return
    check_logits(fails, gpt2_logits(case.cfg, to_torch(merged), idx), want_logits,
                 "PEFT-merged lorad adapter")


def check_logits(fails: Failures, got, want, label: str) -> None:
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    print(f"{label}: max logit diff {diff:.3g} (scale {scale:.3g})", flush=True)
    fails.check(diff <= TOL_LOGITS * scale,
                f"{label}: logits differ by {diff:.3g} > {TOL_LOGITS:g} * {scale:.3g}")


def check_full_output(fails: Failures, case: Case, s: Setup, ref, out: str) -> None:
    mdir = os.path.join(out, "model")
    try:
        with open(os.path.join(mdir, "config.json")) as f:
            conf = json.load(f)
        got, dtypes = read_safetensors(os.path.join(mdir, "model.safetensors"))
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"cannot read lorad's model {mdir}: {e}")
        return
    cfg = case.cfg
    fails.check(conf.get("model_type") == "gpt2", f"config.json: model_type {conf.get('model_type')!r}")
    for key in ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size"):
        fails.check(conf.get(key) == getattr(cfg, key),
                    f"config.json: {key} = {conf.get(key)!r}, expected {getattr(cfg, key)}")
    fails.check(conf.get("n_inner") in (None, cfg.hidden) and
                abs(conf.get("layer_norm_epsilon", -1) - cfg.layer_norm_epsilon) < 1e-12,
                f"config.json: n_inner/layer_norm_epsilon = {conf.get('n_inner')!r}/"
                f"{conf.get('layer_norm_epsilon')!r}")
    want = {"transformer." + k: v for k, v in ref.params.items()}
    fails.check(sorted(got) == sorted(want),
                f"model tensors differ: extra {sorted(set(got) - set(want))}, "
                f"missing {sorted(set(want) - set(got))}")
    worst = 0.0
    for name in sorted(set(got) & set(want)):
        fails.check(dtypes[name] == "F32", f"{name}: dtype {dtypes[name]}, expected F32")
        if not fails.check(got[name].shape == want[name].shape,
                           f"{name}: shape {got[name].shape}, expected {want[name].shape}"):
            continue
        err = rel_err(got[name], want[name])
        worst = max(worst, err)
        fails.check(err <= TOL_PARAM, f"{name}: rel err {err:.3g} > {TOL_PARAM:g}")
    print(f"model: {len(got)} tensors, worst rel err {worst:.3g}", flush=True)
    if sorted(got) == sorted(want) and all(got[k].shape == want[k].shape for k in got):
        idx = torch.tensor(sample_inputs(case, s))
        written = {k[len("transformer."):]: v for k, v in got.items()}
        check_logits(fails, gpt2_logits(cfg, to_torch(written), idx),
                     gpt2_logits(cfg, to_torch(ref.params), idx), "written model")


def check_reference_sanity(case: Case, s: Setup, ref) -> None:
    """The case must be able to fail: parameters move well beyond the tolerance, and
    clipping triggers where the case says so. A violation is a defect of the test."""
    if case.ts.mode == "lora":
        for key, (a, b) in ref.params.items():
            a0, b0 = s.init[key]
            assert rel_err(a, a0) > MIN_MOVE and rel_err(b, b0) > MIN_MOVE, \
                f"test defect: {key} barely moves ({rel_err(a, a0):.3g}, {rel_err(b, b0):.3g})"
    else:
        delta = math.sqrt(sum(float(((ref.params[k] - s.base[k]) ** 2).sum()) for k in s.base))
        total = math.sqrt(sum(float((s.base[k] ** 2).sum()) for k in s.base))
        assert delta / total > 10 * TOL_PARAM, f"test defect: model moves only {delta / total:.3g}"
    if case.clip_must_trigger:
        assert max(ref.grad_norms) > case.ts.clip, "test defect: clipping never triggers"
    assert all(math.isfinite(x) for x in ref.losses)


# --------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lorad", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    case = CASES[args.case]
    fails = Failures(f"ref_gpt2 {args.case}")
    wd = fresh_dir(os.path.abspath(args.workdir))

    s = prepare(case, wd)
    check_own_export(case, s)
    ref = reference_train(case.cfg, s.base, s.tokens, s.mask, case.ts, s.init, s.specs)
    check_reference_sanity(case, s, ref)
    print("reference losses: " + " ".join(f"{x:.6f}" for x in ref.losses), flush=True)
    print("reference grad norms: " + " ".join(f"{x:.4g}" for x in ref.grad_norms), flush=True)

    lorad = os.path.abspath(args.lorad)
    require_lorad(lorad, fails)
    out = os.path.join(wd, "out")
    if not run_ok(fails, lorad, lorad_args(case, s, out, case.ts.micro_batch), "main run"):
        fails.finish()
    rows = step_rows(fails, out, case.ts.steps, "main run")
    if rows is not None:
        check_metrics(fails, rows, ref, "main run")
    if case.ts.mode == "lora":
        check_lora_output(fails, case, s, ref, out)
    else:
        check_full_output(fails, case, s, ref, out)

    for micro in case.micro_variants:
        label = f"micro-batch {micro}"
        out_m = os.path.join(wd, f"out_micro{micro}")
        if not run_ok(fails, lorad, lorad_args(case, s, out_m, micro), label):
            continue
        rows_m = step_rows(fails, out_m, case.ts.steps, label)
        if rows_m is None or rows is None:
            continue
        for a, b in zip(rows_m, rows):
            err = abs(a["loss"] - b["loss"]) / abs(b["loss"])
            fails.check(err <= TOL_MICRO, f"{label}: step {a['step']}: loss {a['loss']!r} vs "
                        f"{b['loss']!r} with micro-batch {case.ts.micro_batch} "
                        f"(rel err {err:.3g} > {TOL_MICRO:g})")
    fails.finish()


if __name__ == "__main__":
    main()
