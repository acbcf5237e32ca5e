"""gpt2_ref.py: the shared machinery of lorad's Python reference tests.

It holds everything the drivers (ref_gpt2.py, bad_input.py, mpi_train.py, ckpt_resume.py)
need and nothing that is specific to one of them:

  - safetensors: a writer and a validating reader (F32, F16, BF16, I32, ...), written here
    from the published format because no safetensors package is available;
  - Hugging Face GPT-2 model directories (config.json + model.safetensors) with random
    weights, and token datasets (llm.c .bin with uint16/uint32 tokens, HDF5), their sample
    windows, and samples made independent of each other so that they can be reordered;
  - a tiny GPT-2 in PyTorch (float64 by default) with LoRA adapters, including lorad's
    sliced q/k/v adapters on c_attn;
  - the reference trainer: torch.optim.AdamW, clip_grad_norm_, LambdaLR with the HF
    schedules, loss = sum of counted cross-entropies / number of counted targets, and the
    validation loss of a whole dataset after every step (the model's forward is a
    parameter, GPT-2's by default, so llama_ref.py trains the Llama family with it);
  - PEFT adapter directories: lorad's export format (sliced targets exported as one
    block-diagonal c_attn adapter) and an independent applier with PEFT semantics
    (rank/alpha patterns, rsLoRA, fan_in_fan_out) that merges an adapter into the base;
  - running the lorad binary, collecting failures, and the main() every driver shares
    (run_driver: --lorad, --workdir and --case).

Run `python3 tests/gpt2_ref.py` to self-test this module (no lorad needed): safetensors
round trips, the model against torch's built-in layers, autograd against finite
differences, the PEFT applier against the unmerged model, schedules, data windows and
the validation loss.
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------

# dtype name -> (numpy little-endian type or None for BF16, bytes per element)
ST_DTYPES = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U8": ("u1", 1), "BOOL": ("u1", 1),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Rounds to bfloat16 (nearest even, via float32) and returns the uint16 bit patterns."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_bits_to_f64(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def encode_tensor(arr: np.ndarray, dtype: str) -> bytes:
    """Raw little-endian bytes of ARR stored as DTYPE."""
    if dtype == "BF16":
        return f32_to_bf16_bits(arr).astype("<u2").tobytes()
    return np.ascontiguousarray(arr).astype(ST_DTYPES[dtype][0]).tobytes()


def safetensors_bytes(tensors: List[Tuple[str, str, List[int], bytes]],
                      metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Assembles a safetensors file from (name, dtype, shape, raw bytes) entries, in order.

    The JSON header is padded with spaces to a multiple of 8 bytes, as HF's writer does.
    """
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + b"".join(t[3] for t in tensors)


