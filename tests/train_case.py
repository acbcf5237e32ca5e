"""train_case.py: one `lorad train` case against the PyTorch reference, for either model family.

check_gpt2.py and check_llama.py describe their cases (TrainCase) and their model family
(Family: the reference's forward, target resolution, PEFT export / import / merge, model
directories, the written config.json's check); run_train_case writes a tiny random model
directory, a token dataset and (LoRA) a PEFT init adapter with random A and non-zero
random B, trains the reference (torch_train.reference_train), checks that the case can
fail, runs lorad with the same settings and compares:

  - every metrics.jsonl step row: loss (rel 1e-4), grad_norm (rel 1e-3), lr (rel 1e-6);
    one row per step, val_loss only on the evaluation steps;
  - LoRA: every tensor of OUT/adapter/adapter_model.safetensors (norm-wise rel 1e-3),
    adapter_config.json's fields and each module's rank and scale as PEFT reads them,
    and the export's meaning: the adapter merged the PEFT way gives the reference model's
    logits (max abs diff < 1e-4 of the logits' scale);
  - full: every tensor of OUT/model (rel 1e-3), its config.json, and the logits of the
    written model;
  - val_samples: --val (its own loss_mask, a sample count that need not be a multiple of
    the micro-batch): val_loss on the evaluation steps and the "validation loss before
    training" on stderr against the reference (rel 1e-4);
  - micro_variants: lorad again with other micro-batch sizes: the same per-step losses
    (rel 1e-5) and trained tensors (rel 1e-4);
  - products: --gemm openblas follows the reference as the main run does; --base-dtype
    bf16 stays within 5e-3 of its losses and 5e-2 of its gradient norms, and is not the
    f32 run;
  - dropout: --dropout with --shuffle on, where the reference cannot follow, and what the
    contract promises instead: micro-batch sizes agree, a rerun is bit-identical, another
    --seed and --dropout 0 change the trajectory, shuffling changes the first batch
    (hardest_first data make any batch but the first clearly easier), and with the
    parameters frozen (--lr 0) the masks change with the step and the seed; the
    validation loss before training must not see dropout;
  - module_table: --rank-pattern / --alpha-pattern give each module its own rank and
    scale (checked against a table worked out by hand, and the reference with the wrong
    scales must miss the losses by 10x the tolerance); the adapter config's PEFT matching
    gives every module its rank and scale; the init adapter is refused (exit 2) by flags
    whose patterns do not give its ranks and scales; and with an OrderRun a second run
    with overlapping keys (its own init adapter) shows that the first matching key wins.

A lorad that rejects the architecture ends the case at once with one line saying so.
"""

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from harness import (PEFT_PREFIX, Failures, fmt_num, isolate_samples, lora_scale, n_samples,  # noqa: E402
                     one_line_error, peft_key_matches, peft_module_scale, peft_targeted, permute_samples,
                     random_adapters, random_mask, read_metrics, read_peft_dir, read_safetensors,
                     read_weights_dir, rel_err, run_lorad, sample_inputs, write_bin, write_h5, write_peft_dir)
from torch_train import (LogitsFn, TrainSpec, eval_steps, make_lora, reference_train,  # noqa: E402
                         sample_losses, to_torch, to_torch_pairs)

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
ARCH_REJECTED = "unsupported architecture"


@dataclass(frozen=True)
class Family:
    """A model family as the train-case body uses it: the pieces of its reference module."""
    logits: LogitsFn              # (cfg, W, idx, lora) -> logits [B, T, V]
    make_model: Callable          # (path, cfg, rng, dtype, **layout) -> the weights as stored
    resolve_targets: Callable     # (cfg, targets) -> the adapters lorad makes
    export_adapters: Callable     # (specs, params, targets, r, alpha, rslora, base_model,
                                  #  rank_pattern, alpha_pattern) -> (config, tensors)
    import_adapters: Callable     # (specs, tensors) -> params
    peft_merge: Callable          # (cfg, base, config, tensors) -> merged weights
    all_modules: Callable         # cfg -> (path, in, out) of every adaptable module
    check_config: Callable        # (fails, model dir, cfg): a written model's config.json
    module_prefix: str            # of every module path, left out of a module_table's keys
    stored_prefix: str            # a written model's tensor name: this + the reference's weight name
    fan_in_fan_out: bool          # the adapter_config.json value PEFT needs for the modules


