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
  - metrics.jsonl has one row per step, and val_loss only on the evaluation steps;
  - lora_mlp_mask also passes --val (its own loss_mask, a sample count that is not a
    multiple of the micro-batch) and --eval-every 5: val_loss at steps 5 and 10 and the
    "validation loss before training" on stderr against the reference (rel 1e-4);
  - cases with micro_variants rerun lorad with other micro-batch sizes and require the
    same per-step losses (rel 1e-5) and trained tensors (rel 1e-4);
  - dropout runs lorad with --dropout 0.2 --shuffle on, where the reference cannot follow,
    and checks what the contract promises instead: micro-batch 1, 2 and 4 agree, a rerun is
    bit-identical, another --seed and --dropout 0 change the trajectory, shuffling changes
    the first batch (the data make any batch but the first clearly easier), and with the
    parameters frozen (--lr 0) the masks change with the step and the seed; its
    validation loss before training must not see dropout;
  - lora_patterns: --rank-pattern / --alpha-pattern give each module its own rank and
    scale (checked against a table worked out by hand, and the reference with the wrong
    scales must miss the losses by 10x the tolerance); the adapter config's PEFT matching
    gives every module its rank and scale; the init adapter is refused (exit 2) by flags
    whose patterns do not give its ranks and scales; and a second run with overlapping
    keys (3 steps, its own init adapter) shows that the first matching key wins.

