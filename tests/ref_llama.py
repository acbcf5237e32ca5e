"""ref_llama.py: lorad on the Llama family (Llama, Mistral, Qwen2) against the PyTorch
float64 reference of llama_ref.py.

Each case (--case) writes a tiny random model directory as transformers would, runs the
reference, checks that the case can fail (the features it is about change the logits by
at least 10x the tolerance), then runs lorad:

  logits_*        `lorad eval --json` (loss rel 1e-5, token and sample counts) and
                  `lorad eval --logits PATH` (raw float32 (n, T, V) of samples 0..n-1; max
                  |diff| <= 1e-4 * max |logit|). logits_gqa: NH 4 / NKV 2, untied, f32, and
                  --max-batches limiting the file; logits_tied_bf16: tied head, bf16;
                  logits_qwen2: q/k/v biases, one key/value head, f16; logits_llama3_rope:
                  rope_scaling llama3 (factor 8, original 16, seq 32, theta 500000, head_dim
                  32 != hidden/heads) with all three frequency bands; logits_sharded: Mistral
                  with rope_parameters, three shards and model.safetensors.index.json
  train_*         `lorad train` for 10 steps against gpt2_ref.reference_train on this model,
                  checked as ref_gpt2.py checks GPT-2: every metrics row (loss 1e-4, grad_norm
                  1e-3, lr 1e-6), val_loss, the trained tensors (1e-3 norm-wise), the adapter
                  config and the export's meaning (the adapter merged the PEFT way gives the
                  reference's logits). train_lora: q_proj,v_proj,down_proj from a non-zero-B
                  init adapter, h5 with a loss mask, --val; train_all_linear_rslora: Mistral,
                  all-linear, rsLoRA, micro-batch 1 (and 2 and 4 must agree), clipping;
                  train_full: Qwen2 (biases), untied, --mode full, --eps 1e-6, OUT/model/;
                  train_patterns: --rank-pattern v_proj=2 --alpha-pattern
                  layers.1.self_attn.q_proj=12 (per-module ranks and scales, each module's
                  rank and scale by PEFT's matching of the exported config, the init adapter
                  refused by flags without the patterns)
  merge_generate  (untied Llama, vocab 260) lorad trains an adapter on q,k,o,gate,up for 4
                  steps, `lorad merge` writes W0 + s*B@A (1e-6 per tensor,
                  same names, config.json copied); eval of the merged dir equals eval with
                  --adapter (loss and logits, 1e-6) and the reference; greedy `lorad generate
                  --ids --temperature 0 --max-new 10` on the merged dir (and base + --adapter)
                  equals the reference's argmax continuation

A lorad without the Llama family fails every case at its first lorad run with one line
saying it rejects the architecture; any other failure is a real one. Exits 0 on
pass, 1 with one line per difference otherwise. A missing lorad binary fails.
Usage: ref_llama.py --lorad PATH --case CASE --workdir DIR
"""

import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Dict, List, Optional, Tuple

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gpt2_ref as g  # noqa: E402
import llama_ref as L  # noqa: E402
from gpt2_ref import Failures, TrainSpec, rel_err, run_lorad  # noqa: E402
from infer import gen, gen_ids, parse_eval  # noqa: E402
from llama_ref import LlamaConfig, llama3_scaling, llama_logits  # noqa: E402
from ref_gpt2 import (MIN_MOVE, TOL_LOGITS, TOL_PARAM, TOL_VAL, Run, Variant,  # noqa: E402
                      check_logits, check_metrics, check_module_table, check_patterns_matter, check_products,
                      check_same_trajectory, check_val, lorad_args, random_mask, refused,
                      rel_close, step_rows)

TOL_EVAL_LOSS = 1e-5  # eval's loss against the reference
TOL_SAME = 1e-6       # merged dir against base + --adapter; the merge against W0 + s*B@A
CAN_FAIL = 10.0       # a sanity perturbation must move the logits by this times the tolerance
MARGIN_MIN = 1e-3     # a top-1/top-2 gap below this could flip under float32 rounding
ARCH_REJECTED = "unsupported architecture"


@dataclass
class Case:
    kind: str                        # logits | train | merge_generate
    cfg: LlamaConfig
    seed: int
    dtype: str = "F32"               # storage dtype of the model's weights
    shards: int = 1
    seq: int = 16
    n_samples: int = 5               # logits / merge_generate: samples in the data
    batch: int = 2                   # eval --batch
    max_batches: int = 0             # logits: also eval --max-batches this
    perturb: Tuple[str, ...] = ()    # logits: sanity perturbations (see PERTURBATIONS)
    ts: Optional[TrainSpec] = None   # train / merge_generate: lorad train's flags
    data: str = "bin16"              # bin16 | bin32 | h5
    n_tokens: int = 0                # train: tokens in the training data
    mask_zero_frac: float = 0.0      # h5: fraction of loss_mask zeros
    val_samples: int = 0             # h5: --val with this many samples
    micro_variants: Tuple[int, ...] = ()
    products: bool = False           # also OpenBLAS's products and bf16 frozen weights
    clip_must_trigger: bool = False
    prompt: str = ""                 # merge_generate
    # train with patterns: each adapted module (path without "model.") -> its (rank, alpha)
    # worked out by hand from --rank-pattern / --alpha-pattern
    module_table: Dict[str, Tuple[int, float]] = field(default_factory=dict)


