"""torch_gpt2.py: the PyTorch reference of lorad's GPT-2 support.

  - GPT2Config: config.json as transformers writes it for GPT2LMHeadModel, and the model
    directories (config.json + model.safetensors, F32/F16/BF16, with or without the
    "transformer." prefix and the attention buffers of old checkpoints) with random weights;
  - the model in PyTorch (float64 by default), Hugging Face's math: LayerNorm, Conv1D
    (weights [in, out]), causal attention, tanh GELU, the head tied to wte; LoRA adapters
    on the four Conv1D modules, including lorad's sliced q/k/v adapters on c_attn;
  - PEFT adapters for it: target resolution (names, dotted suffixes, all-linear, q/k/v
    slices), lorad's export format (sliced targets exported as one block-diagonal c_attn
    adapter) and its inverse, and an independent PEFT merge (fan_in_fan_out: Conv1D).

Its peer is torch_llama.py; both train with torch_train.reference_train and share
harness.py's formats. check_gpt2.py runs lorad against this reference.

Run `python3 tests/torch_gpt2.py` to self-test this module (no lorad needed): model
directories, the model against torch's built-in layers, autograd against finite
differences, the PEFT applier against the unmerged model, and the trainer on this model.
"""

import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness import (PEFT_PREFIX, AdapterSpec, flags_config, peft_config, peft_module_scale,  # noqa: E402
                     peft_modules, peft_pair, peft_targeted, random_adapters, read_peft_dir, read_safetensors,
                     rel_err, random_weights, run_self_tests, step_batch, write_peft_dir, write_safetensors)
from torch_train import (Lora, TrainSpec, gradient_check, lora_delta, make_lora, masked_ce_sum,  # noqa: E402
                         reference_train, to_torch, to_torch_pairs)

# --------------------------------------------------------------------------------------
# config.json and model directories
# --------------------------------------------------------------------------------------


@dataclass
class GPT2Config:
    vocab_size: int
    n_positions: int
    n_embd: int
    n_head: int
    n_layer: int
    n_inner: Optional[int] = None  # None: written as null, meaning 4 * n_embd
    layer_norm_epsilon: float = 1e-5

    @property
    def hidden(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def to_json(self) -> dict:
        """config.json in the form transformers writes for GPT2LMHeadModel (plus extra keys
        a reader must ignore)."""
        return {
            "_name_or_path": "tiny-gpt2-test", "architectures": ["GPT2LMHeadModel"],
            "activation_function": "gelu_new", "attn_pdrop": 0.0, "bos_token_id": 0,
            "embd_pdrop": 0.0, "eos_token_id": 0, "initializer_range": 0.02,
            "layer_norm_epsilon": self.layer_norm_epsilon, "model_type": "gpt2",
            "n_ctx": self.n_positions, "n_embd": self.n_embd, "n_head": self.n_head,
            "n_inner": self.n_inner, "n_layer": self.n_layer, "n_positions": self.n_positions,
            "resid_pdrop": 0.0, "scale_attn_weights": True, "summary_type": "cls_index",
            "tie_word_embeddings": True, "torch_dtype": "float32",
            "transformers_version": "4.40.0", "use_cache": True,
            "vocab_size": self.vocab_size,
        }

    @staticmethod
    def from_json(d: dict) -> "GPT2Config":
        return GPT2Config(d["vocab_size"], d["n_positions"], d["n_embd"], d["n_head"],
                          d["n_layer"], d.get("n_inner"), d["layer_norm_epsilon"])


# The four Conv1D modules of a layer: (name inside h.{i}, in features, out features).
def layer_linears(cfg: GPT2Config) -> List[Tuple[str, int, int]]:
    C, H4 = cfg.n_embd, cfg.hidden
    return [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C),
            ("mlp.c_fc", C, H4), ("mlp.c_proj", H4, C)]