Exits 0 on pass, 1 with one line per difference otherwise. A missing lorad binary fails.
Usage: ref_gpt2.py --lorad PATH --case CASE --workdir DIR
"""

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_ref import (  # noqa: E402
    Failures, GPT2Config, TrainSpec, eval_steps, export_adapters, fmt_num,
    gpt2_logits, import_adapters, isolate_samples, layer_linears, lora_scale, make_lora, module_path,
    n_samples, param_shapes, peft_merge, peft_module_scale, peft_targeted, permute_samples,
    random_adapters, random_gpt2_weights, read_metrics, read_model_dir, read_peft_dir,
    read_safetensors, reference_train, rel_err, resolve_targets, run_driver, run_lorad,
    sample_losses, to_torch, to_torch_pairs, write_bin, write_h5, write_model_dir,
    write_peft_dir)

TOL_LOSS, TOL_GRAD_NORM, TOL_LR, TOL_PARAM = 1e-4, 1e-3, 1e-6, 1e-3
TOL_BF16_LOSS, TOL_BF16_GRAD = 5e-3, 5e-2  # --base-dtype bf16 against the float64 reference
TOL_VAL = 1e-4         # val_loss and the loss before training
TOL_LOGITS = 1e-4      # max |diff| relative to max |logit|
TOL_MICRO = 1e-5       # losses of other micro-batch sizes against the case's run
TOL_MICRO_PARAM = 1e-4  # trained tensors of other micro-batch sizes (norm-wise)
MIN_DIFFER = 1e-6      # trajectories that must differ do so by more than this somewhere
MIN_MOVE = 0.05        # LoRA: every trained tensor must move at least this much (relative)
METRIC_KEYS = ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s")
# The metrics a rerun must reproduce bit for bit (the others are timings).
EXACT_KEYS = ("step", "loss", "lr", "grad_norm", "tokens", "target_tokens", "val_loss")
VAL_BEFORE = re.compile(r"validation loss before training: (\S+)")


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
    micro_variants: Tuple[int, ...] = ()  # other micro-batch sizes that must agree
    clip_must_trigger: bool = False
    val_samples: int = 0            # h5 only: --val with this many samples (own loss_mask)
    hardest_first: bool = False     # h5 only: isolated samples, highest initial loss first
    dropout: float = 0.0            # > 0: the dropout determinism checks at this rate
    # patterns: each adapted module (path without "transformer.") -> its (rank, alpha) as
    # worked out by hand from the case's --rank-pattern / --alpha-pattern; with it the
    # pattern checks run (see check_patterns)
    module_table: Dict[str, Tuple[int, float]] = field(default_factory=dict)
    products: bool = False          # also run OpenBLAS's products and bf16 frozen weights


def _cfg(vocab, n_inner=None, eps=1e-5):
    return GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_head=4, n_layer=2,
                      n_inner=n_inner, layer_norm_epsilon=eps)


CASES = {
    "lora_c_attn": Case(
        _cfg(77), TrainSpec(targets=("c_attn",), rank=4, alpha=8, batch=4, micro_batch=4,
                            seq=16, lr=1e-2, schedule="constant", warmup=0,
                            weight_decay=0.0, clip=0.0),
        dtype="F32", prefix=True, data="bin16", n_tokens=300, seed=101, products=True),
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
        micro_variants=(1, 4), clip_must_trigger=True, products=True),
    "lora_mlp_mask": Case(
        _cfg(71, n_inner=96),
        TrainSpec(targets=("mlp.c_fc", "attn.c_proj"), rank=4, alpha=4, batch=6,
                  micro_batch=3, seq=16, lr=1e-2, schedule="constant", warmup=3,
                  weight_decay=0.0, clip=0.5, eval_every=5),
        dtype="BF16", prefix=True, data="h5", n_tokens=7 * 16 + 1 + 6, seed=404,
        mask_zero_frac=0.3, val_samples=7, products=True),  # 7 = 3+3+1: a partial eval micro-batch
    # eps 1e-6: the key bias of c_attn has an exactly zero gradient (softmax is invariant
    # to it), so AdamW's update there is float32 noise / (noise + eps); a larger eps keeps
    # that noise far below the 1e-3 tolerance.
    "full": Case(
        _cfg(89), TrainSpec(mode="full", rank=4, alpha=8, batch=3, micro_batch=1, seq=16,
                            lr=1e-3, schedule="linear", warmup=2, weight_decay=0.1,
                            clip=1.0, eps=1e-6),
        dtype="F32", prefix=True, data="bin16", n_tokens=250, seed=505),
    # Dropout on the q and v slices (which share c_attn's input) and on mlp.c_fc. 16
    # samples: 10 steps of 4 cross two reshuffles. micro_variants apply to the dropout runs.
    # The validation set (evaluated before training and after the last step) checks that
    # evaluation runs without dropout.
    "dropout": Case(
        _cfg(67), TrainSpec(targets=("q", "v", "mlp.c_fc"), rank=4, alpha=8, batch=4,
                            micro_batch=4, seq=16, lr=1e-2, schedule="linear", warmup=2,
                            weight_decay=0.01, clip=1.0, seed=77),
        dtype="F32", prefix=True, data="h5", n_tokens=16 * 16 + 1, seed=606,
        hardest_first=True, dropout=0.2, micro_variants=(1, 2), val_samples=5),
    # --rank-pattern / --alpha-pattern: h.0's c_attn at rank 2 (h.1's keeps --rank 4),
    # c_fc at rank 6 with alpha 3, attention's c_proj (not the MLP's) with alpha 5: four
    # different scales (4, 2, 0.5, 1.25) from an init adapter with those ranks.
    "lora_patterns": Case(
        _cfg(79, n_inner=80),
        TrainSpec(targets=("c_attn", "mlp.c_fc", "attn.c_proj"), rank=4, alpha=8,
                  rank_pattern=(("h.0.attn.c_attn", 2), ("c_fc", 6)),
                  alpha_pattern=(("c_fc", 3), ("attn.c_proj", 5)), batch=4, micro_batch=2,
                  seq=16, lr=1e-2, schedule="linear", warmup=2, weight_decay=0.01, clip=1.0),
        dtype="F32", prefix=True, data="bin16", n_tokens=300, seed=707,
        module_table={"h.0.attn.c_attn": (2, 8), "h.1.attn.c_attn": (4, 8),
                      "h.0.mlp.c_fc": (6, 3), "h.1.mlp.c_fc": (6, 3),
                      "h.0.attn.c_proj": (4, 5), "h.1.attn.c_proj": (4, 5)}),
}

# lora_patterns' second run: keys that overlap, so that only the FIRST matching key in
# the flags' order gives each module's rank and alpha (h.0's c_attn: rank 3, not 5;
# h.1's c_fc: alpha 4, not 7), from its own init adapter for 3 steps.
ORDER_PATTERNS = dict(
    targets=("c_attn", "mlp.c_fc"),
    rank_pattern=(("attn.c_attn", 3), ("h.0.attn.c_attn", 5), ("h.1.mlp.c_fc", 2)),
    alpha_pattern=(("mlp.c_fc", 4), ("h.1.mlp.c_fc", 7), ("h.0.attn.c_attn", 6)), steps=3)
ORDER_TABLE = {"h.0.attn.c_attn": (3, 6), "h.1.attn.c_attn": (3, 8),
               "h.0.mlp.c_fc": (4, 4), "h.1.mlp.c_fc": (2, 4)}


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
    val_path: Optional[str] = None
    val: Optional[tuple] = None              # (tokens, mask) of the validation set
    init_losses: Optional[np.ndarray] = None  # hardest_first: initial loss of each sample


def random_mask(rng: np.random.Generator, n: int, zero_frac: float) -> np.ndarray:
    """A loss_mask: zeros with probability ZERO_FRAC, else assorted nonzero bytes."""
    return np.where(rng.random(n) < zero_frac, 0, rng.choice([1, 7, 255], n)).astype(np.uint8)


def init_lora(case: Case, specs, init):
    return make_lora(specs, to_torch_pairs(init), case.ts.module_scale) if specs else None


def hardest_first(case: Case, base, tokens, mask, specs, init):
    """Isolates the samples and reorders them by decreasing loss under the initial
    parameters, so that every batch but samples 0..G-1 has a clearly lower loss at step 1
    (check_reference_sanity measures how clearly). Returns tokens, mask and the samples'
    initial losses in the new order."""
    T = case.ts.seq
    mask = isolate_samples(mask, T)
    sums, counts = sample_losses(case.cfg, to_torch(base), tokens, mask, T,
                                 n_samples(tokens, T), init_lora(case, specs, init))
    assert np.all(counts == counts[0]), "test defect: samples count unequal targets"
    order = np.argsort(-sums / counts, kind="stable")
    tokens, mask = permute_samples(tokens, mask, T, order.tolist())
    return tokens, mask, (sums / counts)[order]


def write_tokens(case: Case, path_stem: str, tokens, mask) -> str:
    if case.data == "h5":
        write_h5(path_stem + ".h5", tokens, mask, tokens_dtype="int32")
        return path_stem + ".h5"
    write_bin(path_stem + ".bin", tokens, u32=case.data == "bin32")
    return path_stem + ".bin"


def prepare(case: Case, wd: str) -> Setup:
    rng = np.random.default_rng(case.seed)
    cfg, ts = case.cfg, case.ts
    model_dir = os.path.join(wd, "model")
    write_model_dir(model_dir, cfg, random_gpt2_weights(cfg, rng), case.dtype, case.prefix,
                    case.buffers)
    cfg_back, base = read_model_dir(model_dir)
    assert cfg_back == cfg and set(base) == set(param_shapes(cfg))

    tokens = rng.integers(0, cfg.vocab_size, case.n_tokens)
    mask = random_mask(rng, case.n_tokens, case.mask_zero_frac) if case.data == "h5" else None

    specs, init, init_dir = [], None, None
    if ts.mode == "lora":
        specs = resolve_targets(cfg, list(ts.targets))
        assert specs, "case targets match no module"
        params = random_adapters(specs, ts.module_rank, ts.module_scale, rng)
        config, tensors = export_adapters(specs, params, cfg, list(ts.targets), ts.rank,
                                          ts.alpha, ts.rslora, base_model=model_dir,
                                          rank_pattern=ts.rank_pattern,
                                          alpha_pattern=ts.alpha_pattern)
        init_dir = os.path.join(wd, "init_adapter")
        write_peft_dir(init_dir, config, tensors, "F32")
        _, stored = read_peft_dir(init_dir)
        init = import_adapters(specs, stored, ts.module_rank)

    init_losses = None
    if case.hardest_first:
        tokens, mask, init_losses = hardest_first(case, base, tokens, mask, specs, init)
    data_path = write_tokens(case, os.path.join(wd, "train"), tokens, mask)
    val_path, val = None, None
    if case.val_samples:
        n = case.val_samples * ts.seq + 1 + 5  # a tail too short for another sample
        val = (rng.integers(0, cfg.vocab_size, n), random_mask(rng, n, case.mask_zero_frac))
        val_path = write_tokens(case, os.path.join(wd, "val"), *val)
    return Setup(model_dir, data_path, init_dir, base, tokens, mask, specs, init,
                 val_path, val, init_losses)


def check_own_export(case: Case, s: Setup) -> None:
    """Our own machinery must agree with itself before lorad is judged by it: the init
    adapter, merged the PEFT way, equals the unmerged model with sliced adapters."""
    if s.init_dir is None:
        return
    config, tensors = read_peft_dir(s.init_dir)
    idx = torch.tensor(sample_inputs(case, s))
    merged = gpt2_logits(case.cfg, to_torch(peft_merge(case.cfg, s.base, config, tensors)), idx)
    unmerged = gpt2_logits(case.cfg, to_torch(s.base), idx, init_lora(case, s.specs, s.init))
    err = (merged - unmerged).abs().max().item()
    assert err < 1e-9, f"test defect: own PEFT export/merge disagree by {err}"


def sample_inputs(case: Case, s: Setup) -> np.ndarray:
    """A batch of inputs for logits comparisons: the first two samples."""
    T = case.ts.seq
    return np.stack([s.tokens[i * T:i * T + T] for i in range(2)]).astype(np.int64)


@dataclass(frozen=True)
class Variant:
    """How a lorad run departs from the case's own flags (the ones the reference follows)."""
    micro: Optional[int] = None  # --micro-batch; None: the case's
    dropout: float = 0.0
    shuffle: bool = False
    seed: Optional[int] = None   # --seed; None: the case's
    lr: Optional[float] = None   # --lr; None: the case's
    gemm: str = ""               # --gemm; "": the default (onednn)
    base_dtype: str = ""         # --base-dtype; "": the default (f32)
    threads: int = 1

    def label(self) -> str:
        parts = [f"micro-batch {self.micro}"] if self.micro is not None else []
        parts += [f"--gemm {self.gemm}"] if self.gemm else []
        parts += [f"--base-dtype {self.base_dtype}"] if self.base_dtype else []
        parts += [f"{self.threads} threads"] if self.threads != 1 else []
        if self.lr is not None:
            parts.append(f"lr {self.lr:g}")
        if self.dropout:
            parts.append(f"dropout {self.dropout:g}")
        if self.shuffle:
            parts.append("shuffle on")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts) or "main run"