def _cfg(model_type="llama", vocab=97, C=32, F=64, layers=2, nh=4, nkv=2, **kw) -> LlamaConfig:
    return LlamaConfig(model_type, vocab, C, F, layers, nh, nkv, **kw)


CASES = {
    "logits_gqa": Case(
        "logits", _cfg(rope_theta=20000.0), seed=11, max_batches=1,
        perturb=("theta", "gqa_interleaved", "rope_interleaved")),
    "logits_tied_bf16": Case(
        "logits", _cfg(vocab=300, nkv=4, rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=5000.0),
        seed=12, dtype="BF16", data="bin32", perturb=("theta", "rope_interleaved")),
    "logits_qwen2": Case(
        "logits", _cfg("qwen2", vocab=89, C=48, F=96, nh=4, nkv=1, head_dim=12, rms_norm_eps=1e-6,
                       rope_theta=1000000.0), seed=13, dtype="F16", perturb=("no_bias", "rope_interleaved")),
    # inv_freq = 500000^(-i/16): wavelength 6.3 < 16/2 (kept), 14.3 in [8, 16] (smoothed),
    # the rest > 16 (divided by 8); positions run to 31, past the original 16.
    "logits_llama3_rope": Case(
        "logits", _cfg(vocab=101, C=48, F=80, nh=4, nkv=2, head_dim=32, rope_theta=500000.0,
                       rope_scaling=llama3_scaling(8, 1, 2, 16), max_position_embeddings=128),
        seed=14, seq=32, n_samples=3,
        perturb=("no_scaling", "linear_scaling", "medium_unscaled", "medium_divided", "gqa_interleaved")),
    "logits_sharded": Case(
        "logits", _cfg("mistral", vocab=83, rope_theta=2000.0, rope_form="parameters", sliding_window=4096),
        seed=15, shards=3, n_samples=4, batch=3, perturb=("theta",)),
    "train_lora": Case(
        "train", _cfg(vocab=79),
        seed=21, ts=TrainSpec(targets=("q_proj", "v_proj", "down_proj"), rank=4, alpha=8, batch=4,
                              micro_batch=2, seq=16, lr=1e-2, schedule="constant", warmup=2,
                              weight_decay=0.01, clip=1.0, eval_every=5),
        data="h5", n_tokens=8 * 16 + 1 + 3, mask_zero_frac=0.3, val_samples=5),
    "train_all_linear_rslora": Case(
        "train", _cfg("mistral", vocab=71, sliding_window=None, rope_theta=10000.0),
        seed=22, ts=TrainSpec(targets=("all-linear",), rank=2, alpha=4, rslora=True, batch=4,
                              micro_batch=1, seq=16, lr=1e-2, schedule="cosine", warmup=3,
                              weight_decay=0.05, clip=0.05),
        data="bin32", n_tokens=300, micro_variants=(2, 4), clip_must_trigger=True, products=True),
    # --rank-pattern v_proj=2 and --alpha-pattern on layer 1's q_proj only (a key that is a
    # dotted suffix of model.layers.1.self_attn.q_proj): scales 2 (q_proj of layer 0,
    # down_proj), 3 (q_proj of layer 1) and 4 (v_proj, rank 2).
    "train_patterns": Case(
        "train", _cfg(vocab=73, rope_theta=10000.0),
        seed=24, ts=TrainSpec(targets=("q_proj", "v_proj", "down_proj"), rank=4, alpha=8,
                              rank_pattern=(("v_proj", 2),),
                              alpha_pattern=(("layers.1.self_attn.q_proj", 12),), batch=4,
                              micro_batch=2, seq=16, lr=1e-2, schedule="linear", warmup=2,
                              weight_decay=0.01, clip=1.0, eval_every=5),
        data="h5", n_tokens=8 * 16 + 1 + 3, mask_zero_frac=0.3, val_samples=5,
        module_table={"layers.0.self_attn.q_proj": (4, 8), "layers.1.self_attn.q_proj": (4, 12),
                      "layers.0.self_attn.v_proj": (2, 8), "layers.1.self_attn.v_proj": (2, 8),
                      "layers.0.mlp.down_proj": (4, 8), "layers.1.mlp.down_proj": (4, 8)}),
    # eps 1e-6 as ref_gpt2's full case: AdamW's update of a tensor whose gradient is float32
    # noise is noise / (noise + eps); a larger eps keeps it far below the tolerance.
    "train_full": Case(
        "train", _cfg("qwen2", vocab=67, nkv=2, rms_norm_eps=1e-6, rope_theta=10000.0),
        seed=23, ts=TrainSpec(mode="full", rank=4, alpha=8, batch=3, micro_batch=1, seq=16, lr=3e-3,
                              schedule="linear", warmup=2, weight_decay=0.1, clip=1.0, eps=1e-6),
        data="bin16", n_tokens=250),
    "merge_generate": Case(
        "merge_generate", _cfg(vocab=260, rope_theta=10000.0),  # untied: a varied continuation
        seed=31, n_samples=6, batch=4,
        ts=TrainSpec(targets=("q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"), rank=4, alpha=8,
                     steps=4, batch=2, micro_batch=2, seq=16, lr=2e-2, schedule="constant", clip=1.0),
        prompt="Llama says: "),
}