def write_safetensors(path: str, tensors: Dict[str, np.ndarray], dtype="F32",
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes TENSORS (name -> array, in dict order). DTYPE is one name or a name -> dtype dict."""
    entries = []
    for name, arr in tensors.items():
        dt = dtype[name] if isinstance(dtype, dict) else dtype
        entries.append((name, dt, list(np.shape(arr)), encode_tensor(np.asarray(arr), dt)))
    with open(path, "wb") as f:
        f.write(safetensors_bytes(entries, {"format": "pt"} if metadata is None else metadata))


def read_safetensors_raw(path: str) -> Tuple[dict, bytes]:
    """Returns (header dict, data buffer), validating the layout like a strict reader would."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(blob[8:8 + n].decode())
    data = blob[8 + n:]
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unknown dtype {dt}")
        if b - a != int(np.prod(shape, dtype=np.int64)) * ST_DTYPES[dt][1]:
            raise ValueError(f"{path}: tensor {name}: size does not match shape")
        spans.append((a, b, name))
    spans.sort()
    pos = 0
    for a, b, name in spans:
        if a != pos:
            raise ValueError(f"{path}: tensor {name}: offsets do not tile the data")
        pos = b
    if pos != len(data):
        raise ValueError(f"{path}: data buffer does not end at the end of the file")
    return header, data


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Reads every tensor: (name -> array, float64 for floating dtypes; name -> dtype)."""
    header, data = read_safetensors_raw(path)
    out, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
        raw = data[a:b]
        if dt == "BF16":
            arr = bf16_bits_to_f64(np.frombuffer(raw, dtype="<u2"))
        else:
            arr = np.frombuffer(raw, dtype=ST_DTYPES[dt][0])
            arr = arr.astype(np.float64) if dt in FLOAT_DTYPES else arr.copy()
        out[name] = arr.reshape(shape)
        dtypes[name] = dt
    return out, dtypes


# --------------------------------------------------------------------------------------
# GPT-2 model directories
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


def random_gpt2_weights(cfg: GPT2Config, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Random weights large enough that attention, GELU and LayerNorm all do something."""
    w = {}
    for name, shape in param_shapes(cfg).items():
        if name == "wte.weight":
            w[name] = rng.normal(0.0, 0.3, shape)
        elif name == "wpe.weight":
            w[name] = rng.normal(0.0, 0.1, shape)
        elif "ln_" in name and name.endswith(".weight"):
            w[name] = 1.0 + rng.normal(0.0, 0.1, shape)
        elif name.endswith(".bias"):
            w[name] = rng.normal(0.0, 0.05, shape)
        else:  # Conv1D weights, [in, out]
            w[name] = rng.normal(0.0, 0.6 / math.sqrt(shape[0]), shape)
    return w


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


def read_weights_dir(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str], Dict[str, str]]:
    """Every tensor of a HF weights directory as stored (names as in the files): PATH/
    model.safetensors, or the shards that PATH/model.safetensors.index.json names. Returns
    (name -> float64/int array, name -> dtype, name -> file name); a tensor held by two
    files, or an index entry naming a file that lacks it, raises ValueError."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors, dtypes, where = {}, {}, {}
    for name in files:
        t, d = read_safetensors(os.path.join(path, name))
        for k in t:
            if k in tensors:
                raise ValueError(f"{path}: tensor {k} is in both {where[k]} and {name}")
            tensors[k], dtypes[k], where[k] = t[k], d[k], name
    return tensors, dtypes, where


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


# --------------------------------------------------------------------------------------
# Token datasets
# --------------------------------------------------------------------------------------

def bin_bytes(tokens: np.ndarray, u32=False, magic=None, version=None, count=None) -> bytes:
    """An llm.c .bin shard: 256 int32 header [magic, version, count, 0...] then the tokens.
    MAGIC/VERSION/COUNT override the header fields (for corrupt files)."""
    hdr = np.zeros(256, dtype="<i4")
    hdr[0] = (20240801 if u32 else 20240520) if magic is None else magic
    hdr[1] = (2 if u32 else 1) if version is None else version
    hdr[2] = len(tokens) if count is None else count
    return hdr.tobytes() + np.asarray(tokens).astype("<u4" if u32 else "<u2").tobytes()


def write_bin(path: str, tokens: np.ndarray, u32=False, **overrides) -> None:
    with open(path, "wb") as f:
        f.write(bin_bytes(tokens, u32, **overrides))


def write_h5(path: str, tokens: np.ndarray, mask: Optional[np.ndarray] = None,
             tokens_dtype="int32", tokens_name="tokens") -> None:
    """HDF5 dataset: 1-D /tokens of TOKENS_DTYPE and optionally /loss_mask (uint8)."""
    import h5py
    with h5py.File(path, "w") as f:
        f.create_dataset(tokens_name, data=np.asarray(tokens, dtype=tokens_dtype))
        if mask is not None:
            f.create_dataset("loss_mask", data=np.asarray(mask, dtype=np.uint8))


def n_samples(tokens: np.ndarray, T: int) -> int:
    """Samples of a dataset: sample i is the window of T+1 tokens starting at i*T."""
    return (len(tokens) - 1) // T


def sample_windows(tokens: np.ndarray, mask: Optional[np.ndarray], T: int, idx: List[int]):
    """Samples IDX as inputs [n,T], targets [n,T] (int64) and the 0/1 loss weights [n,T] of
    the targets (target j of sample i is token i*T+1+j; it counts iff its mask byte != 0)."""
    win = np.stack([tokens[i * T:i * T + T + 1] for i in idx]).astype(np.int64)
    if mask is None:
        w = np.ones((len(idx), T))
    else:
        w = np.stack([(mask[i * T + 1:i * T + T + 1] != 0) for i in idx]).astype(np.float64)
    return win[:, :-1], win[:, 1:], w


def step_batch(tokens: np.ndarray, mask: Optional[np.ndarray], T: int, G: int, step: int):
    """The batch of STEP (0-based) with shuffle off: samples (step*G + g) mod N."""
    N = n_samples(tokens, T)
    return sample_windows(tokens, mask, T, [(step * G + g) % N for g in range(G)])


def isolate_samples(mask: np.ndarray, T: int) -> np.ndarray:
    """A copy of MASK with the last target of every sample (tokens T, 2T, ...) uncounted, so
    that each sample's counted loss depends on its own T tokens only. Token 0, never a
    target, is cleared too, so that the property survives permute_samples."""
    out = np.array(mask, dtype=np.uint8)
    out[::T] = 0
    return out


def permute_samples(tokens: np.ndarray, mask: np.ndarray, T: int,
                    perm) -> Tuple[np.ndarray, np.ndarray]:
    """Reorders the T-token blocks of samples so that new sample j is old sample PERM[j]
    (tokens past the last whole block stay put). With an isolate_samples mask, every
    sample keeps exactly its inputs and counted targets."""
    N = n_samples(tokens, T)
    assert sorted(perm) == list(range(N)), "not a permutation of the samples"
    blocks = np.asarray(perm)[:, None] * T + np.arange(T)
    idx = np.concatenate([blocks.reshape(-1), np.arange(N * T, len(tokens))])
    return tokens[idx].copy(), mask[idx].copy()


# --------------------------------------------------------------------------------------
# LoRA adapters (lorad's view: sliced q/k/v are separate adapters)
# --------------------------------------------------------------------------------------

SLICE_NAMES = ("q", "k", "v")


@dataclass
class AdapterSpec:
    """One trainable adapter: on MODULE (PEFT path), output columns [lo, hi)."""
    module: str
    fan_in: int
    lo: int
    hi: int
    slice: Optional[str] = None  # "q", "k", "v" for sliced c_attn adapters

    @property
    def key(self) -> str:
        return self.module + (f"[{self.slice}]" if self.slice else "")


def resolve_targets(cfg: GPT2Config, targets: List[str]) -> List[AdapterSpec]:
    """The adapters lorad creates for --targets: PEFT name/suffix matching on module paths,
    "all-linear" for all four, and q/k/v slices of c_attn. Empty when nothing matched."""
    C = cfg.n_embd
    specs = []
    for i in range(cfg.n_layer):
        for name, fin, fout in layer_linears(cfg):
            path = module_path(i, name)
            if name == "attn.c_attn":
                for k, s in enumerate(SLICE_NAMES):
                    if s in targets:
                        specs.append(AdapterSpec(path, fin, k * C, (k + 1) * C, s))
            if "all-linear" in targets or any(path == t or path.endswith("." + t) for t in targets):
                specs.append(AdapterSpec(path, fin, 0, fout))
    return specs


def lora_scale(alpha: float, r: int, rslora: bool) -> float:
    return alpha / math.sqrt(r) if rslora else alpha / r


# A rank or a scale: one value for every adapter, or a function of the module path (the
# per-module values of --rank-pattern / --alpha-pattern, see TrainSpec.module_rank).
PerModule = Union[int, float, Callable[[str], float]]


def per_module(x: PerModule, module: str):
    """X's value for MODULE."""
    return x(module) if callable(x) else x