def lorad_args(case: Case, s: Setup, out: str, v: Variant = Variant()):
    """The full `lorad train` command line of CASE: every numeric flag explicit."""
    ts = case.ts
    args = ["train", "--model", s.model_dir, "--data", s.data_path, "--out", out]
    if s.val_path:
        args += ["--val", s.val_path]
    if ts.mode == "lora":
        args += ["--targets", ",".join(ts.targets)]
        if ts.rslora:
            args.append("--rslora")
        args += ["--init", "kaiming", "--init-adapter", s.init_dir]
        if ts.rank_pattern:
            args += ["--rank-pattern", ",".join(f"{k}={v}" for k, v in ts.rank_pattern)]
        if ts.alpha_pattern:
            args += ["--alpha-pattern", ",".join(f"{k}={fmt_num(float(v))}" for k, v in ts.alpha_pattern)]
    flags = [("--rank", ts.rank), ("--alpha", float(ts.alpha)), ("--dropout", v.dropout),
             ("--steps", ts.steps), ("--batch", ts.batch),
             ("--micro-batch", ts.micro_batch if v.micro is None else v.micro),
             ("--seq", ts.seq), ("--lr", ts.lr if v.lr is None else v.lr), ("--warmup", ts.warmup),
             ("--weight-decay", ts.weight_decay), ("--beta1", ts.beta1),
             ("--beta2", ts.beta2), ("--eps", ts.eps), ("--clip", ts.clip),
             ("--seed", ts.seed if v.seed is None else v.seed), ("--threads", v.threads),
             ("--log-every", 1), ("--eval-every", ts.eval_every), ("--eval-batches", 0)]
    args += ["--mode", ts.mode, "--schedule", ts.schedule,
             "--shuffle", "on" if v.shuffle else "off"]
    for flag, val in flags:
        args += [flag, fmt_num(val)]
    args += ["--gemm", v.gemm] if v.gemm else []
    args += ["--base-dtype", v.base_dtype] if v.base_dtype else []
    return args


