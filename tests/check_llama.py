"""check_llama.py: lorad on the Llama family (Llama, Mistral, Qwen2) against the PyTorch
float64 reference of torch_llama.py.

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
  train_*         `lorad train` for 10 steps against torch_train.reference_train on this
                  model: train_case.run_train_case, as check_gpt2.py runs GPT-2 (every
                  metrics row, val_loss, the trained tensors, the adapter config and the
                  export's meaning). train_lora: q_proj,v_proj,down_proj from a non-zero-B
                  init adapter, h5 with a loss mask, --val; train_all_linear_rslora: Mistral,
                  all-linear, rsLoRA, micro-batch 1 (and 2 and 4 must agree), clipping, the
                  other products; train_full: Qwen2 (biases), untied, --mode full, --eps 1e-6,
                  OUT/model/; train_patterns: --rank-pattern v_proj=2 --alpha-pattern
                  layers.1.self_attn.q_proj=12 (per-module ranks and scales, each module's
                  rank and scale by PEFT's matching of the exported config, the init adapter
                  refused by flags without the patterns)
  merge_generate  (untied Llama, vocab 260) lorad trains an adapter on q,k,o,gate,up for 4
                  steps, `lorad merge` writes W0 + s*B@A (1e-6 per tensor,
                  same names, config.json copied); eval of the merged dir equals eval with
                  --adapter (loss and logits, 1e-6) and the reference; greedy `lorad generate
                  --ids --temperature 0 --max-new 10` on the merged dir (and base + --adapter)
                  equals the reference's argmax continuation

A lorad that rejects the architecture fails the case at its first lorad run with one line
saying so; any other failure is a real one. Exits 0 on pass, 1 with one line per
difference otherwise. A missing lorad binary fails.
Usage: check_llama.py --lorad PATH --case CASE --workdir DIR
"""

import os
import re
import sys
from dataclasses import dataclass, replace
from functools import partial
from typing import Optional, Tuple

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import torch_llama as llama  # noqa: E402
from harness import (Failures, eval_json, file_bytes, generate, generated_ids, random_adapters,  # noqa: E402
                     read_peft_dir, read_weights_dir, rel_err, run_driver, run_lorad, sample_inputs,
                     write_peft_dir)
from torch_llama import LlamaConfig, llama3_scaling, llama_logits  # noqa: E402
from torch_train import TrainSpec, sample_losses, to_torch  # noqa: E402
from train_case import (TOL_LOGITS, Family, Setup, TrainCase, check_logits, lorad_args, lorad_ok,  # noqa: E402
                        rel_close, run_train_case, write_tokens)

TOL_EVAL_LOSS = 1e-5  # eval's loss against the reference
TOL_SAME = 1e-6       # merged dir against base + --adapter; the merge against W0 + s*B@A
CAN_FAIL = 10.0       # a sanity perturbation must move the logits by this times the tolerance
MARGIN_MIN = 1e-3     # a top-1/top-2 gap below this could flip under float32 rounding


def check_config(fails: Failures, mdir: str, cfg: LlamaConfig) -> None:
    """A written model's config.json reads as the case's configuration."""
    conf = llama.read_config(mdir)
    fails.check(conf == cfg, f"{mdir}/config.json reads as {conf}, expected {cfg}")


LLAMA = Family(logits=llama_logits, make_model=llama.make_model, resolve_targets=llama.resolve_targets,
               export_adapters=llama.export_adapters, import_adapters=llama.import_adapters,
               peft_merge=llama.peft_merge, all_modules=llama.all_modules, check_config=check_config,
               module_prefix="model.", stored_prefix="", fan_in_fan_out=False)