def random_adapters(specs: List[AdapterSpec], r: PerModule, scale: PerModule,
                    rng: np.random.Generator, a_std=0.2,
                    delta_std=0.05) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Random A and NON-ZERO random B (so every path has a gradient from the first step),
    sized so that each entry of s*B@A has a standard deviation of about DELTA_STD. R and
    SCALE are numbers or functions of the module path (per-module ranks and scales)."""
    out = {}
    for sp in specs:
        rr, ss = per_module(r, sp.module), per_module(scale, sp.module)
        b_std = delta_std / (ss * math.sqrt(rr) * a_std)
        out[sp.key] = (rng.normal(0.0, a_std, (rr, sp.fan_in)),
                       rng.normal(0.0, b_std, (sp.hi - sp.lo, rr)))
    return out


def flags_config(r: int, alpha: float, rslora: bool, rank_pattern=(), alpha_pattern=()) -> dict:
    """The PEFT config fields that --rank, --alpha, --rslora, --rank-pattern and
    --alpha-pattern stand for (patterns as (key, value) pairs, in the flags' order; a key
    given twice keeps its first value, which is the one a first match would find)."""
    rp, ap = {}, {}
    for key, val in rank_pattern:
        rp.setdefault(key, val)
    for key, val in alpha_pattern:
        ap.setdefault(key, val)
    return {"r": r, "lora_alpha": alpha, "use_rslora": rslora, "rank_pattern": rp, "alpha_pattern": ap}


def export_adapters(specs: List[AdapterSpec], params: Dict[str, Tuple[np.ndarray, np.ndarray]],
                    cfg: GPT2Config, targets: List[str], r: int, alpha: float, rslora: bool,
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
        out = 3 * cfg.n_embd if mod.endswith("c_attn") else max(sp.hi for sp in mine)
        n = len(mine)
        rm, _, s = peft_module_scale(flags, mod)
        A = np.concatenate([params[sp.key][0] for sp in mine], axis=0)
        B = np.zeros((out, n * rm))
        for k, sp in enumerate(mine):
            B[sp.lo:sp.hi, k * rm:(k + 1) * rm] = params[sp.key][1]
        tensors[f"base_model.model.{mod}.lora_A.weight"] = A
        tensors[f"base_model.model.{mod}.lora_B.weight"] = B
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
    names = [t for t in targets if t not in SLICE_NAMES]
    if any(t in SLICE_NAMES for t in targets):
        names.append("c_attn")
    if "all-linear" in names:
        names = ["c_attn", "c_proj", "c_fc"]
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": r, "lora_alpha": alpha, "use_rslora": rslora, "target_modules": names,
        "fan_in_fan_out": True, "lora_dropout": 0.0, "bias": "none", "use_dora": False,
        "rank_pattern": rank_pattern_out, "alpha_pattern": alpha_pattern_out,
        "modules_to_save": None, "init_lora_weights": True,
    }
    return config, tensors


def import_adapters(specs: List[AdapterSpec], tensors: Dict[str, np.ndarray],
                    r: PerModule) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The inverse of export_adapters: block-form tensors back to one (A, B) per spec (R:
    the rank of every adapter, or a function of the module path)."""
    params = {}
    for sp in specs:
        mine = [x for x in specs if x.module == sp.module]
        k = mine.index(sp)
        rr = per_module(r, sp.module)
        A = tensors[f"base_model.model.{sp.module}.lora_A.weight"]
        B = tensors[f"base_model.model.{sp.module}.lora_B.weight"]
        params[sp.key] = (A[k * rr:(k + 1) * rr].copy(), B[sp.lo:sp.hi, k * rr:(k + 1) * rr].copy())
    return params


def write_peft_dir(path: str, config: dict, tensors: Dict[str, np.ndarray], dtype="F32") -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(path, "adapter_model.safetensors"), tensors, dtype)