# --------------------------------------------------------------------------------------
# Running lorad
# --------------------------------------------------------------------------------------

def lorad_ok(fails: Failures, p, what: str) -> bool:
    """True when lorad succeeded. Its refusal of the architecture (what every case meets
    until the Llama family is implemented) ends the case at once with one clear line;
    any other failure is reported and the case goes on."""
    if p.returncode == 0:
        return True
    err = p.stderr.strip() if isinstance(p.stderr, str) else p.stderr.decode(errors="replace").strip()
    if ARCH_REJECTED in err:
        fails.abort(f"{what}: lorad rejects the architecture, so the Llama family is not "
                    f"implemented yet: {err.splitlines()[-1]}")
    fails.add(f"{what}: lorad exited with {p.returncode}; stderr: {err[-2000:]}")
    return False


def eval_args(model: str, data: str, case: Case, adapter=None, extra=()) -> list:
    return (["eval", "--model", model, "--data", data, "--batch", case.batch, "--seq", case.seq,
             "--threads", 1, "--json"] + (["--adapter", adapter] if adapter else []) + list(extra))


def run_eval(fails, lorad, case, model, data, what, adapter=None, logits=None, extra=()):
    """`lorad eval --json` (with --logits PATH when LOGITS): the parsed JSON or None."""
    args = eval_args(model, data, case, adapter, (["--logits", logits] if logits else []) + list(extra))
    p = run_lorad(lorad, args)
    if not lorad_ok(fails, p, what):
        return None
    return parse_eval(fails, p, what)


def read_logits(fails, path, n, T, V, what):
    try:
        return L.read_logits_file(path, n, T, V)
    except (OSError, ValueError) as e:
        fails.add(f"{what}: {e}")
        return None


def write_tokens(case: Case, stem: str, tokens, mask=None) -> str:
    if case.data == "h5":
        g.write_h5(stem + ".h5", tokens, mask)
        return stem + ".h5"
    g.write_bin(stem + ".bin", tokens, u32=case.data == "bin32")
    return stem + ".bin"


def make_model(case: Case, rng, path: str):
    """Writes the case's model directory; returns the weights as stored (float64)."""
    L.write_model_dir(path, case.cfg, L.random_llama_weights(case.cfg, rng), case.dtype, case.shards)
    cfg_back, base = L.read_model_dir(path)
    assert cfg_back == case.cfg and set(base) == set(L.param_shapes(case.cfg)), "test defect: model dir"
    return base


# --------------------------------------------------------------------------------------
# Sanity perturbations: what a wrong implementation of a feature would compute
# --------------------------------------------------------------------------------------

def _permute_head_rows(cfg, W, names, perm_of_head):
    """W with the rows of each head of NAMES (q/k/v projections and biases) permuted."""
    W = dict(W)
    for name in names:
        for i in range(cfg.num_hidden_layers):
            for suffix in (".weight", ".bias"):
                key = L.module_path(i, name) + suffix
                if key in W:
                    t = W[key]
                    heads = t.shape[0] // cfg.hd
                    W[key] = t.reshape(heads, cfg.hd, *t.shape[1:])[:, perm_of_head].reshape(t.shape)
    return W


def _logits_with(cfg, W, idx, inv=None):
    with torch.no_grad():
        return llama_logits(cfg, g.to_torch(W), idx, None, inv).numpy()


