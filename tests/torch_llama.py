"""torch_llama.py: the PyTorch reference of lorad's Llama-family support (Llama, Mistral, Qwen2).

  - LlamaConfig: config.json as transformers writes it for LlamaForCausalLM,
    MistralForCausalLM and Qwen2ForCausalLM (rope_theta + rope_scaling, or the newer
    rope_parameters), and the model directories: model.safetensors or shards with
    model.safetensors.index.json, F32/F16/BF16, HF tensor names (model.*, lm_head.weight,
    absent when tied);
  - the model in float64 PyTorch, Hugging Face's math: RMSNorm, q/k/v/o projections (q/k/v
    biases for Qwen2), rotary embedding in rotate_half form with inv_freq computed in
    float32 exactly as HF's _compute_default_rope_parameters / _compute_llama3_parameters,
    grouped-query attention, SwiGLU MLP, tied or untied head; LoRA adapters on the seven
    linear modules (nn.Linear: y += s * (x A^T) B^T);
  - PEFT adapters for it: target resolution (names or dotted suffixes, all-linear), export /
    import (fan_in_fan_out false) and an independent PEFT-style merge W + s * B @ A;
  - `lorad eval --logits` files (raw little-endian float32, (n, T, V)) and the greedy
    argmax continuation `lorad generate --temperature 0` must reproduce.

Its peer is torch_gpt2.py; both train with torch_train.reference_train and share
harness.py's formats. check_llama.py runs lorad against this reference.

Run `python3 tests/torch_llama.py` to self-test this module (no lorad needed): config.json
round trips, rope tables against a direct float64 formula (Llama 3 scaling in all three
frequency bands, and spot values), the model against an independent forward built from
torch's own pieces (F.linear, F.silu, nn.MultiheadAttention, complex-number rotation,
repeat_interleave for GQA), autograd against central finite differences in float64, PEFT
export/merge against the unmerged model, sharded and 16-bit model directories, and the
trainer's micro-batch invariance on this model.
"""

import json
import math
import os
import sys
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness import (PEFT_PREFIX, ST_DTYPES, AdapterSpec, lora_scale, peft_config, peft_key_matches,  # noqa: E402
                     peft_modules, peft_pair, peft_targeted, random_adapters, random_weights, read_peft_dir,
                     read_weights_dir, rel_err, run_self_tests, sample_inputs, step_batch, write_peft_dir,
                     write_safetensors)
from torch_train import (Lora, TrainSpec, batch_loss, gradient_check, lora_delta, make_lora,  # noqa: E402
                         reference_train, to_torch, to_torch_pairs)

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM"}

# The seven linear modules of a decoder layer, in HF's order (names inside layers.{i}).
LINEAR_NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
SHORT_NAMES = tuple(n.split(".")[-1] for n in LINEAR_NAMES)


# --------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------