def read_peft_dir(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    tensors, _ = read_safetensors(os.path.join(path, "adapter_model.safetensors"))
    return config, tensors


# ---- PEFT semantics, independent of lorad's slicing ---------------------------------

def random_peft_tensors(cfg: GPT2Config, config: dict, modules: List[str], rng: np.random.Generator,
                        a_std=0.2, delta_std=0.05) -> Dict[str, np.ndarray]:
    """Random PEFT tensors for MODULES (paths like transformer.h.0.mlp.c_fc) of any PEFT
    CONFIG: A [r, in] and NON-ZERO B [out, r] with each module's r and scale after
    rank_pattern / alpha_pattern / use_rslora, each entry of s*B@A about DELTA_STD."""
    sizes = {module_path(i, n): (fin, fout) for i in range(cfg.n_layer) for n, fin, fout in layer_linears(cfg)}
    tensors = {}
    for mod in modules:
        fin, fout = sizes[mod]
        r, _, s = peft_module_scale(config, mod)
        b_std = delta_std / (abs(s) * math.sqrt(r) * a_std)
        tensors[f"base_model.model.{mod}.lora_A.weight"] = rng.normal(0.0, a_std, (r, fin))
        tensors[f"base_model.model.{mod}.lora_B.weight"] = rng.normal(0.0, b_std, (fout, r))
    return tensors


def peft_key_matches(module: str, key: str) -> bool:
    """PEFT's module matching: the path equals KEY or ends with "." + KEY."""
    return module == key or module.endswith("." + key)


def peft_targeted(config: dict, modules: List[str]) -> List[str]:
    """The modules PEFT would adapt for the config's target_modules (a list of names, or a
    string: "all-linear" or a full-match regex)."""
    import re
    tm = config["target_modules"]
    if isinstance(tm, str):
        if tm == "all-linear":
            return list(modules)
        return [m for m in modules if re.fullmatch(tm, m)]
    return [m for m in modules if any(peft_key_matches(m, t) for t in tm)]


def peft_module_scale(config: dict, module: str) -> Tuple[int, float, float]:
    """(r, alpha, scale) of MODULE after rank_pattern / alpha_pattern (first matching key
    wins, as in PEFT); scale is alpha/r, or alpha/sqrt(r) with use_rslora."""
    r, alpha = config["r"], config["lora_alpha"]
    for key, val in (config.get("rank_pattern") or {}).items():
        if peft_key_matches(module, key):
            r = val
            break
    for key, val in (config.get("alpha_pattern") or {}).items():
        if peft_key_matches(module, key):
            alpha = val
            break
    return r, alpha, lora_scale(alpha, r, bool(config.get("use_rslora", False)))


def peft_merge(cfg: GPT2Config, base: Dict[str, np.ndarray], config: dict,
               tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Merges a PEFT adapter into base weights the way PEFT does for GPT-2's Conv1D
    (fan_in_fan_out): W[in,out] += scale * (B @ A)^T. Raises ValueError on any tensor or
    shape PEFT would not accept."""
    merged = {k: v.copy() for k, v in base.items()}
    pre = "base_model.model."
    seen = set()
    for key in tensors:
        for suffix in (".lora_A.weight", ".lora_B.weight"):
            if key.startswith(pre) and key.endswith(suffix):
                seen.add(key[len(pre):-len(suffix)])
                break
        else:
            raise ValueError(f"unexpected adapter tensor {key}")
    for mod in sorted(seen):
        if not mod.startswith("transformer."):
            raise ValueError(f"adapter module {mod} lacks the transformer. prefix")
        wname = mod[len("transformer."):] + ".weight"
        if wname not in base:
            raise ValueError(f"adapter module {mod} is not a module of the model")
        A, B = tensors[pre + mod + ".lora_A.weight"], tensors[pre + mod + ".lora_B.weight"]
        fin, fout = base[wname].shape
        r, _, s = peft_module_scale(config, mod)
        if A.shape != (r, fin) or B.shape != (fout, r):
            raise ValueError(f"{mod}: A {A.shape} / B {B.shape} do not fit r={r}, "
                             f"in={fin}, out={fout}")
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


# Adapters for the forward pass: module path -> list of (lo, hi, A, B, scale).
Lora = Dict[str, List[tuple]]


def make_lora(specs: List[AdapterSpec], params: Dict[str, tuple], scale: PerModule) -> Lora:
    """SCALE: one scale for every adapter, or a function of the module path."""
    lora: Lora = {}
    for sp in specs:
        A, B = params[sp.key]
        lora.setdefault(sp.module, []).append((sp.lo, sp.hi, A, B, per_module(scale, sp.module)))
    return lora


def conv1d(x, W, layer: int, name: str, lora: Optional[Lora]):
    """y = x @ W0 + b, plus s * (x @ A^T) @ B^T on columns [lo, hi) per adapter."""
    p = f"h.{layer}.{name}"
    w0 = W[p + ".weight"]
    y = x @ w0 + W[p + ".bias"]
    for lo, hi, A, B, s in (lora or {}).get(module_path(layer, name), []):
        d = s * ((x @ A.t()) @ B.t())
        y = y + F.pad(d, (lo, w0.shape[1] - hi))
    return y


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


def masked_ce(logits, targets, weights):
    """Cross-entropy of every target [B,T], times its 0/1 loss weight."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                         reduction="none")
    return ce.reshape(targets.shape) * weights


def masked_ce_sum(logits, targets, weights):
    """Sum of the cross-entropies of the counted targets."""
    return masked_ce(logits, targets, weights).sum()


def to_torch(weights: Dict[str, np.ndarray], dtype=torch.float64, grad=False):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=grad) for k, v in weights.items()}


# --------------------------------------------------------------------------------------
# The reference trainer
# --------------------------------------------------------------------------------------