def perturbed_logits(name: str, cfg: LlamaConfig, W: dict, idx) -> np.ndarray:
    hd, NH, NKV = cfg.hd, cfg.num_attention_heads, cfg.num_key_value_heads
    inv = L.rope_inv_freq(cfg).double()
    if name == "theta":  # rope_theta ignored: the default 10000
        return _logits_with(replace(cfg, rope_theta=10000.0 if cfg.rope_theta != 10000.0 else 500000.0), W, idx)
    if name == "no_bias":
        return _logits_with(cfg, {k: (0 * v if k.endswith(".bias") else v) for k, v in W.items()}, idx)
    if name == "gqa_interleaved":  # query head h reading key/value head h % NKV
        r = NH // NKV
        W = dict(W)
        order = [hh for j in range(NKV) for hh in range(NH) if hh % NKV == j]  # heads of kv j first
        assert sorted(order) == list(range(NH)) and r > 1
        for i in range(cfg.num_hidden_layers):
            q = L.module_path(i, "self_attn.q_proj")
            o = L.module_path(i, "self_attn.o_proj")
            W[q + ".weight"] = W[q + ".weight"].reshape(NH, hd, -1)[order].reshape(NH * hd, -1)
            if q + ".bias" in W:
                W[q + ".bias"] = W[q + ".bias"].reshape(NH, hd)[order].reshape(-1)
            W[o + ".weight"] = W[o + ".weight"].reshape(-1, NH, hd)[:, order].reshape(-1, NH * hd)
        return _logits_with(cfg, W, idx)
    if name == "rope_interleaved":  # GPT-J pairs (2i, 2i+1) instead of (i, i + hd/2)
        perm = list(range(0, hd, 2)) + list(range(1, hd, 2))
        return _logits_with(cfg, _permute_head_rows(cfg, W, ("self_attn.q_proj", "self_attn.k_proj"), perm), idx)
    plain = L.rope_inv_freq(replace(cfg, rope_scaling=None)).double()
    bands = L.rope_bands(cfg) if cfg.rope_scaling else []
    factor = cfg.rope_scaling["factor"] if cfg.rope_scaling else 1.0
    if name == "no_scaling":
        return _logits_with(cfg, W, idx, plain)
    if name == "linear_scaling":
        return _logits_with(cfg, W, idx, plain / factor)
    if name in ("medium_unscaled", "medium_divided"):
        alt = inv.clone()
        for k, b in enumerate(bands):
            if b == "medium":
                alt[k] = plain[k] if name == "medium_unscaled" else plain[k] / factor
        return _logits_with(cfg, W, idx, alt)
    raise ValueError(name)


def check_can_fail(case: Case, W: dict, idx, want: np.ndarray) -> None:
    scale = np.abs(want).max()
    for name in case.perturb:
        diff = np.abs(perturbed_logits(name, case.cfg, W, idx) - want).max()
        print(f"sanity: {name} would change the logits by {diff:.3g} ({diff / scale:.3g} of their scale)",
              flush=True)
        assert diff > CAN_FAIL * TOL_LOGITS * scale, \
            f"test defect: a model with {name} is within {CAN_FAIL:g}x the tolerance ({diff:.3g})"


# --------------------------------------------------------------------------------------
# logits cases
# --------------------------------------------------------------------------------------

def run_logits_case(case: Case, fails: Failures, lorad: str, wd: str) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(case.seed)
    cfg, T, n, V = case.cfg, case.seq, case.n_samples, case.cfg.vocab_size
    if cfg.rope_scaling:
        assert sorted(set(L.rope_bands(cfg))) == ["high", "low", "medium"], "test defect: rope bands"
        assert T > cfg.rope_scaling["original_max_position_embeddings"]
    model = os.path.join(wd, "model")
    base = make_model(case, rng, model)
    if case.shards > 1:
        assert len([f for f in os.listdir(model) if f.endswith(".safetensors")]) == case.shards
    tokens = rng.integers(0, V, n * T + 1 + 3)
    data = write_tokens(case, os.path.join(wd, "data"), tokens)
    want = L.eval_logits(cfg, base, tokens, T, n)
    sums, counts = g.sample_losses(cfg, g.to_torch(base), tokens, None, T, n, logits_fn=llama_logits)
    want_loss = float(sums.sum() / counts.sum())
    check_can_fail(case, base, torch.tensor(L.sample_inputs(tokens, T, n)), want)
    print(f"reference loss {want_loss:.9g}, logit scale {np.abs(want).max():.3g}", flush=True)

    e = run_eval(fails, lorad, case, model, data, "eval")
    if e:
        print(f"eval: loss {e['loss']!r}, reference {want_loss!r}", flush=True)
        rel_close(fails, e["loss"], want_loss, TOL_EVAL_LOSS, "eval: loss")
        fails.check((e["tokens"], e["samples"]) == (n * T, n),
                    f"eval: tokens/samples {e['tokens']}/{e['samples']}, expected {n * T}/{n}")
    path = os.path.join(wd, "logits.f32")
    if run_eval(fails, lorad, case, model, data, "eval --logits", logits=path):
        got = read_logits(fails, path, n, T, V, "eval --logits")
        if got is not None:
            check_logits(fails, torch.tensor(got), torch.tensor(want), "eval --logits")
    if case.max_batches:
        m = min(n, case.max_batches * case.batch)
        path = os.path.join(wd, "logits_max_batches.f32")
        what = f"eval --logits --max-batches {case.max_batches}"
        if run_eval(fails, lorad, case, model, data, what, logits=path,
                    extra=["--max-batches", case.max_batches]):
            got = read_logits(fails, path, m, T, V, what)
            if got is not None:
                check_logits(fails, torch.tensor(got), torch.tensor(want[:m]), what)


# --------------------------------------------------------------------------------------
# train cases
# --------------------------------------------------------------------------------------

@dataclass
class Setup:
    """Files written for a train case and the reference's view of them (the attribute
    names ref_gpt2.lorad_args reads)."""
    model_dir: str
    data_path: str
    init_dir: Optional[str]
    base: dict
    tokens: np.ndarray
    mask: Optional[np.ndarray]
    specs: list
    init: Optional[dict]
    val_path: Optional[str] = None
    val: Optional[tuple] = None