@dataclass(frozen=True)
class OrderRun:
    """A second run of a patterns case, from its own init adapter: TrainSpec OVERRIDES whose
    --rank-pattern / --alpha-pattern keys overlap, so that only the FIRST matching key in
    the flags' order gives each module the (rank, alpha) of TABLE."""
    overrides: dict
    table: Dict[str, Tuple[int, float]]


# Flags under which an init adapter with the patterns' ranks and scales must be refused.
PATTERN_REFUSALS = (
    ("without --rank-pattern and --alpha-pattern", dict(rank_pattern=(), alpha_pattern=())),
    ("without --alpha-pattern", dict(alpha_pattern=())),
    ("without --rank-pattern", dict(rank_pattern=())),
)


@dataclass
class TrainCase:
    """One reference case: the model, its storage, the dataset and the training flags."""
    cfg: object                     # the family's config
    ts: TrainSpec
    seed: int
    dtype: str = "F32"              # storage dtype of the model's weights
    layout: dict = field(default_factory=dict)  # the family's make_model options
    data: str = "bin16"             # bin16 | bin32 | h5
    n_tokens: int = 0
    mask_zero_frac: float = 0.0     # h5 only: fraction of loss_mask zeros
    val_samples: int = 0            # h5 only: --val with this many samples (own loss_mask)
    val_from_train: bool = False    # the validation text is the training text's start
    micro_variants: Tuple[int, ...] = ()  # other micro-batch sizes that must agree
    clip_must_trigger: bool = False
    tensor_moves: float = 0.0       # full: each tensor moves by over this x TOL_PARAM
    products: bool = False          # also run OpenBLAS's products and bf16 frozen weights
    hardest_first: bool = False     # h5 only: isolated samples, highest initial loss first
    dropout: float = 0.0            # > 0: the dropout determinism checks at this rate
    # patterns: each adapted module (path without the family's module_prefix) -> its
    # (rank, alpha) as worked out by hand from the case's --rank-pattern / --alpha-pattern;
    # with it the pattern checks run (see check_patterns)
    module_table: Dict[str, Tuple[int, float]] = field(default_factory=dict)
    more_refusals: Tuple[Tuple[str, dict], ...] = ()  # beyond PATTERN_REFUSALS
    order: Optional[OrderRun] = None


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


def ref_lora(case: TrainCase, specs, params):
    """The reference's adapters for PARAMS at the case's per-module scales (None: none)."""
    return make_lora(specs, to_torch_pairs(params), case.ts.module_scale) if specs else None


def hardest_first(fam: Family, case: TrainCase, base, tokens, mask, specs, init):
    """Isolates the samples and reorders them by decreasing loss under the initial
    parameters, so that every batch but samples 0..G-1 has a clearly lower loss at step 1
    (check_reference_sanity measures how clearly). Returns tokens, mask and the samples'
    initial losses in the new order."""
    T = case.ts.seq
    mask = isolate_samples(mask, T)
    sums, counts = sample_losses(fam.logits, case.cfg, to_torch(base), tokens, mask, T,
                                 n_samples(tokens, T), ref_lora(case, specs, init))
    assert np.all(counts == counts[0]), "test defect: samples count unequal targets"
    order = np.argsort(-sums / counts, kind="stable")
    tokens, mask = permute_samples(tokens, mask, T, order.tolist())
    return tokens, mask, (sums / counts)[order]


def write_tokens(case: TrainCase, path_stem: str, tokens, mask) -> str:
    if case.data == "h5":
        write_h5(path_stem + ".h5", tokens, mask, tokens_dtype="int32")
        return path_stem + ".h5"
    write_bin(path_stem + ".bin", tokens, u32=case.data == "bin32")
    return path_stem + ".bin"