@dataclass
class Case:
    """A logits or merge_generate case (the train cases are train_case.TrainCase)."""
    kind: str                        # logits | merge_generate
    cfg: LlamaConfig
    seed: int
    dtype: str = "F32"               # storage dtype of the model's weights
    shards: int = 1
    seq: int = 16
    n_samples: int = 5               # samples in the data
    batch: int = 2                   # eval --batch
    max_batches: int = 0             # logits: also eval --max-batches this
    perturb: Tuple[str, ...] = ()    # logits: sanity perturbations (see perturbed_logits)
    ts: Optional[TrainSpec] = None   # merge_generate: lorad train's flags
    data: str = "bin16"              # bin16 | bin32
    prompt: str = ""                 # merge_generate


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
    # the validation set is the training text's start (its loss follows training closely)
    "train_lora": TrainCase(
        _cfg(vocab=79),
        seed=21, ts=TrainSpec(targets=("q_proj", "v_proj", "down_proj"), rank=4, alpha=8, batch=4,
                              micro_batch=2, seq=16, lr=1e-2, schedule="constant", warmup=2,
                              weight_decay=0.01, clip=1.0, eval_every=5),
        data="h5", n_tokens=8 * 16 + 1 + 3, mask_zero_frac=0.3, val_samples=5, val_from_train=True),
    "train_all_linear_rslora": TrainCase(
        _cfg("mistral", vocab=71, sliding_window=None, rope_theta=10000.0),
        seed=22, ts=TrainSpec(targets=("all-linear",), rank=2, alpha=4, rslora=True, batch=4,
                              micro_batch=1, seq=16, lr=1e-2, schedule="cosine", warmup=3,
                              weight_decay=0.05, clip=0.05),
        data="bin32", n_tokens=300, micro_variants=(2, 4), clip_must_trigger=True, products=True),
    # --rank-pattern v_proj=2 and --alpha-pattern on layer 1's q_proj only (a key that is a
    # dotted suffix of model.layers.1.self_attn.q_proj): scales 2 (q_proj of layer 0,
    # down_proj), 3 (q_proj of layer 1) and 4 (v_proj, rank 2).
    "train_patterns": TrainCase(
        _cfg(vocab=73, rope_theta=10000.0),
        seed=24, ts=TrainSpec(targets=("q_proj", "v_proj", "down_proj"), rank=4, alpha=8,
                              rank_pattern=(("v_proj", 2),),
                              alpha_pattern=(("layers.1.self_attn.q_proj", 12),), batch=4,
                              micro_batch=2, seq=16, lr=1e-2, schedule="linear", warmup=2,
                              weight_decay=0.01, clip=1.0, eval_every=5),
        data="h5", n_tokens=8 * 16 + 1 + 3, mask_zero_frac=0.3, val_samples=5, val_from_train=True,
        module_table={"layers.0.self_attn.q_proj": (4, 8), "layers.1.self_attn.q_proj": (4, 12),
                      "layers.0.self_attn.v_proj": (2, 8), "layers.1.self_attn.v_proj": (2, 8),
                      "layers.0.mlp.down_proj": (4, 8), "layers.1.mlp.down_proj": (4, 8)}),
    # eps 1e-6 as check_gpt2's full case: AdamW's update of a tensor whose gradient is
    # float32 noise is noise / (noise + eps); a larger eps keeps it far below the tolerance.
    # Every tensor moves by over 3x the tolerance, so an untrained one would be seen.
    "train_full": TrainCase(
        _cfg("qwen2", vocab=67, nkv=2, rms_norm_eps=1e-6, rope_theta=10000.0),
        seed=23, ts=TrainSpec(mode="full", rank=4, alpha=8, batch=3, micro_batch=1, seq=16, lr=3e-3,
                              schedule="linear", warmup=2, weight_decay=0.1, clip=1.0, eps=1e-6),
        data="bin16", n_tokens=250, tensor_moves=3),
    "merge_generate": Case(
        "merge_generate", _cfg(vocab=260, rope_theta=10000.0),  # untied: a varied continuation
        seed=31, n_samples=6, batch=4,
        ts=TrainSpec(targets=("q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"), rank=4, alpha=8,
                     steps=4, batch=2, micro_batch=2, seq=16, lr=2e-2, schedule="constant", clip=1.0),
        prompt="Llama says: "),
}


# --------------------------------------------------------------------------------------
# Running lorad eval
# --------------------------------------------------------------------------------------

def eval_args(model: str, data: str, case: Case, adapter=None, extra=()) -> list:
    return (["eval", "--model", model, "--data", data, "--batch", case.batch, "--seq", case.seq,
             "--threads", 1, "--json"] + (["--adapter", adapter] if adapter else []) + list(extra))


def run_eval(fails, lorad, case, model, data, what, adapter=None, logits=None, extra=()):
    """`lorad eval --json` (with --logits PATH when LOGITS): the parsed JSON or None."""
    args = eval_args(model, data, case, adapter, (["--logits", logits] if logits else []) + list(extra))
    p = run_lorad(lorad, args)
    if not lorad_ok(fails, p, what):
        return None
    return eval_json(fails, p, what)


def read_logits(fails, path, n, T, V, what):
    try:
        return llama.read_logits_file(path, n, T, V)
    except (OSError, ValueError) as e:
        fails.add(f"{what}: {e}")
        return None


# --------------------------------------------------------------------------------------
# Sanity perturbations: what a wrong implementation of a feature would compute
# --------------------------------------------------------------------------------------

def _permute_head_rows(cfg, W, names, perm_of_head):
    """W with the rows of each head of NAMES (q/k/v projections and biases) permuted."""
    W = dict(W)
    for name in names:
        for i in range(cfg.num_hidden_layers):
            for suffix in (".weight", ".bias"):
                key = llama.module_path(i, name) + suffix
                if key in W:
                    t = W[key]
                    heads = t.shape[0] // cfg.hd
                    W[key] = t.reshape(heads, cfg.hd, *t.shape[1:])[:, perm_of_head].reshape(t.shape)
    return W


def _logits_with(cfg, W, idx, inv=None):
    with torch.no_grad():
        return llama_logits(cfg, to_torch(W), idx, None, inv).numpy()