def prepare_train(case: Case, wd: str) -> Setup:
    rng = np.random.default_rng(case.seed)
    cfg, ts = case.cfg, case.ts
    model_dir = os.path.join(wd, "model")
    base = make_model(case, rng, model_dir)
    tokens = rng.integers(0, cfg.vocab_size, case.n_tokens)
    mask = random_mask(rng, case.n_tokens, case.mask_zero_frac) if case.data == "h5" else None
    specs, init, init_dir = [], None, None
    if ts.mode == "lora":
        specs = L.resolve_targets(cfg, list(ts.targets))
        assert specs, "test defect: the targets match no module"
        params = g.random_adapters(specs, ts.module_rank, ts.module_scale, rng)
        config, tensors = L.export_adapters(specs, params, list(ts.targets), ts.rank, ts.alpha, ts.rslora,
                                            base_model=model_dir, rank_pattern=ts.rank_pattern,
                                            alpha_pattern=ts.alpha_pattern)
        init_dir = os.path.join(wd, "init_adapter")
        g.write_peft_dir(init_dir, config, tensors, "F32")
        init = L.import_adapters(specs, g.read_peft_dir(init_dir)[1])
    data_path = write_tokens(case, os.path.join(wd, "train"), tokens, mask)
    val_path, val = None, None
    if case.val_samples:
        # training text (so that the validation loss follows training closely) under its
        # own mask, with a tail too short for another sample
        nv = case.val_samples * ts.seq + 1 + 5
        val = (tokens[:nv].copy(), random_mask(rng, nv, case.mask_zero_frac))
        val_path = write_tokens(case, os.path.join(wd, "val"), *val)
    return Setup(model_dir, data_path, init_dir, base, tokens, mask, specs, init, val_path, val)


def train_inputs(case: Case, s: Setup):
    """A batch for logits comparisons: the first two samples."""
    return torch.tensor(L.sample_inputs(s.tokens, case.ts.seq, 2))


def ref_lora(case: Case, s: Setup, params):
    return g.make_lora(s.specs, g.to_torch_pairs(params), case.ts.module_scale)


def check_own_export(case: Case, s: Setup) -> None:
    """The init adapter merged the PEFT way equals the unmerged model (our own machinery
    agrees with itself before lorad is judged by it)."""
    if s.init_dir is None:
        return
    config, tensors = g.read_peft_dir(s.init_dir)
    idx = train_inputs(case, s)
    with torch.no_grad():
        merged = llama_logits(case.cfg, g.to_torch(L.peft_merge(case.cfg, s.base, config, tensors)), idx)
        unmerged = llama_logits(case.cfg, g.to_torch(s.base), idx, ref_lora(case, s, s.init))
    err = (merged - unmerged).abs().max().item()
    assert err < 1e-9, f"test defect: own PEFT export/merge disagree by {err}"


def check_reference_sanity(case: Case, s: Setup, ref) -> None:
    """Parameters move well beyond the tolerance, clipping triggers where the case says,
    a val_loss one step off would be seen."""
    if case.ts.mode == "lora":
        for key, (a, b) in ref.params.items():
            a0, b0 = s.init[key]
            assert rel_err(a, a0) > MIN_MOVE and rel_err(b, b0) > MIN_MOVE, \
                f"test defect: {key} barely moves ({rel_err(a, a0):.3g}, {rel_err(b, b0):.3g})"
    else:  # a tensor lorad left untrained would be off by its move: well above the tolerance
        for k in s.base:
            move = rel_err(ref.params[k], s.base[k])
            assert move > 3 * TOL_PARAM, f"test defect: {k} moves only {move:.3g}"
    if case.clip_must_trigger:
        assert max(ref.grad_norms) > case.ts.clip, "test defect: clipping never triggers"
    assert all(math.isfinite(x) for x in ref.losses)
    for step in g.eval_steps(case.ts.eval_every, case.ts.steps) if ref.val_losses else []:
        v, prev = ref.val_losses[step], ref.val_losses[step - 1]
        assert abs(v - prev) > 10 * TOL_VAL * v, f"test defect: val loss barely changes at step {step}"
    if case.module_table:
        check_module_table(case.ts, case.module_table, s.specs, "model.")
        check_patterns_matter(case.cfg, s.base, s.tokens, s.mask, case.ts, s.init, s.specs, ref,
                              logits_fn=llama_logits)


def launch(fails: Failures, lorad: str, case: Case, s: Setup, wd: str, v: Variant = Variant()) -> Optional[Run]:
    label = v.label()
    out = os.path.join(wd, "out_" + re.sub(r"[^A-Za-z0-9.]+", "_", label))
    p = run_lorad(lorad, lorad_args(case, s, out, v))
    if not lorad_ok(fails, p, f"train ({label})"):
        return None
    rows = step_rows(fails, out, case.ts.steps, label)
    return None if rows is None else Run(label, v, out, p.stderr, rows)