def prepare(fam: Family, case: TrainCase, wd: str) -> Setup:
    rng = np.random.default_rng(case.seed)
    cfg, ts = case.cfg, case.ts
    model_dir = os.path.join(wd, "model")
    base = fam.make_model(model_dir, cfg, rng, case.dtype, **case.layout)
    tokens = rng.integers(0, cfg.vocab_size, case.n_tokens)
    mask = random_mask(rng, case.n_tokens, case.mask_zero_frac) if case.data == "h5" else None

    specs, init, init_dir = [], None, None
    if ts.mode == "lora":
        specs = fam.resolve_targets(cfg, list(ts.targets))
        assert specs, "test defect: the targets match no module"
        params = random_adapters(specs, ts.module_rank, ts.module_scale, rng)
        config, tensors = fam.export_adapters(specs, params, list(ts.targets), ts.rank, ts.alpha, ts.rslora,
                                              model_dir, ts.rank_pattern, ts.alpha_pattern)
        init_dir = os.path.join(wd, "init_adapter")
        write_peft_dir(init_dir, config, tensors, "F32")
        init = fam.import_adapters(specs, read_peft_dir(init_dir)[1])

    init_losses = None
    if case.hardest_first:
        tokens, mask, init_losses = hardest_first(fam, case, base, tokens, mask, specs, init)
    data_path = write_tokens(case, os.path.join(wd, "train"), tokens, mask)
    val_path, val = None, None
    if case.val_samples:
        n = case.val_samples * ts.seq + 1 + 5  # a tail too short for another sample
        # the training text follows training closely; random text is another distribution
        text = tokens[:n].copy() if case.val_from_train else rng.integers(0, cfg.vocab_size, n)
        val = (text, random_mask(rng, n, case.mask_zero_frac))
        val_path = write_tokens(case, os.path.join(wd, "val"), *val)
    return Setup(model_dir, data_path, init_dir, base, tokens, mask, specs, init,
                 val_path, val, init_losses)


def logit_inputs(case: TrainCase, s: Setup) -> torch.Tensor:
    """A batch of inputs for logits comparisons: the first two samples."""
    return torch.tensor(sample_inputs(s.tokens, case.ts.seq, 2))


def check_own_export(fam: Family, case: TrainCase, s: Setup) -> None:
    """Our own machinery must agree with itself before lorad is judged by it: the init
    adapter, merged the PEFT way, equals the unmerged model with lorad's adapters."""
    if s.init_dir is None:
        return
    config, tensors = read_peft_dir(s.init_dir)
    idx = logit_inputs(case, s)
    with torch.no_grad():
        merged = fam.logits(case.cfg, to_torch(fam.peft_merge(case.cfg, s.base, config, tensors)), idx)
        unmerged = fam.logits(case.cfg, to_torch(s.base), idx, ref_lora(case, s.specs, s.init))
    err = (merged - unmerged).abs().max().item()
    assert err < 1e-9, f"test defect: own PEFT export/merge disagree by {err}"


def train_reference(fam: Family, case: TrainCase, s: Setup):
    return reference_train(fam.logits, case.cfg, s.base, s.tokens, s.mask, case.ts, s.init, s.specs, val=s.val)


def check_reference_sanity(fam: Family, case: TrainCase, s: Setup, ref) -> None:
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
        check_full_moves(case, s.base, ref.params)
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
        check_module_table(case.ts, case.module_table, s.specs, fam.module_prefix)
        check_patterns_matter(fam, case, s, ref)


def check_full_moves(case: TrainCase, base: dict, trained: dict) -> None:
    """Full mode: the model as a whole moves by over 10x TOL_PARAM, and each tensor by
    over the case's tensor_moves x TOL_PARAM (a tensor lorad left untrained is then off
    by that much)."""
    delta = math.sqrt(sum(float(((trained[k] - base[k]) ** 2).sum()) for k in base))
    total = math.sqrt(sum(float((base[k] ** 2).sum()) for k in base))
    assert delta / total > 10 * TOL_PARAM, f"test defect: model moves only {delta / total:.3g}"
    for k in base:
        move = rel_err(trained[k], base[k])
        assert move > case.tensor_moves * TOL_PARAM, f"test defect: {k} moves only {move:.3g}"


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


def last_alpha_scale(ts: TrainSpec) -> Callable[[str], float]:
    """The scales of a lorad that let the LAST matching --alpha-pattern key win."""
    def scale(module: str) -> float:
        alphas = [v for k, v in ts.alpha_pattern if peft_key_matches(module, k)]
        return lora_scale(alphas[-1] if alphas else ts.alpha, ts.module_rank(module), ts.rslora)
    return scale