@dataclass
class LlamaConfig:
    model_type: str               # llama | mistral | qwen2
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: Optional[int] = None      # None: not written (hidden_size / num_attention_heads)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None  # {"rope_type": "llama3", factor, low_freq_factor, ...}
    rope_form: str = "flat"             # flat: rope_theta + rope_scaling; parameters: rope_parameters
    max_position_embeddings: int = 64
    tie_word_embeddings: bool = False
    attention_bias: bool = False        # llama: q/k/v/o biases (HF); mistral: none; qwen2: q/k/v always
    sliding_window: Optional[int] = None  # mistral (null or >= the sequence length)

    @property
    def hd(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def qkv_bias(self) -> bool:
        return self.model_type == "qwen2" or (self.model_type == "llama" and self.attention_bias)

    @property
    def o_bias(self) -> bool:
        return self.model_type == "llama" and self.attention_bias

    def to_json(self, torch_dtype="float32") -> dict:
        """config.json as transformers (4.4x) writes it, plus keys a reader must ignore."""
        d = {
            "_name_or_path": f"tiny-{self.model_type}-test",
            "architectures": [ARCHITECTURES[self.model_type]],
            "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
            "hidden_act": "silu", "hidden_size": self.hidden_size, "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": self.model_type, "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads, "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings, "torch_dtype": torch_dtype,
            "transformers_version": "4.46.0", "use_cache": True, "vocab_size": self.vocab_size,
        }
        if self.head_dim is not None:
            d["head_dim"] = self.head_dim
        if self.model_type == "llama":
            d.update({"attention_bias": self.attention_bias, "mlp_bias": False, "pretraining_tp": 1})
        elif self.model_type == "mistral":
            d["sliding_window"] = self.sliding_window
        else:  # qwen2: the window is off unless use_sliding_window
            d.update({"sliding_window": 4096, "use_sliding_window": False,
                      "max_window_layers": self.num_hidden_layers})
        if self.rope_form == "flat":
            d["rope_theta"] = float(self.rope_theta)
            if self.model_type != "mistral" or self.rope_scaling is not None:
                d["rope_scaling"] = self.rope_scaling
        else:  # transformers 5: everything about rope in rope_parameters
            rp = {"rope_theta": float(self.rope_theta), "rope_type": "default"}
            if self.rope_scaling is not None:
                rp.update(self.rope_scaling)
            d["rope_parameters"] = rp
        return dict(sorted(d.items()))

    @staticmethod
    def from_json(d: dict) -> "LlamaConfig":
        """Reads a config.json as the contract describes (both rope forms)."""
        if "rope_parameters" in d and d["rope_parameters"] is not None:
            rp = dict(d["rope_parameters"])
            theta, form = rp.pop("rope_theta"), "parameters"
            scaling = rp if rp.get("rope_type", "default") != "default" else None
        else:
            theta, scaling, form = d.get("rope_theta", 10000.0), d.get("rope_scaling"), "flat"
        mt = d["model_type"]
        return LlamaConfig(
            mt, d["vocab_size"], d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"],
            d["num_attention_heads"], d.get("num_key_value_heads", d["num_attention_heads"]),
            d.get("head_dim"), d["rms_norm_eps"], theta, scaling, form,
            d["max_position_embeddings"], bool(d.get("tie_word_embeddings", False)),
            bool(d.get("attention_bias", False)) if mt == "llama" else False,
            d.get("sliding_window") if mt == "mistral" else None)


def llama3_scaling(factor=8.0, low=1.0, high=4.0, original=8192) -> dict:
    """rope_scaling as Llama 3.1 configs carry it."""
    return {"factor": float(factor), "high_freq_factor": float(high), "low_freq_factor": float(low),
            "original_max_position_embeddings": original, "rope_type": "llama3"}


# --------------------------------------------------------------------------------------
# Tensors and model directories
# --------------------------------------------------------------------------------------

def linear_shapes(cfg: LlamaConfig) -> Dict[str, Tuple[int, int]]:
    """(in, out) of each linear module of a layer (nn.Linear weights are [out, in])."""
    C, F_, hd = cfg.hidden_size, cfg.intermediate_size, cfg.hd
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    return {"self_attn.q_proj": (C, q), "self_attn.k_proj": (C, kv), "self_attn.v_proj": (C, kv),
            "self_attn.o_proj": (q, C), "mlp.gate_proj": (C, F_), "mlp.up_proj": (C, F_),
            "mlp.down_proj": (F_, C)}


def module_path(layer: int, name: str) -> str:
    """PEFT module path, e.g. model.layers.0.self_attn.q_proj."""
    return f"model.layers.{layer}.{name}"


def all_modules(cfg: LlamaConfig) -> List[Tuple[str, int, int]]:
    """(path, in, out) of every adaptable module, layer by layer (never lm_head)."""
    sh = linear_shapes(cfg)
    return [(module_path(i, n), *sh[n]) for i in range(cfg.num_hidden_layers) for n in LINEAR_NAMES]


def param_shapes(cfg: LlamaConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor of the model under its HF name, in HF's state_dict order."""
    C, V = cfg.hidden_size, cfg.vocab_size
    sh = linear_shapes(cfg)
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(cfg.num_hidden_layers):
        for n in LINEAR_NAMES:
            fin, fout = sh[n]
            p = module_path(i, n)
            shapes[p + ".weight"] = (fout, fin)
            short = n.split(".")[-1]
            if (cfg.qkv_bias and short in ("q_proj", "k_proj", "v_proj")) or (cfg.o_bias and short == "o_proj"):
                shapes[p + ".bias"] = (fout,)
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (C,)
        shapes[f"model.layers.{i}.post_attention_layernorm.weight"] = (C,)
    shapes["model.norm.weight"] = (C,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def llama_init(name: str, shape: Tuple[int, ...]) -> Tuple[float, float]:
    """(mean, std) of a random tensor, large enough that rope, attention, SwiGLU and RMSNorm
    all matter."""
    if name == "model.embed_tokens.weight":
        return 0.0, 0.5
    if "norm" in name:
        return 1.0, 0.1
    if name.endswith(".bias"):
        return 0.0, 0.1
    gain = 1.0 if name == "lm_head.weight" else 1.2 if "q_proj" in name or "k_proj" in name else 0.6
    return 0.0, gain / math.sqrt(shape[1])  # nn.Linear weights: [out, in]


def random_llama_weights(cfg: LlamaConfig, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return random_weights(param_shapes(cfg), rng, llama_init)


TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def write_model_dir(path: str, cfg: LlamaConfig, weights: Dict[str, np.ndarray], dtype="F32",
                    shards=1) -> None:
    """PATH/config.json and the weights (HF names) as DTYPE: model.safetensors, or SHARDS
    files model-0000k-of-0000n.safetensors (in state_dict order, split about evenly by
    bytes) with model.safetensors.index.json as transformers writes it."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg.to_json(TORCH_DTYPE[dtype]), f, indent=2)
        f.write("\n")
    if shards <= 1:
        write_safetensors(os.path.join(path, "model.safetensors"), weights, dtype)
        return
    esize = ST_DTYPES[dtype][1]
    names = list(weights)
    total = sum(weights[n].size * esize for n in names)
    groups, acc = [[] for _ in range(shards)], 0
    for n in names:  # the shard whose byte range holds the tensor's start
        groups[min(shards - 1, acc * shards // total)].append(n)
        acc += weights[n].size * esize
    assert all(groups), "test defect: an empty shard"
    weight_map = {}
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(path, fname), {n: weights[n] for n in group}, dtype)
        weight_map.update({n: fname for n in group})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                  f, indent=2)
        f.write("\n")


def read_config(path: str) -> LlamaConfig:
    with open(os.path.join(path, "config.json")) as f:
        return LlamaConfig.from_json(json.load(f))


def read_model_dir(path: str) -> Tuple[LlamaConfig, Dict[str, np.ndarray]]:
    """(config, float64 weights as stored, HF names): what the reference computes with."""
    weights, _, _ = read_weights_dir(path)
    return read_config(path), weights


def make_model(path: str, cfg: LlamaConfig, rng: np.random.Generator, dtype="F32", shards=1) -> Dict[str, np.ndarray]:
    """A model directory with random weights (write_model_dir's layouts); returns the
    weights as stored (rounded to DTYPE)."""
    write_model_dir(path, cfg, random_llama_weights(cfg, rng), dtype, shards)
    cfg_back, base = read_model_dir(path)
    assert cfg_back == cfg and set(base) == set(param_shapes(cfg)), "test defect: model dir"
    return base


# --------------------------------------------------------------------------------------
# Rotary embedding
# --------------------------------------------------------------------------------------

def rope_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """inv_freq [hd/2] in float32, computed as HF does: _compute_default_rope_parameters,
    then _compute_llama3_parameters when rope_scaling says llama3 (attention factor 1)."""
    dim, base = cfg.hd, float(cfg.rope_theta)
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    sc = cfg.rope_scaling
    if sc is None:
        return inv_freq
    kind = sc.get("rope_type", sc.get("type"))
    if kind != "llama3":
        raise ValueError(f"the reference implements rope_type llama3 only, not {kind!r}")
    factor, low_freq_factor = sc["factor"], sc["low_freq_factor"]
    high_freq_factor, old_context_len = sc["high_freq_factor"], sc["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def rope_bands(cfg: LlamaConfig) -> List[str]:
    """Which Llama 3 band each frequency falls in: high (kept), medium (smoothed), low
    (divided by factor)."""
    sc = cfg.rope_scaling
    inv = 1.0 / np.power(float(cfg.rope_theta), np.arange(0, cfg.hd, 2) / cfg.hd)
    wl = 2 * math.pi / inv
    lo_wl = sc["original_max_position_embeddings"] / sc["low_freq_factor"]
    hi_wl = sc["original_max_position_embeddings"] / sc["high_freq_factor"]
    return ["high" if w < hi_wl else "low" if w > lo_wl else "medium" for w in wl]


def rope_cos_sin(cfg: LlamaConfig, T: int, dtype=torch.float64,
                 inv_freq: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, hd] as HF lays them out: angles pos * inv_freq[i] repeated for both
    halves. inv_freq is HF's float32 one; angles and cos/sin are taken in DTYPE."""
    inv = (rope_inv_freq(cfg) if inv_freq is None else inv_freq).to(dtype)
    freqs = torch.arange(T, dtype=dtype)[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x [B, H, T, hd]."""
    return x * cos + rotate_half(x) * sin


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(x, W, path: str, lora: Optional[Lora]):
    """nn.Linear at PATH (weight [out, in], bias when the model has one), plus
    s * (x A^T) B^T on output columns [lo, hi) per adapter."""
    w0 = W[path + ".weight"]
    y = x @ w0.t()
    if path + ".bias" in W:
        y = y + W[path + ".bias"]
    return lora_delta(y, x, w0.shape[0], (lora or {}).get(path, []))


def llama_logits(cfg: LlamaConfig, W: Dict[str, torch.Tensor], idx: torch.Tensor,
                 lora: Optional[Lora] = None, inv_freq: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Logits [B, T, V] (HF names in W). INV_FREQ overrides the rope frequencies (for the
    tests' sanity checks only)."""
    Bsz, T = idx.shape
    NH, NKV, hd, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hd, cfg.rms_norm_eps
    assert NH % NKV == 0
    emb = W["model.embed_tokens.weight"]
    cos, sin = rope_cos_sin(cfg, T, emb.dtype, inv_freq)
    kv_of = torch.arange(NH) // (NH // NKV)  # query head h reads key/value head h // (NH/NKV)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    x = emb[idx]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        a = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = linear(a, W, p + "self_attn.q_proj", lora).view(Bsz, T, NH, hd).transpose(1, 2)
        k = linear(a, W, p + "self_attn.k_proj", lora).view(Bsz, T, NKV, hd).transpose(1, 2)
        v = linear(a, W, p + "self_attn.v_proj", lora).view(Bsz, T, NKV, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = k[:, kv_of], v[:, kv_of]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(Bsz, T, NH * hd)
        x = x + linear(y, W, p + "self_attn.o_proj", lora)
        m = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        gate = linear(m, W, p + "mlp.gate_proj", lora)
        x = x + linear(gate * torch.sigmoid(gate) * linear(m, W, p + "mlp.up_proj", lora), W,
                       p + "mlp.down_proj", lora)
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = emb if cfg.tie_word_embeddings else W["lm_head.weight"]
    return x @ head.t()


def eval_logits(cfg: LlamaConfig, weights: Dict[str, np.ndarray], tokens: np.ndarray, T: int,
                n: int, lora: Optional[Lora] = None) -> np.ndarray:
    """What `lorad eval --logits` must write: logits (n, T, V) of samples 0..n-1."""
    with torch.no_grad():
        return llama_logits(cfg, to_torch(weights), torch.tensor(sample_inputs(tokens, T, n)),
                            lora).numpy()


def read_logits_file(path: str, n: int, T: int, V: int) -> np.ndarray:
    """A --logits file: raw little-endian float32 (n, T, V); ValueError on a wrong size."""
    raw = np.fromfile(path, dtype="<f4")
    if raw.size != n * T * V:
        raise ValueError(f"{path}: {os.path.getsize(path)} bytes, expected {n * T * V * 4} "
                         f"for ({n}, {T}, {V}) float32")
    return raw.reshape(n, T, V).astype(np.float64)


def greedy(cfg: LlamaConfig, weights: Dict[str, np.ndarray], prompt: List[int],
           n: int) -> Tuple[List[int], List[float]]:
    """The float64 argmax continuation of PROMPT (a full forward per token) and each
    step's top-1/top-2 logit margin."""
    W = to_torch(weights)
    seq, out, margins = list(prompt), [], []
    with torch.no_grad():
        for _ in range(n):
            lg = llama_logits(cfg, W, torch.tensor([seq]))[0, -1].numpy()
            top = np.sort(lg)[::-1]
            out.append(int(np.argmax(lg)))
            margins.append(float(top[0] - top[1]))
            seq.append(out[-1])
    return out, margins


# --------------------------------------------------------------------------------------
# LoRA / PEFT
# --------------------------------------------------------------------------------------

def resolve_targets(cfg: LlamaConfig, targets: List[str]) -> List[AdapterSpec]:
    """The adapters for --targets: PEFT's exact-or-dotted-suffix match on module paths;
    all-linear is all seven modules of every layer (never lm_head)."""
    return [AdapterSpec(path, fin, 0, fout) for path, fin, fout in all_modules(cfg)
            if "all-linear" in targets or any(peft_key_matches(path, t) for t in targets)]


def target_names(targets: List[str]) -> List[str]:
    """adapter_config.json target_modules for --targets (all-linear as the seven names,
    which is what PEFT saves)."""
    return list(SHORT_NAMES) if "all-linear" in targets else list(targets)


def export_adapters(specs: List[AdapterSpec], params: Dict[str, Tuple[np.ndarray, np.ndarray]],
                    targets: List[str], r: int, alpha: float, rslora: bool,
                    base_model="", rank_pattern=(), alpha_pattern=()) -> Tuple[dict, Dict[str, np.ndarray]]:
    """A PEFT adapter: (adapter_config dict, tensors by PEFT key), one A [r, in] and
    B [out, r] per module (r: the module's rank), fan_in_fan_out false. RANK_PATTERN and
    ALPHA_PATTERN ((key, value) pairs, the flags' order) become rank_pattern and
    alpha_pattern as given."""
    tensors = {}
    for sp in specs:
        A, B = params[sp.key]
        tensors[f"{PEFT_PREFIX}{sp.module}.lora_A.weight"] = A
        tensors[f"{PEFT_PREFIX}{sp.module}.lora_B.weight"] = B
    config = peft_config(base_model, r, alpha, rslora, target_names(targets), False, {}, {})
    for key, val in rank_pattern:  # the first entry of a key wins
        config["rank_pattern"].setdefault(key, val)
    for key, val in alpha_pattern:
        config["alpha_pattern"].setdefault(key, val)
    return config, tensors


def import_adapters(specs: List[AdapterSpec], tensors: Dict[str, np.ndarray]) -> Dict[str, tuple]:
    """The inverse of export_adapters: each spec's (A, B)."""
    return {sp.key: (tensors[f"{PEFT_PREFIX}{sp.module}.lora_A.weight"].copy(),
                     tensors[f"{PEFT_PREFIX}{sp.module}.lora_B.weight"].copy()) for sp in specs}


def peft_merge(cfg: LlamaConfig, base: Dict[str, np.ndarray], config: dict,
               tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Merges a PEFT adapter the way PEFT's merge_and_unload does for nn.Linear:
    W[out, in] += s * B @ A, with rank/alpha patterns and rsLoRA. Raises ValueError on
    anything PEFT would not accept (fan_in_fan_out, unknown modules, wrong shapes)."""
    if config.get("fan_in_fan_out"):
        raise ValueError("fan_in_fan_out is true, but the Llama family's modules are nn.Linear")
    sizes = {path: (fin, fout) for path, fin, fout in all_modules(cfg)}
    merged = {k: v.copy() for k, v in base.items()}
    for mod in peft_modules(tensors):
        if mod not in sizes:
            raise ValueError(f"adapter module {mod} is not an adaptable module of the model")
        A, B, s = peft_pair(config, tensors, mod, *sizes[mod])
        merged[mod + ".weight"] = merged[mod + ".weight"] + s * (B @ A)
    return merged


# --------------------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------------------

def _test_configs() -> List[LlamaConfig]:
    """Small configurations covering every switch of the contract."""
    return [
        LlamaConfig("llama", 53, 32, 48, 2, 4, 2, rope_theta=20000.0),
        LlamaConfig("qwen2", 61, 24, 40, 2, 4, 1, head_dim=8, rms_norm_eps=1e-6, rope_theta=1e6,
                    tie_word_embeddings=True),
        LlamaConfig("llama", 47, 16, 32, 2, 2, 1, head_dim=32, rope_theta=500000.0,
                    rope_scaling=llama3_scaling(8, 1, 2, 16), max_position_embeddings=128),
        LlamaConfig("mistral", 59, 32, 40, 1, 4, 4, rope_theta=2000.0, rope_form="parameters",
                    sliding_window=4096),
        LlamaConfig("llama", 43, 16, 24, 1, 2, 2, attention_bias=True, tie_word_embeddings=True),
    ]


def _selftest_config(tmp: str) -> None:
    for cfg in _test_configs():
        d = cfg.to_json()
        assert LlamaConfig.from_json(json.loads(json.dumps(d))) == cfg, cfg
        assert d["architectures"] == [ARCHITECTURES[cfg.model_type]] and d["hidden_act"] == "silu"
        assert ("rope_parameters" in d) == (cfg.rope_form == "parameters")
        assert ("rope_theta" in d) == (cfg.rope_form == "flat")
        assert ("head_dim" in d) == (cfg.head_dim is not None)
    # hd defaults to hidden/heads; the llama3 configuration has all three bands
    assert _test_configs()[0].hd == 8 and _test_configs()[2].hd == 32
    assert sorted(set(rope_bands(_test_configs()[2]))) == ["high", "low", "medium"]
    cfg = _test_configs()[2]
    shapes = param_shapes(cfg)
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (64, 16)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (32, 16)
    assert shapes["model.layers.0.self_attn.o_proj.weight"] == (16, 64)
    assert "lm_head.weight" in shapes and "model.layers.0.self_attn.q_proj.bias" not in shapes
    qwen = param_shapes(_test_configs()[1])
    assert "lm_head.weight" not in qwen and "model.layers.1.self_attn.v_proj.bias" in qwen
    assert "model.layers.1.self_attn.o_proj.bias" not in qwen
    assert "model.layers.0.self_attn.o_proj.bias" in param_shapes(_test_configs()[4])


def _rope_direct(hd: int, theta: float, sc: Optional[dict]) -> np.ndarray:
    """Llama 3's inv_freq from its definition, in float64 with plain Python arithmetic."""
    out = []
    for i in range(hd // 2):
        f = theta ** (-2.0 * i / hd)
        if sc is not None:
            wl = 2 * math.pi / f
            orig = sc["original_max_position_embeddings"]
            if wl < orig / sc["high_freq_factor"]:
                pass
            elif wl > orig / sc["low_freq_factor"]:
                f = f / sc["factor"]
            else:
                s = (orig / wl - sc["low_freq_factor"]) / (sc["high_freq_factor"] - sc["low_freq_factor"])
                f = (1 - s) * f / sc["factor"] + s * f
        out.append(f)
    return np.array(out)


def _selftest_rope() -> None:
    cases = [(8, 10000.0, None), (32, 500000.0, llama3_scaling(8, 1, 2, 16)),
             (64, 500000.0, llama3_scaling(8, 1, 2, 16)), (128, 500000.0, llama3_scaling(8, 1, 4, 8192)),
             (128, 500000.0, llama3_scaling(32, 1, 4, 8192)), (16, 1e6, None)]
    for hd, theta, sc in cases:
        cfg = LlamaConfig("llama", 10, hd, 8, 1, 1, 1, rope_theta=theta, rope_scaling=sc)
        ours = rope_inv_freq(cfg)
        assert ours.dtype == torch.float32 and ours.shape == (hd // 2,)
        direct = _rope_direct(hd, theta, sc)
        err = np.max(np.abs(ours.double().numpy() / direct - 1))
        assert err < 1e-6, f"inv_freq hd {hd} theta {theta} {sc}: rel err {err}"
        if sc is not None:
            bands = rope_bands(cfg)
            assert bands[0] == "high" and bands[-1] == "low", bands
            plain = _rope_direct(hd, theta, None)
            for b, o, p in zip(bands, direct, plain):  # the bands as defined
                if b == "high":
                    assert o == p
                elif b == "low":
                    assert abs(o - p / sc["factor"]) < 1e-15 * p
                else:
                    assert p / sc["factor"] <= o <= p
        # cos/sin tables: HF's layout [cos(p f_0..f_{h/2-1}), same again]
        T = 40
        cos, sin = rope_cos_sin(cfg, T)
        f = ours.double().numpy()
        for pos in (0, 1, 17, T - 1):
            ang = pos * f
            assert np.allclose(cos[pos].numpy(), np.concatenate([np.cos(ang)] * 2), rtol=0, atol=1e-14)
            assert np.allclose(sin[pos].numpy(), np.concatenate([np.sin(ang)] * 2), rtol=0, atol=1e-14)
    # Llama 3.1 8B (hd 128, theta 500000, factor 8, 1, 4, 8192): the first frequencies
    # are kept, the last ones divided by 8, and the medium band lies between.
    cfg = LlamaConfig("llama", 10, 128, 8, 1, 1, 1, rope_theta=500000.0,
                      rope_scaling=llama3_scaling(8, 1, 4, 8192))
    inv = rope_inv_freq(cfg).double().numpy()
    assert inv[0] == 1.0 and abs(inv[63] - 500000.0 ** (-126 / 128) / 8) < 1e-6 * inv[63]
    bands = rope_bands(cfg)
    assert bands.count("high") == 29 and bands.count("medium") == 6 and bands.count("low") == 29, \
        [bands.count(b) for b in ("high", "medium", "low")]
    # rotate_half form against the rotation of each (x_i, x_{i+hd/2}) pair as a complex number
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 16, generator=rng, dtype=torch.float64)
    cfg = LlamaConfig("llama", 10, 16, 8, 1, 1, 1, rope_theta=100.0)
    cos, sin = rope_cos_sin(cfg, 7)
    ang = torch.arange(7, dtype=torch.float64)[:, None] * rope_inv_freq(cfg).double()[None]
    z = torch.complex(x[..., :8], x[..., 8:]) * torch.polar(torch.ones_like(ang), ang)
    assert (apply_rope(x, cos, sin) - torch.cat([z.real, z.imag], -1)).abs().max() < 1e-14
    # the rotation keeps norms and makes q.k depend on the offset only
    q, k = x[0, 0, 2], x[0, 1, 5]
    def dot(pq, pk):
        c, s = rope_cos_sin(cfg, 30)
        return float((apply_rope(q, c[pq], s[pq]) * apply_rope(k, c[pk], s[pk])).sum())
    assert abs(dot(3, 1) - dot(23, 21)) < 1e-12 and abs(dot(3, 1) - dot(3, 2)) > 1e-3


def independent_logits(cfg: LlamaConfig, W: Dict[str, torch.Tensor], idx: torch.Tensor,
                       lora: Optional[Lora] = None, inv: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same model from torch's own pieces: F.linear, F.silu, nn.MultiheadAttention on
    heads expanded with repeat_interleave, rotary embedding as complex multiplication,
    RMSNorm through the vector norm. INV (the rope frequencies) defaults to the direct
    float64 formula, not HF's float32 computation."""
    Bsz, T = idx.shape
    NH, NKV, hd, C = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hd, cfg.hidden_size
    E = NH * hd
    if inv is None:
        inv = torch.tensor(_rope_direct(hd, cfg.rope_theta, cfg.rope_scaling))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
    rot = torch.polar(torch.ones_like(ang), ang)

    def rope(t, heads):  # [B, T, heads*hd]
        t = t.view(Bsz, T, heads, hd)
        z = torch.complex(t[..., :hd // 2], t[..., hd // 2:]) * rot[None, :, None, :]
        return torch.cat([z.real, z.imag], -1)

    def norm(t, w):
        rms = torch.linalg.vector_norm(t, dim=-1, keepdim=True) / math.sqrt(C)
        return t / torch.sqrt(rms ** 2 + cfg.rms_norm_eps) * w

    def lin(t, path):
        y = F.linear(t, W[path + ".weight"], W.get(path + ".bias"))
        for lo, hi, A, B, s in (lora or {}).get(path, []):
            y[..., lo:hi] = y[..., lo:hi] + s * F.linear(F.linear(t, A), B)
        return y

    mha = torch.nn.MultiheadAttention(E, NH, bias=False, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.eye(E, dtype=torch.float64).repeat(3, 1))
        mha.out_proj.weight.copy_(torch.eye(E, dtype=torch.float64))
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    x = F.embedding(idx, W["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        a = norm(x, W[p + "input_layernorm.weight"])
        q = rope(lin(a, p + "self_attn.q_proj"), NH).reshape(Bsz, T, E)
        k = rope(lin(a, p + "self_attn.k_proj"), NKV).repeat_interleave(NH // NKV, dim=2).reshape(Bsz, T, E)
        v = lin(a, p + "self_attn.v_proj").view(Bsz, T, NKV, hd).repeat_interleave(NH // NKV, dim=2)
        y = mha(q, k, v.reshape(Bsz, T, E), attn_mask=mask, need_weights=False)[0]
        x = x + lin(y, p + "self_attn.o_proj")
        m = norm(x, W[p + "post_attention_layernorm.weight"])
        x = x + lin(F.silu(lin(m, p + "mlp.gate_proj")) * lin(m, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = norm(x, W["model.norm.weight"])
    return F.linear(x, W["model.embed_tokens.weight"] if cfg.tie_word_embeddings else W["lm_head.weight"])


def _selftest_model_vs_torch(rng) -> None:
    for cfg in _test_configs():
        W = to_torch(random_llama_weights(cfg, rng))
        specs = resolve_targets(cfg, ["all-linear"])
        lora = make_lora(specs, to_torch_pairs(random_adapters(specs, 2, 1.5, rng)), 1.5)
        idx = torch.tensor(rng.integers(0, cfg.vocab_size, (2, 21)))
        with torch.no_grad():
            for lo in (None, lora):
                ours = llama_logits(cfg, W, idx, lo)
                theirs = independent_logits(cfg, W, idx, lo, rope_inv_freq(cfg).double())
                err = (ours - theirs).abs().max().item()
                assert err < 1e-10, f"{cfg}: model differs from torch pieces by {err}"
                # with the direct float64 frequencies: HF's float32 rounding of inv_freq only
                theirs = independent_logits(cfg, W, idx, lo)
                err = (ours - theirs).abs().max().item()
                assert err < 1e-5 * theirs.abs().max().item(), f"{cfg}: direct inv_freq: {err}"
                # causal: the logits at position t do not depend on later tokens
                idx2 = idx.clone()
                idx2[:, 15:] = (idx2[:, 15:] + 1) % cfg.vocab_size
                assert (llama_logits(cfg, W, idx2, lo)[:, :15] - ours[:, :15]).abs().max() < 1e-12


def _selftest_finite_differences(rng) -> None:
    """Autograd against central differences (float64) on GQA with biases, an explicit
    head_dim, llama3 rope and an untied head; adapters on q_proj, v_proj and down_proj;
    then the tied head, where embed_tokens gets the gradient of both its uses."""
    cfg = LlamaConfig("qwen2", 37, 16, 24, 2, 4, 2, head_dim=6, rms_norm_eps=1e-6,
                      rope_theta=500000.0, rope_scaling=llama3_scaling(8, 1, 2, 6),
                      max_position_embeddings=32)
    base = random_llama_weights(cfg, rng)
    specs = resolve_targets(cfg, ["q_proj", "v_proj", "down_proj"])
    L0, L1 = "model.layers.0.", "model.layers.1."
    gradient_check(llama_logits, cfg, base, specs, rng, lambda W, P, inp, tgt: [
        (P[specs[0].key][0], (1, 5)), (P[specs[0].key][1], (7, 2)), (P[specs[1].key][1], (3, 0)),
        (P[specs[2].key][0], (2, 19)), (P[specs[5].key][1], (11, 1)),
        (W["model.embed_tokens.weight"], (int(inp[0, 3]), 3)), (W[L0 + "input_layernorm.weight"], (6,)),
        (W[L0 + "self_attn.q_proj.bias"], (13,)), (W[L1 + "self_attn.k_proj.bias"], (4,)),
        (W[L0 + "self_attn.k_proj.weight"], (9, 2)), (W[L1 + "self_attn.v_proj.weight"], (10, 15)),
        (W[L1 + "self_attn.o_proj.weight"], (3, 20)), (W[L0 + "mlp.gate_proj.weight"], (17, 4)),
        (W[L1 + "mlp.up_proj.weight"], (5, 8)), (W[L1 + "post_attention_layernorm.weight"], (2,)),
        (W["model.norm.weight"], (11,)), (W["lm_head.weight"], (int(tgt[1, 4]), 7))], nonzero=True)
    tied = replace(cfg, tie_word_embeddings=True)
    base_t = {k: v for k, v in base.items() if k != "lm_head.weight"}
    gradient_check(llama_logits, tied, base_t, [], rng, lambda W, P, inp, tgt: [
        (W["model.embed_tokens.weight"], (int(inp[0, 3]), 3)), (W["model.embed_tokens.weight"], (int(tgt[2, 1]), 0))])


def _selftest_peft(tmp: str, rng) -> None:
    cfg = _test_configs()[1]  # qwen2, GQA, biases, tied
    base = random_llama_weights(cfg, rng)
    idx = torch.tensor(rng.integers(0, cfg.vocab_size, (2, 10)))
    mods = [m for m, _, _ in all_modules(cfg)]
    for targets, r, alpha, rs, n in ((["q_proj", "v_proj", "down_proj"], 4, 8, False, 6),
                                     (["all-linear"], 2, 4, True, 14), (["self_attn.o_proj"], 3, 5, False, 2),
                                     (["model.layers.1.mlp.up_proj", "k_proj"], 2, 2, True, 3)):
        specs = resolve_targets(cfg, targets)
        assert len(specs) == n, (targets, [sp.module for sp in specs])
        scale = lora_scale(alpha, r, rs)
        params = random_adapters(specs, r, scale, rng)
        config, tensors = export_adapters(specs, params, targets, r, alpha, rs)
        d = os.path.join(tmp, "peft_" + "_".join(targets))
        write_peft_dir(d, config, tensors, "F64")
        config2, tensors2 = read_peft_dir(d)
        assert sorted(peft_targeted(config2, mods)) == sorted(sp.module for sp in specs), targets
        back = import_adapters(specs, tensors2)
        assert all(np.array_equal(back[k][0], params[k][0]) and np.array_equal(back[k][1], params[k][1])
                   for k in params)
        with torch.no_grad():
            merged = llama_logits(cfg, to_torch(peft_merge(cfg, base, config2, tensors2)), idx)
            unmerged = llama_logits(cfg, to_torch(base), idx, make_lora(specs, to_torch_pairs(params), scale))
            plain = llama_logits(cfg, to_torch(base), idx)
        assert (merged - unmerged).abs().max().item() < 1e-10, targets
        assert (plain - unmerged).abs().max().item() > 1e-3, f"{targets}: adapter does nothing"
    for bad in ({"base_model.model.lm_head.lora_A.weight": np.zeros((2, 24)),
                 "base_model.model.lm_head.lora_B.weight": np.zeros((61, 2))},
                {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((2, 23)),
                 "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((32, 2))}):
        try:
            peft_merge(cfg, base, dict(config, r=2, use_rslora=False), bad)
        except ValueError:
            continue
        raise AssertionError(f"peft_merge accepted {sorted(bad)}")


def _selftest_model_dirs(tmp: str, rng) -> None:
    cfg = _test_configs()[0]
    w = random_llama_weights(cfg, rng)
    for dtype, shards in (("F32", 1), ("F32", 3), ("BF16", 1), ("F16", 2)):
        d = os.path.join(tmp, f"model_{dtype}_{shards}")
        write_model_dir(d, cfg, w, dtype, shards)
        cfg2, w2 = read_model_dir(d)
        assert cfg2 == cfg and set(w2) == set(param_shapes(cfg))
        tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
        for k in w:
            assert np.array_equal(w2[k], torch.tensor(w[k]).to(tdt).double().numpy()), (dtype, k)
        files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        if shards == 1:
            assert files == ["model.safetensors"]
            continue
        assert files == [f"model-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)]
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            index = json.load(f)
        _, dts, where = read_weights_dir(d)
        assert index["weight_map"] == where and set(dts.values()) == {dtype}
        assert index["metadata"]["total_size"] == sum(v.size * ST_DTYPES[dtype][1] for v in w.values())
    # logits files
    x = rng.normal(0, 3, (2, 5, 7))
    p = os.path.join(tmp, "logits.f32")
    x.astype("<f4").tofile(p)
    assert np.array_equal(read_logits_file(p, 2, 5, 7), x.astype(np.float32).astype(np.float64))
    try:
        read_logits_file(p, 3, 5, 7)
        raise AssertionError("a short logits file was accepted")
    except ValueError:
        pass


def _selftest_training(rng) -> None:
    """torch_train's trainer on this model: micro-batching changes nothing, parameters move,
    validation at the initial and every step; full mode trains every tensor."""
    cfg = _test_configs()[2]
    base = random_llama_weights(cfg, rng)
    ts = TrainSpec(targets=("all-linear",), rank=2, alpha=4, rslora=True, steps=3, batch=4,
                   micro_batch=4, seq=8, lr=1e-2, schedule="linear", warmup=1, clip=0.5, weight_decay=0.1)
    specs = resolve_targets(cfg, list(ts.targets))
    init = random_adapters(specs, 2, ts.scale, rng)
    tokens = rng.integers(0, cfg.vocab_size, 60)
    mask = (rng.random(60) > 0.4).astype(np.uint8)
    val = (rng.integers(0, cfg.vocab_size, 5 * 8 + 3), (rng.random(43) > 0.5).astype(np.uint8))
    a = reference_train(llama_logits, cfg, base, tokens, mask, ts, init, specs, val=val)
    b = reference_train(llama_logits, cfg, base, tokens, mask, replace(ts, micro_batch=1), init, specs, val=val)
    assert max(abs(x - y) for x, y in zip(a.losses, b.losses)) < 1e-12
    assert all(rel_err(a.params[k][1], b.params[k][1]) < 1e-10 for k in a.params)
    assert all(rel_err(a.params[k][1], init[k][1]) > 0.01 for k in a.params)
    assert sorted(a.val_losses) == [0, 1, 2, 3]
    # step 1's loss is the model's loss on batch 0 with the initial adapters
    inp, tgt, w = step_batch(tokens, mask, 8, 4, 0)
    l0 = batch_loss(llama_logits, cfg, to_torch(base), inp, tgt, w, make_lora(specs, to_torch_pairs(init), ts.scale))
    assert abs(a.losses[0] - l0) < 1e-12 * l0
    full = reference_train(llama_logits, cfg, base, tokens, mask, replace(ts, mode="full", lr=1e-3))
    assert set(full.params) == set(base) and all(rel_err(full.params[k], base[k]) > 1e-5 for k in base)


def self_test() -> None:
    import tempfile
    torch.set_num_threads(1)
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory() as tmp:
        steps = [("config.json", lambda: _selftest_config(tmp)),
                 ("rope tables and llama3 scaling", _selftest_rope),
                 ("model vs torch pieces", lambda: _selftest_model_vs_torch(rng)),
                 ("finite differences", lambda: _selftest_finite_differences(rng)),
                 ("PEFT export/merge", lambda: _selftest_peft(tmp, rng)),
                 ("model dirs (sharded, 16-bit) and logits files", lambda: _selftest_model_dirs(tmp, rng)),
                 ("training", lambda: _selftest_training(rng))]
        run_self_tests("torch_llama", steps)


if __name__ == "__main__":
    self_test()