@dataclass
class TrainSpec:
    """Everything about a training run that is not the model or the data."""
    mode: str = "lora"  # lora | full
    targets: Tuple[str, ...] = ()
    rank: int = 4
    alpha: float = 8.0
    rslora: bool = False
    steps: int = 10
    batch: int = 4
    micro_batch: int = 4
    seq: int = 16
    lr: float = 1e-2
    schedule: str = "constant"
    warmup: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float = 0.0
    seed: int = 1234
    eval_every: int = 0  # --eval-every (lorad's flag; the reference evaluates every step)
    # --rank-pattern / --alpha-pattern: (module key, value) pairs in the flags' order
    rank_pattern: Tuple[Tuple[str, int], ...] = ()
    alpha_pattern: Tuple[Tuple[str, float], ...] = ()

    @property
    def scale(self) -> float:
        """The scale of a module no pattern matches."""
        return lora_scale(self.alpha, self.rank, self.rslora)

    def flags_config(self) -> dict:
        return flags_config(self.rank, self.alpha, self.rslora, self.rank_pattern, self.alpha_pattern)

    def module_rank(self, module: str) -> int:
        """MODULE's rank (full path): the first matching --rank-pattern key's, else --rank."""
        return peft_module_scale(self.flags_config(), module)[0]

    def module_alpha(self, module: str) -> float:
        return peft_module_scale(self.flags_config(), module)[1]

    def module_scale(self, module: str) -> float:
        """MODULE's scale alpha/r (rsLoRA alpha/sqrt(r)) after the patterns."""
        return peft_module_scale(self.flags_config(), module)[2]


def lr_lambda(schedule: str, warmup: int, n_steps: int):
    """The multiplier of the base lr at step s (0-based), HF semantics."""
    def f(s: int) -> float:
        if schedule == "constant":
            return min(1.0, s / warmup) if warmup > 0 else 1.0
        if s < warmup:
            return s / max(1, warmup)
        if schedule == "linear":
            return max(0.0, (n_steps - s) / max(1, n_steps - warmup))
        if schedule == "cosine":
            prog = (s - warmup) / max(1, n_steps - warmup)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))
        raise ValueError(f"unknown schedule {schedule}")
    return f


def eval_steps(eval_every: int, n_steps: int) -> List[int]:
    """The 1-based steps after whose update lorad evaluates: the multiples of EVAL_EVERY
    (0: none) and the last step."""
    return sorted({s for s in range(1, n_steps + 1) if eval_every and s % eval_every == 0}
                  | {n_steps})


def sample_losses(cfg: GPT2Config, W: Dict[str, torch.Tensor], tokens: np.ndarray,
                  mask: Optional[np.ndarray], T: int, micro: int,
                  lora: Optional[Lora] = None,
                  logits_fn: Callable = gpt2_logits) -> Tuple[np.ndarray, np.ndarray]:
    """(sum of counted cross-entropies, counted targets) of every sample of a dataset:
    samples 0..N-1 in order, forward only, MICRO samples at a time. LOGITS_FN(cfg, W, idx,
    lora) is the model (GPT-2 unless another model's forward is given)."""
    N = n_samples(tokens, T)
    sums, counts = [], []
    with torch.no_grad():
        for lo in range(0, N, micro):
            inp, tgt, w = sample_windows(tokens, mask, T, list(range(lo, min(lo + micro, N))))
            logits = logits_fn(cfg, W, torch.tensor(inp), lora)
            ce = masked_ce(logits, torch.tensor(tgt), torch.tensor(w, dtype=logits.dtype))
            sums += ce.sum(-1).tolist()
            counts += w.sum(-1).tolist()
    return np.array(sums), np.array(counts)


def dataset_loss(cfg: GPT2Config, W: Dict[str, torch.Tensor], tokens: np.ndarray,
                 mask: Optional[np.ndarray], T: int, micro: int,
                 lora: Optional[Lora] = None, logits_fn: Callable = gpt2_logits) -> float:
    """lorad's validation loss: the counted cross-entropies of the whole dataset summed,
    over the number of counted targets of the whole dataset."""
    sums, counts = sample_losses(cfg, W, tokens, mask, T, micro, lora, logits_fn)
    return float(sums.sum() / counts.sum())


@dataclass
class TrainResult:
    losses: List[float]
    lrs: List[float]
    grad_norms: List[float]
    params: Dict[str, object]  # lora: key -> (A, B); full: name -> array (numpy)
    # with a validation set: step -> validation loss after its update (0: initial), every step
    val_losses: Dict[int, float] = field(default_factory=dict)