def check_patterns_matter(fam: Family, case: TrainCase, s: Setup, ref, wrong_scales=None) -> None:
    """A lorad that gave the adapters (with the patterns' ranks) other scales must fail
    the loss check clearly: every module at --rank/--alpha's scale, --alpha-pattern
    ignored, --rank-pattern left out of the scale, and WRONG_SCALES (name -> function of
    the module path). Each trajectory departs from the reference by over 10x TOL_LOSS."""
    ts = case.ts
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
        if all(abs(scale_of(sp.module) - ts.module_scale(sp.module)) < 1e-12 for sp in s.specs):
            raise AssertionError(f"test defect: '{what}' gives every module its right scale")
        other = reference_train(fam.logits, case.cfg, s.base, s.tokens, s.mask, alt, s.init, s.specs)
        diff = max(rel_err(a, b) for a, b in zip(other.losses, ref.losses))
        print(f"sanity: {what} would change the losses by {diff:.3g} (relative)", flush=True)
        assert diff > 10 * TOL_LOSS, f"test defect: '{what}' is within 10x the loss tolerance"


def shuffle_margin(case: TrainCase, s: Setup) -> float:
    """hardest_first data: every batch of G samples but 0..G-1 has an initial loss at least
    this much lower (swapping sample G-1 for sample G is the smallest change)."""
    G = case.ts.batch
    return float(s.init_losses[G - 1] - s.init_losses[G]) / G


def repeat_period(case: TrainCase, s: Setup) -> int:
    """With --shuffle off, step s and step s + this use the same samples."""
    return n_samples(s.tokens, case.ts.seq) // case.ts.batch


# --------------------------------------------------------------------------------------
# Running lorad
# --------------------------------------------------------------------------------------

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


def lorad_args(ts: TrainSpec, s: Setup, out: str, v: Variant = Variant()):
    """The full `lorad train` command line of flags TS on inputs S: every numeric flag explicit."""
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


def lorad_ok(fails: Failures, p, what: str) -> bool:
    """True when lorad succeeded. Its refusal of the architecture ends the case at once
    with one clear line; any other failure is reported and the case goes on."""
    if p.returncode == 0:
        return True
    err = p.stderr.strip() if isinstance(p.stderr, str) else p.stderr.decode(errors="replace").strip()
    if ARCH_REJECTED in err:
        fails.abort(f"{what}: lorad rejects the architecture: {err.splitlines()[-1]}")
    fails.add(f"{what}: lorad exited with {p.returncode}; stderr: {err[-2000:]}")
    return False


@dataclass
class Trial:
    """A case under way: its family, its case and inputs, lorad, and where its runs go."""
    fam: Family
    case: TrainCase
    s: Setup
    fails: Failures
    lorad: str
    wd: str


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


def launch(t: Trial, v: Variant = Variant(), label: Optional[str] = None) -> Optional[Run]:
    """Runs lorad with variant V into its own directory under the trial's; None (reported)
    when it fails or its metrics are unusable."""
    label = label or v.label()
    out = os.path.join(t.wd, "out_" + re.sub(r"[^A-Za-z0-9.]+", "_", label))
    res = run_lorad(t.lorad, lorad_args(t.case.ts, t.s, out, v))
    if not lorad_ok(t.fails, res, label):
        return None
    rows = step_rows(t.fails, out, t.case.ts.steps, label)
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


def refused(fails: Failures, lorad: str, args, words, what: str) -> None:
    """LORAD ARGS must exit 2 with one stderr line "lorad: ..." naming one of WORDS."""
    res = run_lorad(lorad, args)
    if one_line_error(fails, res, words, what, any_word=True):
        print(f"ok: {what}: {res.stderr.strip()}", flush=True)


# --------------------------------------------------------------------------------------
# Checks of lorad's output
# --------------------------------------------------------------------------------------

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


def check_val(fails: Failures, case: TrainCase, run: Run, ref, follows_ref=True) -> None:
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