def check_adapter_config(fails: Failures, case: Case, config: dict, modules: List[str]) -> None:
    ts = case.ts
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False,
            "use_rslora": ts.rslora, "r": ts.rank}
    for key, val in want.items():
        fails.check(config.get(key) == val, f"adapter_config.json: {key} = {config.get(key)!r}, expected {val!r}")
    fails.check(isinstance(config.get("lora_alpha"), (int, float)) and abs(config["lora_alpha"] - ts.alpha) < 1e-9,
                f"adapter_config.json: lora_alpha = {config.get('lora_alpha')!r}, expected {ts.alpha}")
    fails.check(config.get("lora_dropout") == 0, f"adapter_config.json: lora_dropout = {config.get('lora_dropout')!r}")
    fails.check(not config.get("use_dora", False), "adapter_config.json: use_dora is set")
    fails.check("base_model_name_or_path" in config, "adapter_config.json: base_model_name_or_path missing")
    if not fails.check("target_modules" in config, "adapter_config.json: target_modules missing"):
        return
    targeted = sorted(g.peft_targeted(config, [m for m, _, _ in L.all_modules(case.cfg)]))
    fails.check(targeted == sorted(modules), f"adapter_config.json: target_modules {config['target_modules']!r} "
                f"select {targeted}, but the adapter holds {sorted(modules)}")
    for key in ("rank_pattern", "alpha_pattern"):
        if not fails.check(isinstance(config.get(key), dict),
                           f"adapter_config.json: {key} = {config.get(key)!r}, expected an object"):
            return
    for mod in modules:  # each module's rank and scale by PEFT's matching
        try:
            r, _, scale = g.peft_module_scale(config, mod)
        except (TypeError, ZeroDivisionError) as e:
            fails.add(f"adapter_config.json: no PEFT scale for {mod}: {e}")
            continue
        want_r, want_s = ts.module_rank(mod), ts.module_scale(mod)
        fails.check(r == want_r and abs(scale - want_s) <= 1e-6 * want_s,
                    f"adapter_config.json: PEFT gives {mod} rank {r!r} and scale {scale!r}, "
                    f"expected rank {want_r} and scale {want_s!r}")


def check_lora_output(fails: Failures, case: Case, s: Setup, ref, out: str) -> None:
    ts = case.ts
    adir = os.path.join(out, "adapter")
    try:
        config, got = g.read_peft_dir(adir)
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"cannot read lorad's adapter {adir}: {e}")
        return
    _, want = L.export_adapters(s.specs, ref.params, list(ts.targets), ts.rank, ts.alpha, ts.rslora,
                                rank_pattern=ts.rank_pattern, alpha_pattern=ts.alpha_pattern)
    fails.check(sorted(got) == sorted(want), f"adapter keys differ: extra {sorted(set(got) - set(want))}, "
                f"missing {sorted(set(want) - set(got))}")
    worst = 0.0
    for key in sorted(set(got) & set(want)):
        if fails.check(got[key].shape == want[key].shape, f"{key}: shape {got[key].shape}, expected {want[key].shape}"):
            worst = max(worst, rel_close(fails, got[key], want[key], TOL_PARAM, key))
    print(f"adapter: {len(got)} tensors, worst rel err {worst:.3g}", flush=True)
    modules = sorted({k[len("base_model.model."):-len(".lora_A.weight")] for k in got if k.endswith(".lora_A.weight")})
    check_adapter_config(fails, case, config, modules)
    idx = train_inputs(case, s)
    with torch.no_grad():
        want_logits = llama_logits(case.cfg, g.to_torch(s.base), idx, ref_lora(case, s, ref.params))
        try:
            merged = L.peft_merge(case.cfg, s.base, config, got)
        except (ValueError, KeyError, TypeError) as e:
            fails.add(f"PEFT cannot apply lorad's adapter: {e}")
            return
        check_logits(fails, llama_logits(case.cfg, g.to_torch(merged), idx), want_logits, "PEFT-merged lorad adapter")


def check_full_output(fails: Failures, case: Case, s: Setup, ref, out: str) -> None:
    mdir = os.path.join(out, "model")
    try:
        conf = L.read_config(mdir)
        got, dtypes, _ = g.read_weights_dir(mdir)
    except (OSError, ValueError, KeyError, TypeError) as e:
        fails.add(f"cannot read lorad's model {mdir}: {e}")
        return
    fails.check(conf == case.cfg, f"{mdir}/config.json reads as {conf}, expected {case.cfg}")
    want = ref.params
    fails.check(sorted(got) == sorted(want), f"model tensors differ from the input's: extra "
                f"{sorted(set(got) - set(want))}, missing {sorted(set(want) - set(got))}")
    worst = 0.0
    for name in sorted(set(got) & set(want)):
        fails.check(dtypes[name] == "F32", f"{name}: dtype {dtypes[name]}, expected F32")
        if fails.check(got[name].shape == want[name].shape,
                       f"{name}: shape {got[name].shape}, expected {want[name].shape}"):
            worst = max(worst, rel_close(fails, got[name], want[name], TOL_PARAM, name))
    print(f"model: {len(got)} tensors, worst rel err {worst:.3g}", flush=True)
    if sorted(got) == sorted(want) and all(got[k].shape == want[k].shape for k in got):
        idx = train_inputs(case, s)
        with torch.no_grad():
            check_logits(fails, llama_logits(case.cfg, g.to_torch(got), idx),
                         llama_logits(case.cfg, g.to_torch(want), idx), "written model")