def module_path(layer: int, name: str) -> str:
    """PEFT module path, e.g. transformer.h.0.attn.c_attn."""
    return f"transformer.h.{layer}.{name}"


def all_modules(cfg: GPT2Config) -> List[Tuple[str, int, int]]:
    """(path, in, out) of every adaptable module, layer by layer."""
    return [(module_path(i, n), fin, fout) for i in range(cfg.n_layer) for n, fin, fout in layer_linears(cfg)]


def param_shapes(cfg: GPT2Config) -> Dict[str, Tuple[int, ...]]:
    """Every trainable tensor of the model (names without "transformer."), in file order."""
    C, V, P = cfg.n_embd, cfg.vocab_size, cfg.n_positions
    shapes = {"wte.weight": (V, C), "wpe.weight": (P, C)}
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        shapes[p + "ln_1.weight"] = (C,)
        shapes[p + "ln_1.bias"] = (C,)
        for name, fin, fout in layer_linears(cfg):
            if name == "mlp.c_fc":  # HF order: ln_2 comes before the MLP
                shapes[p + "ln_2.weight"] = (C,)
                shapes[p + "ln_2.bias"] = (C,)
            shapes[p + name + ".weight"] = (fin, fout)
            shapes[p + name + ".bias"] = (fout,)
    shapes["ln_f.weight"] = (C,)
    shapes["ln_f.bias"] = (C,)
    return shapes


def gpt2_init(name: str, shape: Tuple[int, ...]) -> Tuple[float, float]:
    """(mean, std) of a random tensor, large enough that attention, GELU and LayerNorm all
    do something."""
    if name in ("wte.weight", "wpe.weight"):
        return 0.0, 0.3 if name == "wte.weight" else 0.1
    if "ln_" in name and name.endswith(".weight"):
        return 1.0, 0.1
    return 0.0, 0.05 if name.endswith(".bias") else 0.6 / math.sqrt(shape[0])  # Conv1D weights: [in, out]


def random_gpt2_weights(cfg: GPT2Config, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return random_weights(param_shapes(cfg), rng, gpt2_init)


def write_model_dir(path: str, cfg: GPT2Config, weights: Dict[str, np.ndarray], dtype="F32",
                    prefix=True, buffers=False) -> None:
    """Writes PATH/config.json and PATH/model.safetensors with HF GPT-2 names.

    PREFIX adds "transformer."; BUFFERS adds the attention buffers h.{i}.attn.bias
    [1,1,P,P] and h.{i}.attn.masked_bias [] that old HF checkpoints carry.
    """
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg.to_json(), f, indent=2)
    pre = "transformer." if prefix else ""
    tensors, dtypes = {}, {}
    for name, arr in weights.items():
        tensors[pre + name] = arr
        dtypes[pre + name] = dtype
        if buffers and name.endswith("ln_1.bias"):
            layer = name.split(".")[1]
            P = cfg.n_positions
            tensors[f"{pre}h.{layer}.attn.bias"] = np.tril(np.ones((P, P))).reshape(1, 1, P, P)
            dtypes[f"{pre}h.{layer}.attn.bias"] = "F32"
            tensors[f"{pre}h.{layer}.attn.masked_bias"] = np.array(-1e4)
            dtypes[f"{pre}h.{layer}.attn.masked_bias"] = "F32"
    write_safetensors(os.path.join(path, "model.safetensors"), tensors, dtypes)