def perturbed_logits(name: str, cfg: LlamaConfig, W: dict, idx) -> np.ndarray:
    hd, NH, NKV = cfg.hd, cfg.num_attention_heads, cfg.num_key_value_heads
    inv = llama.rope_inv_freq(cfg).double()
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
            q = llama.module_path(i, "self_attn.q_proj")
            o = llama.module_path(i, "self_attn.o_proj")
            W[q + ".weight"] = W[q + ".weight"].reshape(NH, hd, -1)[order].reshape(NH * hd, -1)
            if q + ".bias" in W:
                W[q + ".bias"] = W[q + ".bias"].reshape(NH, hd)[order].reshape(-1)
            W[o + ".weight"] = W[o + ".weight"].reshape(-1, NH, hd)[:, order].reshape(-1, NH * hd)
        return _logits_with(cfg, W, idx)
    if name == "rope_interleaved":  # GPT-J pairs (2i, 2i+1) instead of (i, i + hd/2)
        perm = list(range(0, hd, 2)) + list(range(1, hd, 2))
        return _logits_with(cfg, _permute_head_rows(cfg, W, ("self_attn.q_proj", "self_attn.k_proj"), perm), idx)
    plain = llama.rope_inv_freq(replace(cfg, rope_scaling=None)).double()
    bands = llama.rope_bands(cfg) if cfg.rope_scaling else []
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
        assert sorted(set(llama.rope_bands(cfg))) == ["high", "low", "medium"], "test defect: rope bands"
        assert T > cfg.rope_scaling["original_max_position_embeddings"]
    model = os.path.join(wd, "model")
    base = llama.make_model(model, case.cfg, rng, case.dtype, case.shards)
    if case.shards > 1:
        assert len([f for f in os.listdir(model) if f.endswith(".safetensors")]) == case.shards
    tokens = rng.integers(0, V, n * T + 1 + 3)
    data = write_tokens(case, os.path.join(wd, "data"), tokens, None)
    want = llama.eval_logits(cfg, base, tokens, T, n)
    sums, counts = sample_losses(llama_logits, cfg, to_torch(base), tokens, None, T, n)
    want_loss = float(sums.sum() / counts.sum())
    check_can_fail(case, base, torch.tensor(sample_inputs(tokens, T, n)), want)
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
# merge_generate
# --------------------------------------------------------------------------------------

def check_greedy(fails: Failures, got, want, margins, what) -> None:
    """Token for token up to the reference's first near-tie (which must not come early)."""
    k = next((i for i, m in enumerate(margins) if m < MARGIN_MIN), len(want))
    print(f"{what}: lorad {got}, reference {want}; min margin {min(margins):.3g}, checking {k}", flush=True)
    assert k >= 5, f"test defect: a reference near-tie at token {k}: pick another seed"
    fails.check(got[:k] == want[:k] and len(got) == len(want),
                f"{what}: greedy tokens {got} != reference argmax continuation {want}")


def run_merge_generate(case: Case, fails: Failures, lorad: str, wd: str) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(case.seed)
    cfg, ts, T, n, V = case.cfg, case.ts, case.seq, case.n_samples, case.cfg.vocab_size
    model = os.path.join(wd, "model")
    base = llama.make_model(model, cfg, rng, case.dtype, case.shards)
    tokens = rng.integers(0, V, n * T + 1 + 2)
    data = write_tokens(case, os.path.join(wd, "data"), tokens, None)
    specs = llama.resolve_targets(cfg, list(ts.targets))
    params = random_adapters(specs, ts.rank, ts.scale, rng)
    config0, tensors0 = llama.export_adapters(specs, params, list(ts.targets), ts.rank, ts.alpha, ts.rslora, model)
    init_dir = os.path.join(wd, "init_adapter")
    write_peft_dir(init_dir, config0, tensors0, "F32")
    prompt = list(case.prompt.encode())
    assert max(prompt) < V and len(prompt) + 10 <= cfg.max_position_embeddings
    base_greedy, _ = llama.greedy(cfg, base, prompt, 10)

    # an adapter trained by lorad
    s = Setup(model, data, init_dir, base, tokens, None, specs, None)
    out = os.path.join(wd, "train")
    if not lorad_ok(fails, run_lorad(lorad, lorad_args(ts, s, out)), "train"):
        return
    adapter = os.path.join(out, "adapter")
    try:
        config, tensors = read_peft_dir(adapter)
        want = llama.peft_merge(cfg, base, config, tensors)
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
    sums, counts = sample_losses(llama_logits, cfg, to_torch(want), tokens, None, T, n)
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
    want_logits = llama.eval_logits(cfg, want, tokens, T, n)
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
    want_ids, margins = llama.greedy(cfg, want, prompt, 10)
    assert want_ids != base_greedy, "test defect: the adapter does not change the greedy continuation"
    flags = ["--ids", "--temperature", 0, "--max-new", 10]
    for what, mdl, ad in runs:
        p = generate(lorad, mdl, case.prompt, flags, ad)
        if lorad_ok(fails, p, f"generate {what}"):
            ids = generated_ids(fails, p, f"generate {what}")
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
        got, dtypes, _ = read_weights_dir(merged)
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


RUNNERS = {"logits": run_logits_case, "merge_generate": run_merge_generate}


def runner(case):
    if isinstance(case, TrainCase):
        return partial(run_train_case, LLAMA, case)
    return partial(RUNNERS[case.kind], case)


if __name__ == "__main__":
    run_driver("check_llama", {name: runner(c) for name, c in CASES.items()})