def run_train_case(case: Case, fails: Failures, lorad: str, wd: str) -> None:
    torch.set_num_threads(1)
    s = prepare_train(case, wd)
    check_own_export(case, s)
    ref = g.reference_train(case.cfg, s.base, s.tokens, s.mask, case.ts, s.init, s.specs, val=s.val,
                            logits_fn=llama_logits)
    check_reference_sanity(case, s, ref)
    print("reference losses: " + " ".join(f"{x:.6f}" for x in ref.losses), flush=True)
    print("reference grad norms: " + " ".join(f"{x:.4g}" for x in ref.grad_norms), flush=True)
    main = launch(fails, lorad, case, s, wd)
    if main is None:
        return
    check_metrics(fails, main.rows, ref, main.label)
    check_val(fails, case, main, ref)
    if case.ts.mode == "lora":
        check_lora_output(fails, case, s, ref, main.out)
    else:
        check_full_output(fails, case, s, ref, main.out)
    for micro in case.micro_variants:
        other = launch(fails, lorad, case, s, wd, Variant(micro=micro))
        if other:
            check_same_trajectory(fails, case, other, main)
    if case.products:
        check_products(fails, lorad, case, s, wd, ref, main)
    if case.module_table:  # the init adapter holds the patterns' ranks and scales
        for i, (what, over) in enumerate((("without the patterns", dict(rank_pattern=(), alpha_pattern=())),
                                          ("without --alpha-pattern", dict(alpha_pattern=())),
                                          ("without --rank-pattern", dict(rank_pattern=())))):
            other = replace(case, ts=replace(case.ts, **over))
            refused(fails, lorad, lorad_args(other, s, os.path.join(wd, f"out_refused{i}")),
                    [os.path.basename(s.init_dir), "adapter_config.json", "adapter_model.safetensors"],
                    f"--init-adapter with the patterns' ranks and scales, flags {what}")


# --------------------------------------------------------------------------------------
# merge_generate
# --------------------------------------------------------------------------------------