# --------------------------------------------------------------------------------------
# Checks of lorad's output
# --------------------------------------------------------------------------------------

@dataclass
class Run:
    """A finished lorad run whose metrics are usable."""
    label: str
    variant: Variant
    out: str
    stderr: str
    rows: list  # the row of each step 1..steps

    def losses(self) -> List[float]:
        return [row["loss"] for row in self.rows]


def launch(fails: Failures, lorad: str, case: Case, s: Setup, wd: str, v: Variant = Variant(),
           label: Optional[str] = None) -> Optional[Run]:
    """Runs lorad with variant V into its own directory under WD; None (reported) when it
    fails or its metrics are unusable."""
    label = label or v.label()
    out = os.path.join(wd, "out_" + re.sub(r"[^A-Za-z0-9.]+", "_", label))
    res = run_lorad(lorad, lorad_args(case, s, out, v))
    if res.returncode != 0:
        fails.add(f"{label}: lorad exited with {res.returncode}; stderr: {res.stderr.strip()[-2000:]}")
        return None
    rows = step_rows(fails, out, case.ts.steps, label)
    return None if rows is None else Run(label, v, out, res.stderr, rows)


def step_rows(fails: Failures, out: str, n_steps: int, label: str):
    """The rows of OUT/metrics.jsonl, exactly one per step 1..n_steps, in step order; or
    None (reported)."""
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
        if row.get("step") in by_step:
            fails.add(f"{label}: two rows for step {row.get('step')}")
        by_step[row.get("step")] = row
    if not fails.check(set(by_step) == set(range(1, n_steps + 1)) and len(rows) == n_steps,
                       f"{label}: {len(rows)} rows for steps {sorted(by_step, key=str)}, "
                       f"expected one per step 1..{n_steps}"):
        return None
    ordered = [by_step[s] for s in range(1, n_steps + 1)]
    for row in ordered:
        missing = [k for k in METRIC_KEYS if not isinstance(row.get(k), (int, float))]
        fails.check(not missing, f"{label}: step {row['step']}: missing/non-numeric {missing}")
    return ordered if all(isinstance(r.get("loss"), (int, float)) for r in ordered) else None


def rel_close(fails: Failures, got, want, tol: float, what: str) -> float:
    """Checks GOT against WANT: relative error (norm-wise for arrays) at most TOL, or
    |GOT| <= 1e-12 where WANT is zero. Returns the error."""
    if np.any(want):
        err = rel_err(got, want)
        ok = err <= tol
    else:
        err = float(np.max(np.abs(got)))
        ok = err <= 1e-12
    detail = f"{got!r}, expected {want!r}, " if np.ndim(want) == 0 else ""
    fails.check(ok, f"{what}: {detail}rel err {err:.3g} > {tol:g}")
    return err


def check_metrics(fails: Failures, rows, ref, label: str) -> None:
    worst = {"loss": 0.0, "grad_norm": 0.0, "lr": 0.0}
    for s, row in enumerate(rows):
        for key, want, tol in (("loss", ref.losses[s], TOL_LOSS),
                               ("grad_norm", ref.grad_norms[s], TOL_GRAD_NORM),
                               ("lr", ref.lrs[s], TOL_LR)):
            got = row.get(key)
            if isinstance(got, (int, float)):  # else already reported
                err = rel_close(fails, got, want, tol, f"{label}: step {s + 1}: {key}")
                worst[key] = max(worst[key], err)
    print(f"{label}: worst rel err " + ", ".join(f"{k} {v:.3g}" for k, v in worst.items()),
          flush=True)


def check_val(fails: Failures, case: Case, run: Run, ref, follows_ref=True) -> None:
    """val_loss on exactly the evaluation steps, equal to the reference's after that
    step's update (when the run FOLLOWS_REF), and the validation loss before training
    (at the initial parameters whatever the flags) on stderr."""
    evals = set(eval_steps(case.ts.eval_every, case.ts.steps)) if ref.val_losses else set()
    for row in run.rows:
        step, got = row["step"], row.get("val_loss")
        if step not in evals:
            fails.check(got is None, f"{run.label}: step {step}: val_loss {got!r} on a step "
                        f"that does not evaluate (evaluation steps: {sorted(evals)})")
        elif fails.check(isinstance(got, (int, float)), f"{run.label}: step {step}: "
                         f"val_loss missing or non-numeric ({got!r})") and follows_ref:
            want = ref.val_losses[step]
            rel_close(fails, got, want, TOL_VAL, f"{run.label}: step {step}: val_loss")
            print(f"{run.label}: step {step}: val_loss {got!r}, reference {want!r}")
    found = VAL_BEFORE.findall(run.stderr)
    if not ref.val_losses:
        fails.check(not found, f"{run.label}: reports a validation loss without --val")
        return
    if not fails.check(len(found) == 1, f"{run.label}: stderr has {len(found)} "
                       f"'validation loss before training' lines, expected 1"):
        return
    try:
        before = float(found[0])
    except ValueError:
        fails.add(f"{run.label}: validation loss before training {found[0]!r} is not a number")
        return
    what = f"{run.label}: validation loss before training"
    rel_close(fails, before, ref.val_losses[0], TOL_VAL, what)
    print(f"{what} {found[0]}, reference {ref.val_losses[0]!r}")