def check_adapter_config(t: Trial, config: dict, modules) -> None:
    """adapter_config.json: PEFT's fields and, per module, the rank and scale PEFT's
    matching gives (a sliced c_attn: n times its slices' rank, their scale)."""
    fails, ts, specs = t.fails, t.case.ts, t.s.specs
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none",
            "fan_in_fan_out": t.fam.fan_in_fan_out, "use_rslora": ts.rslora}
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
    if not any(sp.slice for sp in specs):  # sliced targets export their c_attn at n times the rank
        fails.check(config["r"] == ts.rank and isinstance(config["lora_alpha"], (int, float))
                    and abs(config["lora_alpha"] - ts.alpha) < 1e-9,
                    f"adapter_config.json: r/lora_alpha = {config['r']!r}/{config['lora_alpha']!r},"
                    f" expected {ts.rank}/{ts.alpha}")
    targeted = sorted(peft_targeted(config, [m for m, _, _ in t.fam.all_modules(t.case.cfg)]))
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


def check_lora_output(t: Trial, ref, out: str) -> None:
    fails, fam, case, s, ts = t.fails, t.fam, t.case, t.s, t.case.ts
    adir = os.path.join(out, "adapter")
    try:
        config, got = read_peft_dir(adir)
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"cannot read lorad's adapter {adir}: {e}")
        return
    _, want = fam.export_adapters(s.specs, ref.params, list(ts.targets), ts.rank, ts.alpha, ts.rslora, "",
                                  ts.rank_pattern, ts.alpha_pattern)
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
    modules = sorted({k[len(PEFT_PREFIX):-len(".lora_A.weight")]
                      for k in got if k.endswith(".lora_A.weight")})
    check_adapter_config(t, config, modules)
    # The export's meaning: PEFT-merged lorad adapter vs the reference's own adapters.
    idx = logit_inputs(case, s)
    with torch.no_grad():
        want_logits = fam.logits(case.cfg, to_torch(s.base), idx, ref_lora(case, s.specs, ref.params))
        try:
            merged = fam.peft_merge(case.cfg, s.base, config, got)
        except (ValueError, KeyError, TypeError) as e:
            fails.add(f"PEFT cannot apply lorad's adapter: {e}")
            return
        check_logits(fails, fam.logits(case.cfg, to_torch(merged), idx), want_logits,
                     "PEFT-merged lorad adapter")


def check_logits(fails: Failures, got, want, label: str) -> None:
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    print(f"{label}: max logit diff {diff:.3g} (scale {scale:.3g})", flush=True)
    fails.check(diff <= TOL_LOGITS * scale,
                f"{label}: logits differ by {diff:.3g} > {TOL_LOGITS:g} * {scale:.3g}")


def check_full_output(t: Trial, ref, out: str) -> None:
    fails, fam, case = t.fails, t.fam, t.case
    mdir = os.path.join(out, "model")
    try:
        got, dtypes, _ = read_weights_dir(mdir)
        fam.check_config(fails, mdir, case.cfg)
    except (OSError, ValueError, KeyError, TypeError) as e:
        fails.add(f"cannot read lorad's model {mdir}: {e}")
        return
    want = {fam.stored_prefix + k: v for k, v in ref.params.items()}
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
        idx = logit_inputs(case, t.s)
        written = {k[len(fam.stored_prefix):]: v for k, v in got.items()}
        with torch.no_grad():
            check_logits(fails, fam.logits(case.cfg, to_torch(written), idx),
                         fam.logits(case.cfg, to_torch(ref.params), idx), "written model")


def trained_path(case: TrainCase, run: Run) -> str:
    if case.ts.mode == "lora":
        return os.path.join(run.out, "adapter", "adapter_model.safetensors")
    return os.path.join(run.out, "model", "model.safetensors")


# --------------------------------------------------------------------------------------
# Runs against runs
# --------------------------------------------------------------------------------------

def check_same_trajectory(t: Trial, run: Run, base: Run) -> None:
    """RUN (another micro-batch size) against BASE: the losses and validation losses of
    every step and the trained tensors."""
    fails = t.fails
    worst = 0.0
    for a, b in zip(run.rows, base.rows):
        for key in ("loss", "val_loss"):
            if isinstance(a.get(key), (int, float)) and isinstance(b.get(key), (int, float)):
                worst = max(worst, rel_close(fails, a[key], b[key], TOL_MICRO,
                                             f"{run.label}: step {a['step']}: {key} against "
                                             f"{base.label}"))
    try:
        got, want = (read_safetensors(trained_path(t.case, r))[0] for r in (run, base))
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