def reference_train(cfg: GPT2Config, base: Dict[str, np.ndarray], tokens: np.ndarray,
                    mask: Optional[np.ndarray], ts: TrainSpec,
                    init: Optional[Dict[str, tuple]] = None,
                    specs: Optional[List[AdapterSpec]] = None,
                    dtype=torch.float64,
                    val: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None,
                    logits_fn: Callable = gpt2_logits) -> TrainResult:
    """Runs TS.steps steps exactly as the contract says and records loss, lr and the
    pre-clip gradient norm of each step. LoRA mode trains the adapters INIT (by spec key);
    full mode trains every tensor of BASE. VAL (tokens, mask) adds the validation loss at
    the initial parameters and after every step's update (lorad reports it only after the
    steps of eval_steps(); the others tell a test whether it could see a wrong step).
    LOGITS_FN(cfg, W, idx, lora) is the model: GPT-2 unless another forward is given (the
    Llama family's, from llama_ref.py); CFG and BASE are that model's."""
    full = ts.mode == "full"
    W = to_torch(base, dtype, grad=full)
    if full:
        params = list(W.values())
        lora = None
    else:
        P = {k: (torch.tensor(a, dtype=dtype, requires_grad=True),
                 torch.tensor(b, dtype=dtype, requires_grad=True)) for k, (a, b) in init.items()}
        params = [t for ab in P.values() for t in ab]
        lora = make_lora(specs, P, ts.module_scale)
    opt = torch.optim.AdamW(params, lr=ts.lr, betas=(ts.beta1, ts.beta2), eps=ts.eps,
                            weight_decay=ts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(ts.schedule, ts.warmup, ts.steps))
    res = TrainResult([], [], [], {})

    def evaluate(step: int) -> None:
        res.val_losses[step] = dataset_loss(cfg, W, val[0], val[1], ts.seq, ts.micro_batch, lora,
                                            logits_fn)

    if val is not None:
        evaluate(0)
    for s in range(ts.steps):
        inp, tgt, w = step_batch(tokens, mask, ts.seq, ts.batch, s)
        count = w.sum()
        opt.zero_grad(set_to_none=False)
        loss = 0.0
        for lo in range(0, ts.batch, ts.micro_batch):  # micro-batches only split the work
            sl = slice(lo, lo + ts.micro_batch)
            logits = logits_fn(cfg, W, torch.tensor(inp[sl]), lora)
            part = masked_ce_sum(logits, torch.tensor(tgt[sl]), torch.tensor(w[sl], dtype=dtype))
            (part / count).backward()
            loss += part.item() / count
        gnorm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
        if ts.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, ts.clip)
        res.losses.append(loss)
        res.lrs.append(opt.param_groups[0]["lr"])
        res.grad_norms.append(gnorm)
        opt.step()
        sched.step()
        if val is not None:
            evaluate(s + 1)
    if full:
        res.params = {k: v.detach().double().numpy().copy() for k, v in W.items()}
    else:
        res.params = {k: (a.detach().double().numpy().copy(), b.detach().double().numpy().copy())
                      for k, (a, b) in P.items()}
    return res


# --------------------------------------------------------------------------------------
# Running lorad and reporting
# --------------------------------------------------------------------------------------

class Failures:
    """Collects failure messages so that a driver reports all of them, then exits 1."""

    def __init__(self, title: str):
        self.title, self.msgs = title, []

    def add(self, msg: str) -> None:
        self.msgs.append(msg)
        print(f"FAIL: {msg}", flush=True)

    def check(self, ok: bool, msg: str) -> bool:
        if not ok:
            self.add(msg)
        return ok

    def finish(self) -> None:
        if self.msgs:
            print(f"{self.title}: {len(self.msgs)} failure(s)", flush=True)
            sys.exit(1)
        print(f"{self.title}: PASS", flush=True)
        sys.exit(0)

    def abort(self, msg: str) -> None:
        self.add(msg)
        self.finish()


def require_lorad(path: str, fails: Failures) -> None:
    """A missing binary is a failure, never a skip."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        fails.abort(f"lorad binary not found or not executable: {path}")


def run_lorad(lorad: str, args: List[str], timeout=300) -> subprocess.CompletedProcess:
    """Runs `lorad ARGS...`; a timeout comes back as returncode None with a note in stderr."""
    cmd = [lorad] + [str(a) for a in args]
    print("+ " + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(cmd, None, "", err + f"\n[timed out after {timeout}s]")


# Open MPI refuses root without these and more ranks than cores without oversubscribe;
# it never frees some of its own allocations, so LeakSanitizer is off under mpirun only.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "ASAN_OPTIONS": "detect_leaks=0"}


def run_lorad_mpi(lorad: str, nprocs: int, args: List[str], env: Optional[Dict[str, str]] = None,
                  timeout=300) -> subprocess.CompletedProcess:
    """Runs `mpirun --oversubscribe -np NPROCS lorad ARGS...` with MPI_ENV (plus ENV); a
    timeout comes back as returncode None with a note in stderr, as run_lorad's."""
    cmd = ["mpirun", "--oversubscribe", "-np", str(nprocs), lorad] + [str(a) for a in args]
    print("+ " + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **MPI_ENV, **(env or {})))
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(cmd, None, "", err + f"\n[timed out after {timeout}s]")


def fmt_num(x) -> str:
    """A flag value: integers as integers, floats in round-trip form."""
    if isinstance(x, bool):
        raise TypeError("booleans are flags, not values")
    return str(x) if isinstance(x, int) else repr(float(x))