def check_adapter_config(fails: Failures, case: Case, config: dict, modules, specs) -> None:
    """adapter_config.json: PEFT's fields and, per module, the rank and scale PEFT's
    matching gives (a sliced c_attn: n times its slices' rank, their scale)."""
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
    for key in ("rank_pattern", "alpha_pattern"):
        fails.check(isinstance(config.get(key), dict),
                    f"adapter_config.json: {key} = {config.get(key)!r}, expected an object")
    if not all(isinstance(config.get(k), dict) for k in ("rank_pattern", "alpha_pattern")):
        return
    for mod in modules:
        try:
            r, _, scale = peft_module_scale(config, mod)
        except (TypeError, ZeroDivisionError) as e:
            fails.add(f"adapter_config.json: no PEFT scale for {mod}: {e}")
            continue
        n = max(1, sum(sp.module == mod for sp in specs))
        want_r, want_s = n * ts.module_rank(mod), ts.module_scale(mod)
        fails.check(r == want_r and abs(scale - want_s) <= 1e-6 * want_s,
                    f"adapter_config.json: PEFT gives {mod} rank {r!r} and scale {scale!r}, "
                    f"expected rank {want_r} and scale {want_s!r}")


def check_lora_output(fails: Failures, case: Case, s: Setup, ref, out: str) -> None:
    ts = case.ts
    adir = os.path.join(out, "adapter")
    try:
        config, got = read_peft_dir(adir)
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"cannot read lorad's adapter {adir}: {e}")
        return
    _, want = export_adapters(s.specs, ref.params, case.cfg, list(ts.targets), ts.rank,
                              ts.alpha, ts.rslora, rank_pattern=ts.rank_pattern,
                              alpha_pattern=ts.alpha_pattern)
    fails.check(sorted(got) == sorted(want),
                f"adapter keys differ: extra {sorted(set(got) - set(want))}, "
                f"missing {sorted(set(want) - set(got))}")
    worst = 0.0
    for key in sorted(set(got) & set(want)):
        if not fails.check(got[key].shape == want[key].shape,
                           f"{key}: shape {got[key].shape}, expected {want[key].shape}"):
            continue
        worst = max(worst, rel_close(fails, got[key], want[key], TOL_PARAM, key))
        if key.endswith("lora_B.weight") and any(sp.slice for sp in s.specs):
            off = np.abs(got[key][want[key] == 0]).max(initial=0.0)
            fails.check(off == 0.0, f"{key}: nonzero ({off:.3g}) outside the slices' blocks")
    print(f"adapter: {len(got)} tensors, worst rel err {worst:.3g}", flush=True)
    modules = sorted({k[len("base_model.model."):-len(".lora_A.weight")]
                      for k in got if k.endswith(".lora_A.weight")})
    check_adapter_config(fails, case, config, modules, s.specs)
    # The export's meaning: PEFT-merged lorad adapter vs the reference's own adapters.
    idx = torch.tensor(sample_inputs(case, s))
    want_logits = gpt2_logits(case.cfg, to_torch(s.base), idx,
                              make_lora(s.specs, to_torch_pairs(ref.params), ts.module_scale))
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
        worst = max(worst, rel_close(fails, got[name], want[name], TOL_PARAM, name))
    print(f"model: {len(got)} tensors, worst rel err {worst:.3g}", flush=True)
    if sorted(got) == sorted(want) and all(got[k].shape == want[k].shape for k in got):
        idx = torch.tensor(sample_inputs(case, s))
        written = {k[len("transformer."):]: v for k, v in got.items()}
        check_logits(fails, gpt2_logits(cfg, to_torch(written), idx),
                     gpt2_logits(cfg, to_torch(ref.params), idx), "written model")


def check_reference_sanity(case: Case, s: Setup, ref) -> None:
    """The case must be able to fail: parameters move well beyond the tolerance, clipping
    triggers where the case says so, a validation loss reported one step early or late
    would be off, and shuffling cannot leave the first batch's loss unchanged. A
    violation is a defect of the test."""
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
    if ref.val_losses:
        for step in eval_steps(case.ts.eval_every, case.ts.steps):
            v, prev = ref.val_losses[step], ref.val_losses[step - 1]
            assert abs(v - prev) > 10 * TOL_VAL * v, \
                f"test defect: val loss barely changes at step {step} ({prev} -> {v})"
    if s.init_losses is not None:
        G = case.ts.batch
        assert abs(ref.losses[0] - s.init_losses[:G].mean()) < 1e-9 * ref.losses[0], \
            "test defect: step 1 is not the mean of samples 0..G-1"
        margin = shuffle_margin(case, s)
        assert margin > 1e-3 * ref.losses[0], \
            f"test defect: step-1 losses of other batches are too close ({margin:.3g})"
    if case.dropout:
        period = repeat_period(case, s)
        N = n_samples(s.tokens, case.ts.seq)
        assert period * case.ts.batch == N and period < case.ts.steps, \
            "test defect: no two steps with the same samples"
    if case.module_table:
        check_module_table(case.ts, case.module_table, s.specs, "transformer.")
        check_patterns_matter(case.cfg, s.base, s.tokens, s.mask, case.ts, s.init, s.specs, ref)


def check_module_table(ts: TrainSpec, table: Dict[str, Tuple[int, float]], specs, prefix: str) -> None:
    """The reference's reading of the patterns (PEFT's first match) against the ranks and
    alphas worked out by hand: a difference is a defect of the test."""
    mods = sorted({sp.module[len(prefix):] for sp in specs})
    assert mods == sorted(table), f"test defect: adapted modules {mods}, table {sorted(table)}"
    for mod, (r, alpha) in table.items():
        got = (ts.module_rank(prefix + mod), ts.module_alpha(prefix + mod))
        assert got[0] == r and abs(got[1] - alpha) < 1e-12, \
            f"test defect: the reference gives {mod} rank/alpha {got}, the table {(r, alpha)}"
    print("per-module rank/alpha: " + ", ".join(f"{m} {r}/{a:g}" for m, (r, a) in table.items()),
          flush=True)