def check_rerun(t: Trial, run: Run, base: Run) -> None:
    """A rerun with identical flags: identical metrics (but timings) and output files."""
    fails = t.fails
    for a, b in zip(run.rows, base.rows):
        same_a, same_b = ({k: r.get(k) for k in EXACT_KEYS} for r in (a, b))
        if not fails.check(same_a == same_b, f"{run.label}: step {a['step']}: metrics "
                           f"{same_a} differ from {same_b}"):
            break
    dirs = [os.path.dirname(trained_path(t.case, r)) for r in (base, run)]
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


def check_frozen(t: Trial, run: Run) -> None:
    """With --lr 0 the adapter written is the init adapter: the parameters never moved."""
    try:
        got = read_safetensors(trained_path(t.case, run))[0]
    except (OSError, ValueError, KeyError) as e:
        t.fails.add(f"{run.label}: cannot read the adapter: {e}")
        return
    _, want = read_peft_dir(t.s.init_dir)
    t.fails.check(sorted(got) == sorted(want), f"{run.label}: adapter keys differ from the init's")
    for key in sorted(set(got) & set(want)):
        rel_close(t.fails, got[key], want[key], 1e-7, f"{run.label}: {key} against the init adapter")


def check_dropout(t: Trial, main: Run, drop: Run) -> None:
    """What the contract promises for --dropout and --shuffle on, where the reference
    cannot follow: DROP (dropout and shuffle on) is reproducible and depends on the seed
    and the rate; shuffling changes the first batch (MAIN has shuffle off, no dropout);
    with frozen parameters (--lr 0, shuffle off) the masks change with the step and the
    seed."""
    fails, case = t.fails, t.case
    rerun = launch(t, drop.variant, "rerun of " + drop.label)
    if rerun:
        check_rerun(t, rerun, drop)
    other_seed = launch(t, replace(drop.variant, seed=case.ts.seed + 1))
    if other_seed:
        check_differs(fails, f"{other_seed.label} vs {drop.label}", other_seed.losses(),
                      drop.losses(), "the seed keys the dropout masks and the order")
    no_drop = launch(t, replace(drop.variant, dropout=0.0))
    if no_drop:
        check_differs(fails, f"{no_drop.label} vs {drop.label}", no_drop.losses(),
                      drop.losses(), "dropout must change the trajectory")
        off, on, margin = main.rows[0]["loss"], no_drop.rows[0]["loss"], shuffle_margin(case, t.s)
        print(f"step-1 loss: shuffle off {off!r}, on {on!r}; other batches are at least "
              f"{margin:.3g} lower", flush=True)
        fails.check(off - on >= margin / 2, f"{no_drop.label}: step-1 loss {on!r} is not "
                    f"clearly below {off!r} with --shuffle off: the first batch is unshuffled")
    frozen = launch(t, Variant(dropout=case.dropout, lr=0.0))
    if frozen:
        check_frozen(t, frozen)
        period = repeat_period(case, t.s)
        losses = frozen.losses()
        check_differs(fails, f"{frozen.label}: steps 1.. vs {1 + period}..", losses,
                      losses[period:], "the same samples must get new masks at another step")
        frozen_seed = launch(t, replace(frozen.variant, seed=case.ts.seed + 1))
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


def check_patterns(t: Trial) -> None:
    """What --rank-pattern / --alpha-pattern promise beyond the main run:
      - the init adapter (the patterns' ranks and scales) is refused, exit 2, by flags
        without either pattern and by the case's more_refusals (one alpha changed, one
        rank changed whose scale stays the same: the ranks must match too);
      - with an OrderRun, overlapping keys: the FIRST matching key in the flags' order
        decides (its own init adapter, against the reference, the export checked as the
        main run's)."""
    case, s = t.case, t.s
    init_name = os.path.basename(s.init_dir)
    for i, (what, over) in enumerate(PATTERN_REFUSALS + case.more_refusals):
        other = replace(case.ts, **over)
        assert any(abs(other.module_scale(sp.module) - case.ts.module_scale(sp.module)) > 1e-9 or
                   other.module_rank(sp.module) != case.ts.module_rank(sp.module) for sp in s.specs), \
            f"test defect: {what} changes no module"
        refused(t.fails, t.lorad, lorad_args(other, s, os.path.join(t.wd, f"out_refused{i}")),
                [init_name, "adapter_config.json", "adapter_model.safetensors"],
                f"--init-adapter with the patterns' ranks and scales, flags {what}")
    if case.order is None:
        return
    sub = os.path.join(t.wd, "order")
    os.makedirs(sub)
    oc = replace(case, ts=replace(case.ts, **case.order.overrides), module_table=case.order.table,
                 more_refusals=(), order=None)
    so = prepare(t.fam, oc, sub)
    check_module_table(oc.ts, oc.module_table, so.specs, t.fam.module_prefix)
    check_own_export(t.fam, oc, so)
    ref = train_reference(t.fam, oc, so)
    check_reference_sanity(t.fam, replace(oc, module_table={}), so, ref)  # parameters move
    # the last match instead of the first (for the alphas: for the ranks, the shapes
    # would differ too)
    check_patterns_matter(t.fam, oc, so, ref,
                          wrong_scales={"the last matching --alpha-pattern key": last_alpha_scale(oc.ts)})
    ot = replace(t, case=oc, s=so, wd=sub)
    run = launch(ot, label="overlapping pattern keys")
    if run is None:
        return
    check_metrics(t.fails, run.rows, ref, run.label)
    check_lora_output(ot, ref, run.out)