def read_metrics(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rel_err(a, b) -> float:
    """||a-b|| / ||b|| (scalars or arrays); 0 when both are zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    nb, nd = float(np.linalg.norm(b)), float(np.linalg.norm(a - b))
    if nb == 0.0:
        return 0.0 if nd == 0.0 else math.inf
    return nd / nb


def fresh_dir(path: str) -> str:
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


DriverCase = Callable[[Failures, str, str], None]


def run_driver(title: str, cases: Union[Dict[str, DriverCase], DriverCase]) -> None:
    """The main() of every driver script, run as `DRIVER --lorad PATH --workdir DIR
    [--case NAME]`. CASES maps each case name to a function (fails, lorad, work) and adds
    --case to pick one; a lone function is a driver without cases. A missing lorad binary
    is a failure, never a skip; the work directory starts empty; the run ends through
    Failures.finish (exit 1 listing every failure, or 0), reported as "TITLE [NAME]"."""
    ap = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lorad", required=True, help="the lorad binary")
    if isinstance(cases, dict):
        ap.add_argument("--case", required=True, choices=sorted(cases))
    ap.add_argument("--workdir", required=True, help="emptied first, then holds every file of the run")
    args = ap.parse_args()
    run = cases[args.case] if isinstance(cases, dict) else cases
    fails = Failures(f"{title} {args.case}" if isinstance(cases, dict) else title)
    lorad = os.path.abspath(args.lorad)
    require_lorad(lorad, fails)
    run(fails, lorad, fresh_dir(os.path.abspath(args.workdir)))
    fails.finish()


# --------------------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------------------

def _selftest_safetensors(tmp: str, rng) -> None:
    x = rng.normal(0, 1, (5, 7))
    # bf16 rounding agrees with torch's, and every dtype round-trips to the stored value.
    ours = bf16_bits_to_f64(f32_to_bf16_bits(x))
    theirs = torch.tensor(x, dtype=torch.float32).to(torch.bfloat16).double().numpy()
    assert np.array_equal(ours, theirs), "bf16 rounding differs from torch"
    for dt, ref in (("F32", x.astype(np.float32)), ("F16", x.astype(np.float16)),
                    ("BF16", theirs), ("F64", x)):
        p = os.path.join(tmp, f"t_{dt}.safetensors")
        write_safetensors(p, {"a": x, "s": np.array(3.0)}, dt)
        got, dts = read_safetensors(p)
        assert np.array_equal(got["a"], ref.astype(np.float64)) and dts["a"] == dt, dt
        assert got["s"].shape == () and got["s"] == 3.0
    p = os.path.join(tmp, "t_i32.safetensors")
    write_safetensors(p, {"i": np.arange(6).reshape(2, 3)}, "I32")
    got, _ = read_safetensors(p)
    assert got["i"].dtype == np.int32 and got["i"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    assert n % 8 == 0


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
    scale = lora_scale(8, 3, True)
    init = random_adapters(specs, 3, scale, rng)
    tokens = rng.integers(0, cfg.vocab_size, 80)
    mask = (rng.random(80) > 0.3).astype(np.uint8)
    inp, tgt, w = step_batch(tokens, mask, 9, 3, 2)

    def loss_of(Wt, P):
        logits = gpt2_logits(cfg, Wt, torch.tensor(inp), make_lora(specs, P, scale))
        return masked_ce_sum(logits, torch.tensor(tgt), torch.tensor(w)) / w.sum()

    Wt = to_torch(base, grad=True)
    P = {k: (torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True))
         for k, (a, b) in init.items()}
    loss_of(Wt, P).backward()
    probes = [(P[specs[0].key][0], (1, 5)), (P[specs[0].key][1], (7, 2)),
              (P[specs[1].key][1], (3, 0)), (P[specs[2].key][0], (2, 39)),
              (Wt["wte.weight"], (4, 3)), (Wt["wpe.weight"], (2, 1)),
              (Wt["h.0.attn.c_attn.bias"], (40,)), (Wt["h.1.ln_2.weight"], (6,)),
              (Wt["h.0.mlp.c_fc.weight"], (3, 17)), (Wt["ln_f.bias"], (9,))]
    h = 1e-6
    for t, ix in probes:
        with torch.no_grad():
            old = t[ix].item()
            t[ix] = old + h
            up = loss_of(Wt, P).item()
            t[ix] = old - h
            down = loss_of(Wt, P).item()
            t[ix] = old
        fd, ag = (up - down) / (2 * h), t.grad[ix].item()
        assert abs(fd - ag) <= 1e-6 * max(1.0, abs(ag)), f"grad {ix}: fd {fd} autograd {ag}"


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
    for targets, r, alpha, rs, *patterns in cases:
        rank_pattern, alpha_pattern = patterns or ((), ())
        specs = resolve_targets(cfg, targets)
        flags = flags_config(r, alpha, rs, rank_pattern, alpha_pattern)
        rank_of = lambda mod: peft_module_scale(flags, mod)[0]  # noqa: E731
        scale = lambda mod: peft_module_scale(flags, mod)[2]  # noqa: E731
        params = random_adapters(specs, rank_of, scale, rng)
        config, tensors = export_adapters(specs, params, cfg, targets, r, alpha, rs, "",
                                          rank_pattern, alpha_pattern)
        d = os.path.join(tmp, "peft_" + "_".join(targets))
        write_peft_dir(d, config, tensors, "F64")
        config2, tensors2 = read_peft_dir(d)
        mods = sorted({sp.module for sp in specs})
        all_mods = [module_path(i, n) for i in range(cfg.n_layer) for n, _, _ in layer_linears(cfg)]
        assert sorted(peft_targeted(config2, all_mods)) == mods, targets
        for sp in specs:
            n = sum(x.module == sp.module for x in specs)
            got_r, _, got_s = peft_module_scale(config2, sp.module)
            assert abs(got_s - scale(sp.module)) < 1e-12 * scale(sp.module), (targets, sp.module)
            assert got_r == n * rank_of(sp.module), (targets, sp.module, got_r)
        if patterns:  # the patterns make a difference
            assert len({(rank_of(sp.module), scale(sp.module)) for sp in specs}) > 1, targets
        back = import_adapters(specs, tensors2, rank_of)
        for k in params:
            assert np.array_equal(back[k][0], params[k][0]) and np.array_equal(back[k][1], params[k][1])
        merged = gpt2_logits(cfg, to_torch(peft_merge(cfg, base, config2, tensors2)), idx)
        unmerged = gpt2_logits(cfg, to_torch(base), idx, make_lora(specs, to_torch_pairs(params), scale))
        plain = gpt2_logits(cfg, to_torch(base), idx)
        err = (merged - unmerged).abs().max().item()
        assert err < 1e-10, f"{targets}: merged vs unmerged {err}"
        assert (plain - unmerged).abs().max().item() > 1e-3, f"{targets}: adapter does nothing"


def to_torch_pairs(params: Dict[str, tuple], dtype=torch.float64):
    return {k: (torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)) for k, (a, b) in params.items()}


def _selftest_schedules_and_data() -> None:
    f = lr_lambda("linear", 2, 10)
    assert [f(s) for s in (0, 1, 2, 3, 9)] == [0.0, 0.5, 1.0, 7 / 8, 1 / 8]
    f = lr_lambda("cosine", 3, 10)
    assert [f(s) for s in (0, 1, 3)] == [0.0, 1 / 3, 1.0]
    assert abs(f(9) - 0.5 * (1 + math.cos(math.pi * 6 / 7))) < 1e-15
    f = lr_lambda("constant", 4, 10)
    assert [f(s) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert lr_lambda("constant", 0, 10)(0) == 1.0
    tokens = np.arange(118)  # N = 117 // 16 = 7 samples
    mask = np.zeros(118, np.uint8)
    mask[16 * 6 + 1 + 3] = 200  # sample 6, target 3
    inp, tgt, w = step_batch(tokens, mask, 16, 5, 1)  # samples 5, 6, 0, 1, 2
    assert inp[0, 0] == 80 and tgt[0, 0] == 81 and inp[2, 0] == 0 and tgt[1, 15] == 16 * 7
    assert w.sum() == 1 and w[1, 3] == 1
    assert eval_steps(5, 10) == [5, 10] and eval_steps(0, 7) == [7] and eval_steps(4, 10) == [4, 8, 10]
    # Isolated samples keep their inputs and counted targets when reordered.
    rng = np.random.default_rng(5)
    tokens, T = rng.integers(0, 50, 118), 16
    iso = isolate_samples(np.ones(118, np.uint8), T)
    assert iso[0] == 0 and iso[T] == 0 and iso[T + 1] == 1 and iso.sum() == 118 - 8
    perm = [3, 0, 6, 1, 5, 2, 4]
    tokens2, iso2 = permute_samples(tokens, iso, T, perm)
    inp, tgt, w = sample_windows(tokens, iso, T, perm)
    inp2, tgt2, w2 = sample_windows(tokens2, iso2, T, list(range(7)))
    assert np.array_equal(inp, inp2) and np.array_equal(w, w2) and np.array_equal(tgt * w, tgt2 * w2)
    assert np.array_equal(tokens2[7 * T:], tokens[7 * T:]) and w.sum() == 7 * (T - 1)


def _selftest_bin_h5(tmp: str) -> None:
    import h5py
    t = np.array([5, 70000, 3])
    p = os.path.join(tmp, "t32.bin")
    write_bin(p, t, u32=True)
    raw = open(p, "rb").read()
    hdr = np.frombuffer(raw[:1024], "<i4")
    assert hdr[:3].tolist() == [20240801, 2, 3] and np.frombuffer(raw[1024:], "<u4").tolist() == t.tolist()
    write_bin(p, t[[0, 2]])
    hdr = np.frombuffer(open(p, "rb").read()[:1024], "<i4")
    assert hdr[:3].tolist() == [20240520, 1, 2] and os.path.getsize(p) == 1024 + 4
    p = os.path.join(tmp, "t.h5")
    write_h5(p, t, np.array([0, 1, 1]))
    with h5py.File(p) as f:
        assert f["tokens"].dtype == np.int32 and f["loss_mask"].dtype == np.uint8


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
    a = reference_train(cfg, base, tokens, mask, ts, init, specs, val=val)
    ts.micro_batch = 1
    b = reference_train(cfg, base, tokens, mask, ts, init, specs, val=val)
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


def self_test() -> None:
    import tempfile
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    cfg = GPT2Config(vocab_size=53, n_positions=24, n_embd=16, n_head=4, n_layer=2, n_inner=40)
    base = random_gpt2_weights(cfg, rng)
    with tempfile.TemporaryDirectory() as tmp:
        steps = [("safetensors", lambda: _selftest_safetensors(tmp, rng)),
                 ("bin/h5 writers", lambda: _selftest_bin_h5(tmp)),
                 ("model vs torch layers", lambda: _selftest_model_vs_torch_layers(cfg, to_torch(base))),
                 ("finite differences", lambda: _selftest_finite_differences(cfg, base, rng)),
                 ("PEFT export/merge", lambda: _selftest_peft_export(tmp, cfg, base, rng)),
                 ("schedules and data windows", _selftest_schedules_and_data),
                 ("training", lambda: _selftest_training(cfg, base, rng))]
        for name, fn in steps:
            fn()
            print(f"self-test {name}: ok", flush=True)
        md = os.path.join(tmp, "model")
        write_model_dir(md, cfg, base, "BF16", prefix=False, buffers=True)
        cfg2, w2 = read_model_dir(md)
        assert cfg2 == cfg and set(w2) == set(base)
        rounded = torch.tensor(base["wte.weight"], dtype=torch.float32).to(torch.bfloat16)
        assert np.array_equal(w2["wte.weight"], rounded.double().numpy())
        print("self-test model dir: ok")
    print("gpt2_ref self-test: PASS")


if __name__ == "__main__":
    self_test()