def check_patterns_matter(cfg, base, tokens, mask, ts: TrainSpec, init, specs, ref,
                          logits_fn=gpt2_logits, wrong_scales=None) -> None:
    """A lorad that gave the adapters (with the patterns' ranks) other scales must fail
    the loss check clearly: every module at --rank/--alpha's scale, --alpha-pattern
    ignored, --rank-pattern left out of the scale, and WRONG_SCALES (name -> function of
    the module path). Each trajectory departs from the reference by over 10x TOL_LOSS."""
    wrong = {
        "every module at the scale of --rank/--alpha": lambda m: ts.scale,
        "--alpha-pattern ignored": lambda m: lora_scale(ts.alpha, ts.module_rank(m), ts.rslora),
        "--rank-pattern left out of the scale":
            lambda m: lora_scale(ts.module_alpha(m), ts.rank, ts.rslora),
    }
    wrong.update(wrong_scales or {})
    for what, scale_of in wrong.items():
        alt = replace(ts)
        alt.module_scale = scale_of  # shadows the method for this copy only
        if all(abs(scale_of(sp.module) - ts.module_scale(sp.module)) < 1e-12 for sp in specs):
            raise AssertionError(f"test defect: '{what}' gives every module its right scale")
        other = reference_train(cfg, base, tokens, mask, alt, init, specs, logits_fn=logits_fn)
        diff = max(rel_err(a, b) for a, b in zip(other.losses, ref.losses))
        print(f"sanity: {what} would change the losses by {diff:.3g} (relative)", flush=True)
        assert diff > 10 * TOL_LOSS, f"test defect: '{what}' is within 10x the loss tolerance"


def shuffle_margin(case: Case, s: Setup) -> float:
    """hardest_first data: every batch of G samples but 0..G-1 has an initial loss at least
    this much lower (swapping sample G-1 for sample G is the smallest change)."""
    G = case.ts.batch
    return float(s.init_losses[G - 1] - s.init_losses[G]) / G


# --------------------------------------------------------------------------------------
# Runs against runs
# --------------------------------------------------------------------------------------

def trained_path(case: Case, run: Run) -> str:
    if case.ts.mode == "lora":
        return os.path.join(run.out, "adapter", "adapter_model.safetensors")
    return os.path.join(run.out, "model", "model.safetensors")


def check_same_trajectory(fails: Failures, case: Case, run: Run, base: Run) -> None:
    """RUN (another micro-batch size) against BASE: the losses and validation losses of
    every step and the trained tensors."""
    worst = 0.0
    for a, b in zip(run.rows, base.rows):
        for key in ("loss", "val_loss"):
            if isinstance(a.get(key), (int, float)) and isinstance(b.get(key), (int, float)):
                worst = max(worst, rel_close(fails, a[key], b[key], TOL_MICRO,
                                             f"{run.label}: step {a['step']}: {key} against "
                                             f"{base.label}"))
    try:
        got, want = (read_safetensors(trained_path(case, r))[0] for r in (run, base))
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"{run.label}: cannot read the trained tensors: {e}")
        return
    fails.check(sorted(got) == sorted(want), f"{run.label}: tensors differ from {base.label}'s")
    worst_t = max((rel_close(fails, got[k], want[k], TOL_MICRO_PARAM, f"{run.label}: {k}")
                   for k in sorted(set(got) & set(want)) if got[k].shape == want[k].shape),
                  default=0.0)
    print(f"{run.label} vs {base.label}: worst rel err loss {worst:.3g}, tensors {worst_t:.3g}",
          flush=True)


def check_differs(fails: Failures, what: str, losses, others, why: str) -> None:
    """Two loss sequences must differ somewhere by more than MIN_DIFFER (relative)."""
    diff = max(rel_err(a, b) for a, b in zip(losses, others))
    print(f"{what}: max rel loss difference {diff:.3g}", flush=True)
    fails.check(diff > MIN_DIFFER, f"{what}: the same losses (max rel diff {diff:.3g} <= "
                f"{MIN_DIFFER:g}): {why}")


def check_rerun(fails: Failures, case: Case, run: Run, base: Run) -> None:
    """A rerun with identical flags: identical metrics (but timings) and output files."""
    for a, b in zip(run.rows, base.rows):
        same_a, same_b = ({k: r.get(k) for k in EXACT_KEYS} for r in (a, b))
        if not fails.check(same_a == same_b, f"{run.label}: step {a['step']}: metrics "
                           f"{same_a} differ from {same_b}"):
            break
    dirs = [os.path.dirname(trained_path(case, r)) for r in (base, run)]
    try:
        names = [sorted(os.listdir(d)) for d in dirs]
        if not fails.check(names[0] == names[1], f"{run.label}: writes {names[1]}, "
                           f"not {names[0]}"):
            return
        for name in names[0]:
            with open(os.path.join(dirs[0], name), "rb") as f1, \
                    open(os.path.join(dirs[1], name), "rb") as f2:
                fails.check(f1.read() == f2.read(), f"{run.label}: {name} is not bit-identical")
    except OSError as e:
        fails.add(f"{run.label}: cannot compare the outputs: {e}")