def check_greedy(fails: Failures, got, want, margins, what) -> None:
    """Token for token up to the reference's first near-tie (which must not come early)."""
    k = next((i for i, m in enumerate(margins) if m < MARGIN_MIN), len(want))
    print(f"{what}: lorad {got}, reference {want}; min margin {min(margins):.3g}, checking {k}", flush=True)
    assert k >= 5, f"test defect: a reference near-tie at token {k}: pick another seed"
    fails.check(got[:k] == want[:k] and len(got) == len(want),
                f"{what}: greedy tokens {got} != reference argmax continuation {want}")


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def run_merge_generate(case: Case, fails: Failures, lorad: str, wd: str) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(case.seed)
    cfg, ts, T, n, V = case.cfg, case.ts, case.seq, case.n_samples, case.cfg.vocab_size
    model = os.path.join(wd, "model")
    base = make_model(case, rng, model)
    tokens = rng.integers(0, V, n * T + 1 + 2)
    data = write_tokens(case, os.path.join(wd, "data"), tokens)
    specs = L.resolve_targets(cfg, list(ts.targets))
    params = g.random_adapters(specs, ts.rank, ts.scale, rng)
    config0, tensors0 = L.export_adapters(specs, params, list(ts.targets), ts.rank, ts.alpha, ts.rslora, model)
    init_dir = os.path.join(wd, "init_adapter")
    g.write_peft_dir(init_dir, config0, tensors0, "F32")
    prompt = list(case.prompt.encode())
    assert max(prompt) < V and len(prompt) + 10 <= cfg.max_position_embeddings
    base_greedy, _ = L.greedy(cfg, base, prompt, 10)

    # an adapter trained by lorad
    s = Setup(model, data, init_dir, base, tokens, None, specs, None)
    out = os.path.join(wd, "train")
    if not lorad_ok(fails, run_lorad(lorad, lorad_args(case, s, out)), "train"):
        return
    adapter = os.path.join(out, "adapter")
    try:
        config, tensors = g.read_peft_dir(adapter)
        want = L.peft_merge(cfg, base, config, tensors)
    except (OSError, ValueError, KeyError, TypeError) as e:
        fails.add(f"lorad's trained adapter {adapter} cannot be merged the PEFT way: {e}")
        return
    moved = sorted(k for k in base if rel_err(want[k], base[k]) > 1e-3)
    adapted = sorted(sp.module + ".weight" for sp in specs)
    fails.check(moved == adapted, f"the trained adapter moves {moved}, expected exactly {adapted}")
    fails.check(any(rel_err(tensors[k], tensors0[k]) > 1e-3 for k in tensors0 if k in tensors),
                "the adapter did not train (equal to the init adapter)")

    # merge: W0 + s*B@A, the input's names, config.json as it was. Without a merged
    # directory the --adapter paths are still checked.
    merged = os.path.join(wd, "merged")
    merged_ok = check_merge(fails, lorad, model, adapter, merged, base, want)

    # eval: merged dir == base + --adapter == the reference, losses first, then the logits
    sums, counts = g.sample_losses(cfg, g.to_torch(want), tokens, None, T, n, logits_fn=llama_logits)
    want_loss = float(sums.sum() / counts.sum())
    runs = [("--adapter", model, adapter)] + ([("merged", merged, None)] if merged_ok else [])
    e = {}
    for what, mdl, ad in runs:
        e[what] = run_eval(fails, lorad, case, mdl, data, f"eval {what}", adapter=ad)
        if e[what]:
            print(f"eval {what}: loss {e[what]['loss']!r}, reference {want_loss!r}", flush=True)
            rel_close(fails, e[what]["loss"], want_loss, TOL_EVAL_LOSS, f"eval {what}: loss")
    if e.get("--adapter") and e.get("merged"):
        rel_close(fails, e["merged"]["loss"], e["--adapter"]["loss"], TOL_SAME,
                  "eval of the merged dir against eval --adapter: loss")
    want_logits = L.eval_logits(cfg, want, tokens, T, n)
    x = {}
    for what, mdl, ad in runs:
        path = os.path.join(wd, "logits_" + re.sub(r"[^a-z]+", "", what) + ".f32")
        if run_eval(fails, lorad, case, mdl, data, f"eval {what} --logits", adapter=ad, logits=path):
            x[what] = read_logits(fails, path, n, T, V, f"eval {what} --logits")
            if x[what] is not None:
                check_logits(fails, torch.tensor(x[what]), torch.tensor(want_logits), f"eval {what} --logits")
    if x.get("--adapter") is not None and x.get("merged") is not None:
        diff, scale = np.abs(x["merged"] - x["--adapter"]).max(), np.abs(x["--adapter"]).max()
        print(f"logits: merged vs --adapter max diff {diff:.3g} (scale {scale:.3g})", flush=True)
        fails.check(diff <= TOL_SAME * scale, f"eval merged vs eval --adapter: logits differ by {diff:.3g} > "
                    f"{TOL_SAME:g} * {scale:.3g}")

    # greedy generation
    want_ids, margins = L.greedy(cfg, want, prompt, 10)
    assert want_ids != base_greedy, "test defect: the adapter does not change the greedy continuation"
    flags = ["--ids", "--temperature", 0, "--max-new", 10]
    for what, mdl, ad in runs:
        p = gen(lorad, mdl, case.prompt, flags, ad)
        if lorad_ok(fails, p, f"generate {what}"):
            ids = gen_ids(fails, p, f"generate {what}")
            if ids is not None:
                check_greedy(fails, ids, want_ids, margins, f"generate {what}")


def check_merge(fails: Failures, lorad: str, model: str, adapter: str, merged: str, base: dict,
                want: dict) -> bool:
    """`lorad merge` into MERGED: every tensor F32 within TOL_SAME of WANT (W0 + s*B@A),
    the input's tensor names, config.json copied byte for byte. False when there is no
    readable merged directory."""
    if not lorad_ok(fails, run_lorad(lorad, ["merge", "--model", model, "--adapter", adapter, "--out", merged]),
                    "merge"):
        return False
    try:
        got, dtypes, _ = g.read_weights_dir(merged)
    except (OSError, ValueError, KeyError) as e:
        fails.add(f"cannot read the merged model: {e}")
        return False
    fails.check(set(got) == set(base), f"merged tensor names differ from the input's: {sorted(set(got) ^ set(base))}")
    fails.check(set(dtypes.values()) == {"F32"}, f"merged dtypes {set(dtypes.values())}, expected F32")
    worst = 0.0
    for k in sorted(set(got) & set(base)):
        if fails.check(got[k].shape == want[k].shape, f"merged {k}: shape {got[k].shape}"):
            e = rel_err(got[k], want[k])
            worst = max(worst, e)
            fails.check(e <= TOL_SAME, f"merged {k} differs from W0 + s*B@A by {e:.2e} relative")
    print(f"merge: worst tensor rel err {worst:.2e}", flush=True)
    cj = os.path.join(merged, "config.json")
    fails.check(os.path.exists(cj) and file_bytes(cj) == file_bytes(os.path.join(model, "config.json")),
                "merge: config.json missing or not copied byte for byte")
    return True


RUNNERS = {"logits": run_logits_case, "train": run_train_case, "merge_generate": run_merge_generate}

if __name__ == "__main__":
    g.run_driver("ref_llama", {name: partial(RUNNERS[c.kind], c) for name, c in CASES.items()})