def check_products(t: Trial, ref, main_run: Run) -> None:
    """The other ways to run the products, on 2 threads:
      - --gemm openblas follows the reference as closely as the main run (oneDNN);
      - --base-dtype bf16 (frozen weights and the inputs of their products rounded to
        bf16, f32 accumulation) stays within TOL_BF16_LOSS of the reference's losses and
        TOL_BF16_GRAD of its gradient norms, and is not the f32 run (some loss differs)."""
    fails = t.fails
    blas = launch(t, Variant(gemm="openblas", threads=2))
    if blas is not None:
        check_metrics(fails, blas.rows, ref, blas.label)
    bf16 = launch(t, Variant(base_dtype="bf16", threads=2))
    if bf16 is None:
        return
    worst = {"loss": 0.0, "grad_norm": 0.0}
    for st, row in enumerate(bf16.rows):
        for key, want, tol in (("loss", ref.losses[st], TOL_BF16_LOSS),
                               ("grad_norm", ref.grad_norms[st], TOL_BF16_GRAD)):
            worst[key] = max(worst[key], rel_close(fails, row[key], want, tol, f"{bf16.label}: step {st + 1}: {key}"))
    print(f"{bf16.label}: worst rel err against the float64 reference: loss {worst['loss']:.3g}, "
          f"grad_norm {worst['grad_norm']:.3g}", flush=True)
    fails.check(any(a != b for a, b in zip(bf16.losses(), main_run.losses())),
                f"{bf16.label}: every loss equals the f32 run's: bf16 was not used")


# --------------------------------------------------------------------------------------

def run_train_case(fam: Family, case: TrainCase, fails: Failures, lorad: str, wd: str) -> None:
    """CASE: the PyTorch reference trained in WD, then lorad's runs checked against it."""
    torch.set_num_threads(1)
    s = prepare(fam, case, wd)
    check_own_export(fam, case, s)
    ref = train_reference(fam, case, s)
    check_reference_sanity(fam, case, s, ref)
    print("reference losses: " + " ".join(f"{x:.6f}" for x in ref.losses), flush=True)
    print("reference grad norms: " + " ".join(f"{x:.4g}" for x in ref.grad_norms), flush=True)

    t = Trial(fam, case, s, fails, lorad, wd)
    main_run = launch(t)
    if main_run is None:
        return
    check_metrics(fails, main_run.rows, ref, main_run.label)
    check_val(fails, case, main_run, ref)
    if case.ts.mode == "lora":
        check_lora_output(t, ref, main_run.out)
    else:
        check_full_output(t, ref, main_run.out)

    if case.module_table:
        check_patterns(t)
    if case.products:
        check_products(t, ref, main_run)

    # Micro-batch invariance: of the main run, or of the dropout runs in a dropout case.
    subject = main_run
    if case.dropout:
        subject = launch(t, Variant(dropout=case.dropout, shuffle=True))
    if subject is not None:
        if subject is not main_run:
            check_val(fails, case, subject, ref, follows_ref=False)
        for micro in case.micro_variants:
            other = launch(t, replace(subject.variant, micro=micro))
            if other:
                check_same_trajectory(t, other, subject)
        if case.dropout:
            check_dropout(t, main_run, subject)