def read_model_dir(path: str) -> Tuple[GPT2Config, Dict[str, np.ndarray]]:
    """Reads a model directory back as (config, float64 weights named without the prefix),
    dropping the attention buffers. This is what the reference computes with, so F16/BF16
    files give the reference exactly the rounded values lorad sees."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = GPT2Config.from_json(json.load(f))
    raw, _ = read_safetensors(os.path.join(path, "model.safetensors"))
    weights = {}
    for name, arr in raw.items():
        short = name[len("transformer."):] if name.startswith("transformer.") else name
        if short.endswith(".attn.bias") or short.endswith(".attn.masked_bias"):
            continue
        weights[short] = arr
    return cfg, weights


def make_model(path: str, cfg: GPT2Config, rng: np.random.Generator, dtype="F32", prefix=True,
               buffers=False) -> Dict[str, np.ndarray]:
    """A model directory with random weights (write_model_dir's layouts); returns the
    weights as stored (rounded to DTYPE)."""
    write_model_dir(path, cfg, random_gpt2_weights(cfg, rng), dtype, prefix, buffers)
    cfg_back, base = read_model_dir(path)
    assert cfg_back == cfg and set(base) == set(param_shapes(cfg)), "test defect: model dir"
    return base


# --------------------------------------------------------------------------------------
# LoRA adapters (lorad's view: sliced q/k/v are separate adapters) and PEFT
# --------------------------------------------------------------------------------------

SLICE_NAMES = ("q", "k", "v")


def resolve_targets(cfg: GPT2Config, targets: List[str]) -> List[AdapterSpec]:
    """The adapters lorad creates for --targets: PEFT name/suffix matching on module paths,
    "all-linear" for all four, and q/k/v slices of c_attn. Empty when nothing matched."""
    C = cfg.n_embd
    specs = []
    for path, fin, fout in all_modules(cfg):
        if path.endswith(".attn.c_attn"):
            for k, s in enumerate(SLICE_NAMES):
                if s in targets:
                    specs.append(AdapterSpec(path, fin, k * C, (k + 1) * C, s))
        if "all-linear" in targets or any(path == t or path.endswith("." + t) for t in targets):
            specs.append(AdapterSpec(path, fin, 0, fout))
    return specs


def target_names(targets: List[str]) -> List[str]:
    """adapter_config.json target_modules for --targets: q/k/v as c_attn, all-linear as
    the module names."""
    names = [t for t in targets if t not in SLICE_NAMES]
    if any(t in SLICE_NAMES for t in targets):
        names.append("c_attn")
    return ["c_attn", "c_proj", "c_fc"] if "all-linear" in names else names


def export_adapters(specs: List[AdapterSpec], params: Dict[str, Tuple[np.ndarray, np.ndarray]],
                    targets: List[str], r: int, alpha: float, rslora: bool,
                    base_model="", rank_pattern=(), alpha_pattern=()) -> Tuple[dict, Dict[str, np.ndarray]]:
    """lorad's PEFT export: (adapter_config dict, tensors by PEFT key).

    Each module's rank and alpha are PEFT's for the flags (RANK_PATTERN / ALPHA_PATTERN:
    (key, value) pairs in the flags' order, first match wins). Sliced q/k/v adapters of a
    c_attn of rank r become one adapter of rank n*r: A stacked in q,k,v order [n*r, C]
    and B [3C, n*r] holding slice k's B in its rows and its column block; rank_pattern /
    alpha_pattern entries placed before the flags' keep every slice's scale alpha/r
    (rsLoRA: alpha/sqrt(r)): one "c_attn" entry when every sliced c_attn has the same
    rank and scale, else one "h.N.attn.c_attn" entry per layer.
    """
    flags = flags_config(r, alpha, rslora, rank_pattern, alpha_pattern)
    tensors, modules, sliced = {}, [], []
    for sp in specs:
        if sp.module not in modules:
            modules.append(sp.module)
    for mod in modules:
        mine = [sp for sp in specs if sp.module == mod]
        out = 3 * mine[0].fan_in if mod.endswith("c_attn") else max(sp.hi for sp in mine)
        n = len(mine)
        rm, _, s = peft_module_scale(flags, mod)
        A = np.concatenate([params[sp.key][0] for sp in mine], axis=0)
        B = np.zeros((out, n * rm))
        for k, sp in enumerate(mine):
            B[sp.lo:sp.hi, k * rm:(k + 1) * rm] = params[sp.key][1]
        tensors[f"{PEFT_PREFIX}{mod}.lora_A.weight"] = A
        tensors[f"{PEFT_PREFIX}{mod}.lora_B.weight"] = B
        if mine[0].slice:
            sliced.append((mod[len("transformer."):], n * rm,
                           s * (math.sqrt(n * rm) if rslora else n * rm)))
    rank_pattern_out, alpha_pattern_out = {}, {}
    uniform = len({(n_r, a) for _, n_r, a in sliced}) <= 1
    for key, n_r, a in (sliced[:1] if uniform else sliced):
        rank_pattern_out["c_attn" if uniform else key] = n_r
        alpha_pattern_out["c_attn" if uniform else key] = a
    for key, val in rank_pattern:  # the first entry of a key wins, as in a JSON object
        rank_pattern_out.setdefault(key, val)
    for key, val in alpha_pattern:
        alpha_pattern_out.setdefault(key, val)
    config = peft_config(base_model, r, alpha, rslora, target_names(targets), True, rank_pattern_out,
                         alpha_pattern_out)
    return config, tensors


def import_adapters(specs: List[AdapterSpec],
                    tensors: Dict[str, np.ndarray]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The inverse of export_adapters: block-form tensors back to one (A, B) per spec (the
    n adapters of a module share its A's rows equally)."""
    params = {}
    for sp in specs:
        mine = [x for x in specs if x.module == sp.module]
        k = mine.index(sp)
        A = tensors[f"{PEFT_PREFIX}{sp.module}.lora_A.weight"]
        B = tensors[f"{PEFT_PREFIX}{sp.module}.lora_B.weight"]
        rr = A.shape[0] // len(mine)
        params[sp.key] = (A[k * rr:(k + 1) * rr].copy(), B[sp.lo:sp.hi, k * rr:(k + 1) * rr].copy())
    return params


def random_peft_tensors(cfg: GPT2Config, config: dict, modules: List[str], rng: np.random.Generator,
                        a_std=0.2, delta_std=0.05) -> Dict[str, np.ndarray]:
    """Random PEFT tensors for MODULES (paths like transformer.h.0.mlp.c_fc) of any PEFT
    CONFIG: A [r, in] and NON-ZERO B [out, r] with each module's r and scale after
    rank_pattern / alpha_pattern / use_rslora, each entry of s*B@A about DELTA_STD."""
    sizes = {path: (fin, fout) for path, fin, fout in all_modules(cfg)}
    tensors = {}
    for mod in modules:
        fin, fout = sizes[mod]
        r, _, s = peft_module_scale(config, mod)
        b_std = delta_std / (abs(s) * math.sqrt(r) * a_std)
        tensors[f"{PEFT_PREFIX}{mod}.lora_A.weight"] = rng.normal(0.0, a_std, (r, fin))
        tensors[f"{PEFT_PREFIX}{mod}.lora_B.weight"] = rng.normal(0.0, b_std, (fout, r))
    return tensors


def peft_merge(cfg: GPT2Config, base: Dict[str, np.ndarray], config: dict,
               tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Merges a PEFT adapter into base weights the way PEFT does for GPT-2's Conv1D
    (fan_in_fan_out): W[in,out] += scale * (B @ A)^T. Raises ValueError on any tensor or
    shape PEFT would not accept."""
    merged = {k: v.copy() for k, v in base.items()}
    for mod in peft_modules(tensors):
        if not mod.startswith("transformer."):
            raise ValueError(f"adapter module {mod} lacks the transformer. prefix")
        wname = mod[len("transformer."):] + ".weight"
        if wname not in base:
            raise ValueError(f"adapter module {mod} is not a module of the model")
        fin, fout = base[wname].shape
        A, B, s = peft_pair(config, tensors, mod, fin, fout)
        merged[wname] = merged[wname] + s * (B @ A).T
    return merged


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------

def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased
    return (x - mu) / torch.sqrt(var + eps) * w + b


def conv1d(x, W, layer: int, name: str, lora: Optional[Lora]):
    """y = x @ W0 + b, plus s * (x @ A^T) @ B^T on columns [lo, hi) per adapter."""
    p = f"h.{layer}.{name}"
    w0 = W[p + ".weight"]
    y = x @ w0 + W[p + ".bias"]
    return lora_delta(y, x, w0.shape[1], (lora or {}).get(module_path(layer, name), []))


def gpt2_logits(cfg: GPT2Config, W: Dict[str, torch.Tensor], idx: torch.Tensor,
                lora: Optional[Lora] = None) -> torch.Tensor:
    """Logits [B,T,V] of GPT-2 with weights W (torch tensors, names without prefix)."""
    Bsz, T = idx.shape
    C, H, eps = cfg.n_embd, cfg.n_head, cfg.layer_norm_epsilon
    hd = C // H
    x = W["wte.weight"][idx] + W["wpe.weight"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        a = layer_norm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        q, k, v = conv1d(a, W, i, "attn.c_attn", lora).split(C, dim=-1)
        q, k, v = (t.view(Bsz, T, H, hd).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(Bsz, T, C)
        x = x + conv1d(y, W, i, "attn.c_proj", lora)
        m = layer_norm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        x = x + conv1d(gelu_tanh(conv1d(m, W, i, "mlp.c_fc", lora)), W, i, "mlp.c_proj", lora)
    x = layer_norm(x, W["ln_f.weight"], W["ln_f.bias"], eps)
    return x @ W["wte.weight"].t()


# --------------------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------------------

def _selftest_model_vs_torch_layers(cfg, W) -> None:
    """Our explicit formulas against torch's built-in layers (an independent forward)."""
    idx = torch.randint(0, cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(3))
    ours = gpt2_logits(cfg, W, idx)
    C, H, T = cfg.n_embd, cfg.n_head, idx.shape[1]
    x = W["wte.weight"][idx] + W["wpe.weight"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        mha = torch.nn.MultiheadAttention(C, H, batch_first=True, dtype=torch.float64)
        with torch.no_grad():
            mha.in_proj_weight.copy_(W[p + "attn.c_attn.weight"].t())
            mha.in_proj_bias.copy_(W[p + "attn.c_attn.bias"])
            mha.out_proj.weight.copy_(W[p + "attn.c_proj.weight"].t())
            mha.out_proj.bias.copy_(W[p + "attn.c_proj.bias"])
        a = F.layer_norm(x, (C,), W[p + "ln_1.weight"], W[p + "ln_1.bias"], cfg.layer_norm_epsilon)
        x = x + mha(a, a, a, attn_mask=mask, need_weights=False)[0]
        m = F.layer_norm(x, (C,), W[p + "ln_2.weight"], W[p + "ln_2.bias"], cfg.layer_norm_epsilon)
        h = F.gelu(F.linear(m, W[p + "mlp.c_fc.weight"].t(), W[p + "mlp.c_fc.bias"]),
                   approximate="tanh")
        x = x + F.linear(h, W[p + "mlp.c_proj.weight"].t(), W[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), W["ln_f.weight"], W["ln_f.bias"], cfg.layer_norm_epsilon)
    theirs = F.linear(x, W["wte.weight"])
    err = (ours - theirs).abs().max().item()
    assert err < 1e-10, f"model differs from torch layers by {err}"


def _selftest_finite_differences(cfg, base, rng) -> None:
    """Autograd gradients of the masked step loss against central differences (float64),
    for sliced and whole-module adapters and for base tensors (full mode)."""
    specs = resolve_targets(cfg, ["q", "v", "mlp.c_proj"])
    gradient_check(gpt2_logits, cfg, base, specs, rng, lambda W, P, inp, tgt: [
        (P[specs[0].key][0], (1, 5)), (P[specs[0].key][1], (7, 2)),
        (P[specs[1].key][1], (3, 0)), (P[specs[2].key][0], (2, 39)),
        (W["wte.weight"], (4, 3)), (W["wpe.weight"], (2, 1)),
        (W["h.0.attn.c_attn.bias"], (40,)), (W["h.1.ln_2.weight"], (6,)),
        (W["h.0.mlp.c_fc.weight"], (3, 17)), (W["ln_f.bias"], (9,))])


def _selftest_peft_export(tmp, cfg, base, rng) -> None:
    """Export -> write -> read -> PEFT merge gives the same logits as the unmerged model
    with lorad-style (sliced) adapters, and import inverts export."""
    idx = torch.tensor(rng.integers(0, cfg.vocab_size, (2, 10)))
    cases = [(["c_attn"], 4, 8, False), (["q", "v"], 4, 16, True), (["k"], 2, 3, False),
             (["q", "k", "v"], 2, 5, True), (["all-linear"], 2, 4, False),
             (["mlp.c_fc", "attn.c_proj"], 3, 6, True), (["c_proj"], 2, 2, False),
             # per-module ranks and alphas: whole modules, then slices whose c_attn
             # differ between layers (per-layer keys) or agree (one c_attn key)
             (["c_attn", "mlp.c_fc", "attn.c_proj"], 4, 8, False,
              (("h.0.attn.c_attn", 2), ("c_fc", 6)), (("c_fc", 3), ("attn.c_proj", 5))),
             (["q", "v", "mlp.c_fc"], 2, 5, True, (("h.1.attn.c_attn", 3), ("c_fc", 4)),
              (("c_fc", 7), ("h.0.mlp.c_fc", 1))),
             (["k", "c_proj"], 2, 4, False, (("c_attn", 3), ("c_proj", 1)), (("c_attn", 9),))]
    mods_all = [path for path, _, _ in all_modules(cfg)]
    for targets, r, alpha, rs, *patterns in cases:
        rank_pattern, alpha_pattern = patterns or ((), ())
        specs = resolve_targets(cfg, targets)
        flags = flags_config(r, alpha, rs, rank_pattern, alpha_pattern)
        rank_of = lambda mod: peft_module_scale(flags, mod)[0]  # noqa: E731
        scale = lambda mod: peft_module_scale(flags, mod)[2]  # noqa: E731
        params = random_adapters(specs, rank_of, scale, rng)
        config, tensors = export_adapters(specs, params, targets, r, alpha, rs, "",
                                          rank_pattern, alpha_pattern)
        d = os.path.join(tmp, "peft_" + "_".join(targets))
        write_peft_dir(d, config, tensors, "F64")
        config2, tensors2 = read_peft_dir(d)
        mods = sorted({sp.module for sp in specs})
        assert sorted(peft_targeted(config2, mods_all)) == mods, targets
        for sp in specs:
            n = sum(x.module == sp.module for x in specs)
            got_r, _, got_s = peft_module_scale(config2, sp.module)
            assert abs(got_s - scale(sp.module)) < 1e-12 * scale(sp.module), (targets, sp.module)
            assert got_r == n * rank_of(sp.module), (targets, sp.module, got_r)
        if patterns:  # the patterns make a difference
            assert len({(rank_of(sp.module), scale(sp.module)) for sp in specs}) > 1, targets
        back = import_adapters(specs, tensors2)
        for k in params:
            assert np.array_equal(back[k][0], params[k][0]) and np.array_equal(back[k][1], params[k][1])
        merged = gpt2_logits(cfg, to_torch(peft_merge(cfg, base, config2, tensors2)), idx)
        unmerged = gpt2_logits(cfg, to_torch(base), idx, make_lora(specs, to_torch_pairs(params), scale))
        plain = gpt2_logits(cfg, to_torch(base), idx)
        err = (merged - unmerged).abs().max().item()
        assert err < 1e-10, f"{targets}: merged vs unmerged {err}"
        assert (plain - unmerged).abs().max().item() > 1e-3, f"{targets}: adapter does nothing"


def _selftest_training(cfg, base, rng) -> None:
    """Micro-batching does not change the trajectory; parameters move."""
    specs = resolve_targets(cfg, ["q", "v"])
    ts = TrainSpec(targets=("q", "v"), rank=2, alpha=4, rslora=True, steps=4, batch=4,
                   micro_batch=4, seq=8, lr=1e-2, schedule="linear", warmup=1, clip=0.5,
                   weight_decay=0.1)
    init = random_adapters(specs, 2, ts.scale, rng)
    tokens = rng.integers(0, cfg.vocab_size, 60)
    mask = (rng.random(60) > 0.4).astype(np.uint8)
    val = (rng.integers(0, cfg.vocab_size, 7 * 8 + 3), (rng.random(59) > 0.5).astype(np.uint8))
    a = reference_train(gpt2_logits, cfg, base, tokens, mask, ts, init, specs, val=val)
    ts.micro_batch = 1
    b = reference_train(gpt2_logits, cfg, base, tokens, mask, ts, init, specs, val=val)
    assert max(abs(x - y) for x, y in zip(a.losses, b.losses)) < 1e-12
    assert all(rel_err(a.params[k][1], b.params[k][1]) < 1e-10 for k in a.params)
    assert all(rel_err(a.params[k][1], init[k][1]) > 0.05 for k in a.params)
    assert a.lrs[0] == 0.0 and a.lrs[1] == 1e-2
    # Validation: at the initial and the final parameters, whatever the micro-batching;
    # the loss of the whole set is the step loss of a batch holding every sample once.
    assert sorted(a.val_losses) == [0, 1, 2, 3, 4] == sorted(b.val_losses)
    assert all(abs(a.val_losses[k] - b.val_losses[k]) < 1e-12 for k in a.val_losses)
    for params, step in ((init, 0), (a.params, 4)):
        lora = make_lora(specs, to_torch_pairs(params), ts.scale)
        inp, tgt, w = step_batch(val[0], val[1], ts.seq, 7, 0)
        whole = masked_ce_sum(gpt2_logits(cfg, to_torch(base), torch.tensor(inp), lora),
                              torch.tensor(tgt), torch.tensor(w)).item() / w.sum()
        assert abs(a.val_losses[step] - whole) < 1e-12 * whole, step
    assert abs(a.val_losses[4] - a.val_losses[0]) > 1e-3


def _selftest_model_dir(tmp, cfg, base) -> None:
    md = os.path.join(tmp, "model")
    write_model_dir(md, cfg, base, "BF16", prefix=False, buffers=True)
    cfg2, w2 = read_model_dir(md)
    assert cfg2 == cfg and set(w2) == set(base)
    rounded = torch.tensor(base["wte.weight"], dtype=torch.float32).to(torch.bfloat16)
    assert np.array_equal(w2["wte.weight"], rounded.double().numpy())


def self_test() -> None:
    import tempfile
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    cfg = GPT2Config(vocab_size=53, n_positions=24, n_embd=16, n_head=4, n_layer=2, n_inner=40)
    base = random_gpt2_weights(cfg, rng)
    with tempfile.TemporaryDirectory() as tmp:
        steps = [("model vs torch layers", lambda: _selftest_model_vs_torch_layers(cfg, to_torch(base))),
                 ("finite differences", lambda: _selftest_finite_differences(cfg, base, rng)),
                 ("PEFT export/merge", lambda: _selftest_peft_export(tmp, cfg, base, rng)),
                 ("training", lambda: _selftest_training(cfg, base, rng)),
                 ("model dir", lambda: _selftest_model_dir(tmp, cfg, base))]
        run_self_tests("torch_gpt2", steps)


if __name__ == "__main__":
    self_test()