def check_dropout(fails: Failures, lorad: str, case: Case, s: Setup, wd: str, main: Run,
                  drop: Run) -> None:
    """What the contract promises for --dropout and --shuffle on, where the reference
    cannot follow: DROP (dropout and shuffle on) is reproducible and depends on the seed
    and the rate; shuffling changes the first batch (MAIN has shuffle off, no dropout);
    with frozen parameters (--lr 0, shuffle off) the masks change with the step and the
    seed."""
    rerun = launch(fails, lorad, case, s, wd, drop.variant, "rerun of " + drop.label)
    if rerun:
        check_rerun(fails, case, rerun, drop)
    other_seed = launch(fails, lorad, case, s, wd, replace(drop.variant, seed=case.ts.seed + 1))
    if other_seed:
        check_differs(fails, f"{other_seed.label} vs {drop.label}", other_seed.losses(),
                      drop.losses(), "the seed keys the dropout masks and the order")
    no_drop = launch(fails, lorad, case, s, wd, replace(drop.variant, dropout=0.0))
    if no_drop:
        check_differs(fails, f"{no_drop.label} vs {drop.label}", no_drop.losses(),
                      drop.losses(), "dropout must change the trajectory")
        off, on, margin = main.rows[0]["loss"], no_drop.rows[0]["loss"], shuffle_margin(case, s)
        print(f"step-1 loss: shuffle off {off!r}, on {on!r}; other batches are at least "
              f"{margin:.3g} lower", flush=True)
        fails.check(off - on >= margin / 2, f"{no_drop.label}: step-1 loss {on!r} is not "
                    f"clearly below {off!r} with --shuffle off: the first batch is unshuffled")
    frozen = launch(fails, lorad, case, s, wd, Variant(dropout=case.dropout, lr=0.0))
    if frozen:
        check_frozen(fails, case, s, frozen)
        period = repeat_period(case, s)
        losses = frozen.losses()
        check_differs(fails, f"{frozen.label}: steps 1.. vs {1 + period}..", losses,
                      losses[period:], "the same samples must get new masks at another step")
        frozen_seed = launch(fails, lorad, case, s, wd,
                             replace(frozen.variant, seed=case.ts.seed + 1))
        if frozen_seed:
            check_differs(fails, f"{frozen_seed.label} vs {frozen.label}", frozen_seed.losses(),
                          losses, "the seed must change the dropout masks")
    try:
        with open(os.path.join(drop.out, "adapter", "adapter_config.json")) as f:
            got = json.load(f).get("lora_dropout")
    except (OSError, ValueError) as e:
        fails.add(f"{drop.label}: cannot read adapter_config.json: {e}")
        return
    fails.check(isinstance(got, (int, float)) and abs(got - case.dropout) < 1e-6,
                f"{drop.label}: adapter_config.json lora_dropout = {got!r}, "
                f"expected {case.dropout}")


def refused(fails: Failures, lorad: str, args, words, what: str) -> None:
    """LORAD ARGS must exit 2 with one stderr line "lorad: ..." naming one of WORDS."""
    res = run_lorad(lorad, args)
    lines = res.stderr.strip().splitlines()
    ok = (res.returncode == 2 and len(lines) == 1 and lines[0].startswith("lorad: ")
          and any(w in lines[0] for w in words))
    if fails.check(ok, f"{what}: expected exit 2 and one line 'lorad: ...' naming one of {words}; "
                   f"got exit {res.returncode}, stderr {res.stderr.strip()[-800:]!r}"):
        print(f"ok: {what}: {lines[0]}", flush=True)


def check_patterns(fails: Failures, lorad: str, case: Case, s: Setup, wd: str) -> None:
    """What --rank-pattern / --alpha-pattern promise beyond the main run:
      - the init adapter (the patterns' ranks and scales) is refused, exit 2, by flags
        without either pattern, with one alpha changed, and with one rank changed whose
        scale stays the same (the ranks must match too);
      - overlapping keys: the FIRST matching key in the flags' order decides (ORDER_PATTERNS,
        its own init adapter, 3 steps against the reference, the export checked as the
        main run's)."""
    ts = case.ts
    variants = [
        ("without --rank-pattern and --alpha-pattern", dict(rank_pattern=(), alpha_pattern=())),
        ("without --alpha-pattern", dict(alpha_pattern=())),
        ("without --rank-pattern", dict(rank_pattern=())),
        ("with c_fc's alpha 4 instead of 3", dict(alpha_pattern=(("c_fc", 4), ("attn.c_proj", 5)))),
        ("with c_fc at rank 3 and alpha 1.5 (the same scale, another rank)",
         dict(rank_pattern=(("h.0.attn.c_attn", 2), ("c_fc", 3)),
              alpha_pattern=(("c_fc", 1.5), ("attn.c_proj", 5)))),
    ]
    init_name = os.path.basename(s.init_dir)
    for i, (what, over) in enumerate(variants):
        other = replace(case, ts=replace(ts, **over))
        assert any(abs(other.ts.module_scale(sp.module) - ts.module_scale(sp.module)) > 1e-9 or
                   other.ts.module_rank(sp.module) != ts.module_rank(sp.module) for sp in s.specs), \
            f"test defect: {what} changes no module"
        refused(fails, lorad, lorad_args(other, s, os.path.join(wd, f"out_refused{i}")),
                [init_name, "adapter_config.json", "adapter_model.safetensors"],
                f"--init-adapter with the patterns' ranks and scales, flags {what}")

    sub = os.path.join(wd, "order")
    os.makedirs(sub)
    oc = replace(case, ts=replace(ts, schedule="constant", warmup=0, **ORDER_PATTERNS),
                 module_table=ORDER_TABLE)
    so = prepare(oc, sub)
    check_module_table(oc.ts, ORDER_TABLE, so.specs, "transformer.")
    check_own_export(oc, so)
    ref = reference_train(oc.cfg, so.base, so.tokens, so.mask, oc.ts, so.init, so.specs)
    check_reference_sanity(replace(oc, module_table={}), so, ref)  # parameters move
    # the last match instead of the first: h.1's c_fc with alpha 7 (its rank, the shape,
    # would differ too for h.0's c_attn: 5 instead of 3)
    last = lambda m: lora_scale(7, 2, ts.rslora) if m.endswith("h.1.mlp.c_fc") else oc.ts.module_scale(m)  # noqa: E731
    check_patterns_matter(oc.cfg, so.base, so.tokens, so.mask, oc.ts, so.init, so.specs, ref,
                          wrong_scales={"the last matching --alpha-pattern key": last})
    run = launch(fails, lorad, oc, so, sub, label="overlapping pattern keys")
    if run is None:
        return
    check_metrics(fails, run.rows, ref, run.label)
    check_lora_output(fails, oc, so, ref, run.out)


def check_products(fails: Failures, lorad: str, case: Case, s: Setup, wd: str, ref, main_run: Run) -> None:
    """The other ways to run the products, on 2 threads:
      - --gemm openblas follows the reference as closely as the main run (oneDNN);
      - --base-dtype bf16 (frozen weights and the inputs of their products rounded to
        bf16, f32 accumulation) stays within TOL_BF16_LOSS of the reference's losses and
        TOL_BF16_GRAD of its gradient norms, and is not the f32 run (some loss differs)."""
    blas = launch(fails, lorad, case, s, wd, Variant(gemm="openblas", threads=2))
    if blas is not None:
        check_metrics(fails, blas.rows, ref, blas.label)
    bf16 = launch(fails, lorad, case, s, wd, Variant(base_dtype="bf16", threads=2))
    if bf16 is None:
        return
    worst = {"loss": 0.0, "grad_norm": 0.0}
    for st, row in enumerate(bf16.rows):
        for key, want, tol in (("loss", ref.losses[st], TOL_BF16_LOSS), ("grad_norm", ref.grad_norms[st], TOL_BF16_GRAD)):
            worst[key] = max(worst[key], rel_close(fails, row[key], want, tol, f"{bf16.label}: step {st + 1}: {key}"))
    print(f"{bf16.label}: worst rel err against the float64 reference: loss {worst['loss']:.3g}, "
          f"grad_norm {worst['grad_norm']:.3g}", flush=True)
    fails.check(any(a != b for a, b in zip(bf16.losses(), main_run.losses())),
                f"{bf16.label}: every loss equals the f32 run's: bf16 was not used")


def check_frozen(fails: Failures, case: Case, s: Setup, run: Run) -> None:
    """With --lr 0 the adapter written is the init adapter: the parameters never moved."""
    try:
        got = read_safetensors(trained_path(case, run))[0]
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"{run.label}: cannot read the adapter: {e}")
        return
    _, want = read_peft_dir(s.init_dir)
    fails.check(sorted(got) == sorted(want), f"{run.label}: adapter keys differ from the init's")
    for key in sorted(set(got) & set(want)):
        rel_close(fails, got[key], want[key], 1e-7, f"{run.label}: {key} against the init adapter")


def repeat_period(case: Case, s: Setup) -> int:
    """With --shuffle off, step s and step s + this use the same samples."""
    return n_samples(s.tokens, case.ts.seq) // case.ts.batch


# --------------------------------------------------------------------------------------

def run_case(case: Case, fails: Failures, lorad: str, wd: str) -> None:
    """CASE: the PyTorch reference trained in WD, then lorad's runs checked against it."""
    torch.set_num_threads(1)
    s = prepare(case, wd)
    check_own_export(case, s)
    ref = reference_train(case.cfg, s.base, s.tokens, s.mask, case.ts, s.init, s.specs,
                          val=s.val)
    check_reference_sanity(case, s, ref)
    print("reference losses: " + " ".join(f"{x:.6f}" for x in ref.losses), flush=True)
    print("reference grad norms: " + " ".join(f"{x:.4g}" for x in ref.grad_norms), flush=True)

    main_run = launch(fails, lorad, case, s, wd)
    if main_run is None:
        return
    check_metrics(fails, main_run.rows, ref, main_run.label)
    check_val(fails, case, main_run, ref)
    if case.ts.mode == "lora":
        check_lora_output(fails, case, s, ref, main_run.out)
    else:
        check_full_output(fails, case, s, ref, main_run.out)

    if case.module_table:
        check_patterns(fails, lorad, case, s, wd)
    if case.products:
        check_products(fails, lorad, case, s, wd, ref, main_run)

    # Micro-batch invariance: of the main run, or of the dropout runs in a dropout case.
    subject = main_run
    if case.dropout:
        subject = launch(fails, lorad, case, s, wd, Variant(dropout=case.dropout, shuffle=True))
    if subject is not None:
        if subject is not main_run:
            check_val(fails, case, subject, ref, follows_ref=False)
        for micro in case.micro_variants:
            other = launch(fails, lorad, case, s, wd, replace(subject.variant, micro=micro))
            if other:
                check_same_trajectory(fails, case, other, subject)
        if case.dropout:
            check_dropout(fails, lorad, case, s, wd, main_run, subject)


if __name__ == "__main__":
    run_driver("ref_gpt2", {name: partial(run_case, case) for name, case in CASES.items()})
