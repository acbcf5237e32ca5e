"""harness.py: the machinery every test script of lorad shares, none of it model-specific.

  - safetensors: a writer and a validating reader (F32, F16, BF16, I32, ...), written here
    from the published format because no safetensors package is available, and Hugging
    Face weights directories (one file, or shards named by model.safetensors.index.json);
  - token datasets: llm.c .bin shards (uint16/uint32 tokens) and HDF5 files, their sample
    windows, and samples made independent of each other so that they can be reordered;
  - PEFT adapters as files and as PEFT reads them: adapter directories, target matching,
    each module's rank and scale after rank_pattern / alpha_pattern and rsLoRA;
  - running lorad (alone, under mpirun, `eval --json`, `generate`), collecting failures,
    reading OUT/metrics.jsonl, and the main() every driver script shares (run_driver:
    --lorad, --workdir and --case).

It imports no torch: memory.py measures children's peak memory, which a parent holding
torch would inflate (Linux carries the pre-exec high-water mark). The PyTorch references
are torch_gpt2.py and torch_llama.py, their trainer torch_train.py.
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

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


def random_weights(shapes: Dict[str, Tuple[int, ...]], rng: np.random.Generator,
                   init: Callable[[str, Tuple[int, ...]], Tuple[float, float]]) -> Dict[str, np.ndarray]:
    """A model's random weights: one normal draw per tensor of SHAPES, in their order, with
    the (mean, std) INIT(name, shape) gives it."""
    w = {}
    for name, shape in shapes.items():
        mean, std = init(name, shape)
        w[name] = mean + rng.normal(0.0, std, shape)
    return w


def random_mask(rng: np.random.Generator, n: int, zero_frac: float) -> np.ndarray:
    """A loss_mask: zeros with probability ZERO_FRAC, else assorted nonzero bytes."""
    return np.where(rng.random(n) < zero_frac, 0, rng.choice([1, 7, 255], n)).astype(np.uint8)


def n_samples(tokens: np.ndarray, T: int) -> int:
    """Samples of a dataset: sample i is the window of T+1 tokens starting at i*T."""
    return (len(tokens) - 1) // T


def sample_inputs(tokens: np.ndarray, T: int, n: int) -> np.ndarray:
    """Inputs [n, T] of samples 0..n-1 (sample i starts at token i*T)."""
    return np.stack([tokens[i * T:i * T + T] for i in range(n)]).astype(np.int64)


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
# LoRA adapters and PEFT's reading of them
# --------------------------------------------------------------------------------------

@dataclass
class AdapterSpec:
    """One trainable adapter: on MODULE (PEFT path), output columns [lo, hi)."""
    module: str
    fan_in: int
    lo: int
    hi: int
    slice: Optional[str] = None  # "q", "k", "v" for GPT-2's sliced c_attn adapters

    @property
    def key(self) -> str:
        return self.module + (f"[{self.slice}]" if self.slice else "")


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


def peft_config(base_model: str, r: int, alpha: float, rslora: bool, target_modules: List[str],
                fan_in_fan_out: bool, rank_pattern: dict, alpha_pattern: dict) -> dict:
    """adapter_config.json as PEFT writes it for a LoRA adapter of a causal LM."""
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": r, "lora_alpha": alpha, "use_rslora": rslora, "target_modules": target_modules,
        "fan_in_fan_out": fan_in_fan_out, "lora_dropout": 0.0, "bias": "none", "use_dora": False,
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "modules_to_save": None, "init_lora_weights": True,
    }


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


PEFT_PREFIX = "base_model.model."


def peft_modules(tensors: Dict[str, np.ndarray]) -> List[str]:
    """The module paths an adapter's tensors name (PEFT_PREFIX + path + .lora_A/B.weight),
    sorted; a tensor of any other name raises ValueError, as PEFT would not load it."""
    seen = set()
    for key in tensors:
        for suffix in (".lora_A.weight", ".lora_B.weight"):
            if key.startswith(PEFT_PREFIX) and key.endswith(suffix):
                seen.add(key[len(PEFT_PREFIX):-len(suffix)])
                break
        else:
            raise ValueError(f"unexpected adapter tensor {key}")
    return sorted(seen)


def peft_pair(config: dict, tensors: Dict[str, np.ndarray], mod: str, fin: int,
              fout: int) -> Tuple[np.ndarray, np.ndarray, float]:
    """MOD's (A [r, in], B [out, r], scale) as PEFT reads them; ValueError when one is
    missing or the shapes do not fit the module's FIN x FOUT and its rank."""
    A, B = tensors.get(PEFT_PREFIX + mod + ".lora_A.weight"), tensors.get(PEFT_PREFIX + mod + ".lora_B.weight")
    if A is None or B is None:
        raise ValueError(f"{mod}: lora_A or lora_B missing")
    r, _, s = peft_module_scale(config, mod)
    if A.shape != (r, fin) or B.shape != (fout, r):
        raise ValueError(f"{mod}: A {A.shape} / B {B.shape} do not fit r={r}, in={fin}, out={fout}")
    return A, B, s


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


def run_command(cmd: List[str], timeout: float, env: Optional[Dict[str, str]] = None,
                text=True) -> subprocess.CompletedProcess:
    """Runs CMD (printed first) and captures its output; a timeout, which only a hang
    reaches, comes back as returncode None with a note in stderr."""
    print("+ " + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, capture_output=True, text=text, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(cmd, None, "" if text else b"", err + f"\n[timed out after {timeout}s]")


def run_lorad(lorad: str, args: List[str], timeout=300) -> subprocess.CompletedProcess:
    """Runs `lorad ARGS...` (see run_command)."""
    return run_command([lorad] + [str(a) for a in args], timeout)


# Open MPI refuses root without these and more ranks than cores without oversubscribe;
# it never frees some of its own allocations, so LeakSanitizer is off under mpirun only.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "ASAN_OPTIONS": "detect_leaks=0"}


def mpi_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """This process's environment with MPI_ENV and EXTRA."""
    return dict(os.environ, **MPI_ENV, **(extra or {}))


def run_lorad_mpi(lorad: str, nprocs: int, args: List[str], env: Optional[Dict[str, str]] = None,
                  timeout=300) -> subprocess.CompletedProcess:
    """Runs `mpirun --oversubscribe -np NPROCS lorad ARGS...` with MPI_ENV plus ENV (see
    run_command)."""
    cmd = ["mpirun", "--oversubscribe", "-np", str(nprocs), lorad] + [str(a) for a in args]
    return run_command(cmd, timeout, mpi_env(env))


def expect_ok(fails: Failures, p: subprocess.CompletedProcess, what: str) -> bool:
    """P exited 0, else a failure quoting the end of its stderr."""
    return fails.check(p.returncode == 0, f"{what} exited {p.returncode}: {p.stderr.strip()[-800:]}")


def one_line_error(fails: Failures, p: subprocess.CompletedProcess, words: List[str], what: str,
                   any_word=False) -> bool:
    """Exit 2 and exactly one stderr line, starting "lorad: " and holding every one of WORDS
    (ANY_WORD: one of them)."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    named = any if any_word else all
    ok = (p.returncode == 2 and len(lines) == 1 and lines[0].startswith("lorad: ")
          and named(w in lines[0] for w in words))
    return fails.check(ok, f"{what}: expected exit 2 and one line 'lorad: ...' naming "
                       f"{'one of ' if any_word else ''}{words}, got exit {p.returncode}: "
                       f"{p.stderr.strip()[-800:]!r}")


def eval_json(fails: Failures, p: subprocess.CompletedProcess, what: str) -> Optional[dict]:
    """The JSON object of `lorad eval --json`, or None (a failure) when it is not there."""
    if not expect_ok(fails, p, what):
        return None
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    try:
        out = json.loads(lines[-1])
        assert set(out) == {"loss", "perplexity", "tokens", "samples"}, sorted(out)
    except Exception as e:  # noqa: BLE001 - any malformed output is a failure
        fails.add(f"{what}: stdout is not the eval JSON object ({e}): {p.stdout!r}")
        return None
    fails.check(len(lines) == 1, f"{what}: expected one line on stdout, got {p.stdout!r}")
    fails.check(rel_err(out["perplexity"], math.exp(out["loss"])) < 1e-6,
                f"{what}: perplexity {out['perplexity']} is not exp(loss {out['loss']})")
    return out


def generate(lorad: str, model: str, prompt: str, extra, adapter=None) -> subprocess.CompletedProcess:
    """Runs `lorad generate`; stdout as bytes (the generated bytes need not be UTF-8)."""
    cmd = [lorad, "generate", "--model", model, "--prompt", prompt, "--threads", "1"] + \
          (["--adapter", adapter] if adapter else []) + [str(a) for a in extra]
    p = run_command(cmd, 120, text=False)
    return subprocess.CompletedProcess(cmd, p.returncode, p.stdout, p.stderr.decode(errors="replace")
                                       if isinstance(p.stderr, bytes) else p.stderr)


def generated_ids(fails: Failures, p: subprocess.CompletedProcess, what: str) -> Optional[List[int]]:
    """The token ids `generate --ids` printed (one line of integers), or None (a failure)."""
    if not expect_ok(fails, p, what):
        return None
    text = p.stdout.decode()
    try:
        ids = [int(x) for x in text.split()]
    except ValueError:
        fails.add(f"{what}: --ids output is not integers: {text!r}")
        return None
    fails.check(text == " ".join(map(str, ids)) + "\n", f"{what}: --ids output is not one line of ids: {text!r}")
    return ids


def fmt_num(x) -> str:
    """A flag value: integers as integers, floats in round-trip form."""
    if isinstance(x, bool):
        raise TypeError("booleans are flags, not values")
    return str(x) if isinstance(x, int) else repr(float(x))


# --------------------------------------------------------------------------------------
# What a run leaves in OUT
# --------------------------------------------------------------------------------------

# The metrics.jsonl fields that measure time; every other field a rerun reproduces.
TIMING_KEYS = frozenset({"tokens_per_s", "elapsed_s", "comm_s", "wait_s"})


def read_metrics(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def steps_logged(out: str) -> int:
    """The rows OUT/metrics.jsonl holds so far (0 before there is one): a running job's
    steps, read while it runs."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def metrics_rows(out: str) -> List[dict]:
    """The rows of OUT/metrics.jsonl without their timing fields (TIMING_KEYS)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS}
            for r in read_metrics(os.path.join(out, "metrics.jsonl"))]


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def adapter_bytes(out: str) -> bytes:
    """OUT/adapter/adapter_model.safetensors, byte for byte."""
    return file_bytes(os.path.join(out, "adapter", "adapter_model.safetensors"))


def rel_err(a, b) -> float:
    """||a-b|| / ||b|| (scalars or arrays); 0 when both are zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    nb, nd = float(np.linalg.norm(b)), float(np.linalg.norm(a - b))
    if nb == 0.0:
        return 0.0 if nd == 0.0 else math.inf
    return nd / nb


# --------------------------------------------------------------------------------------
# The driver's main()
# --------------------------------------------------------------------------------------

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
# Self-test (`python3 tests/harness.py`, no lorad needed)
# --------------------------------------------------------------------------------------

def _selftest_safetensors(tmp: str, rng) -> None:
    import torch  # the independent bf16 rounding; the module itself stays torch-free
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


def _selftest_bin_h5(tmp: str) -> None:
    import h5py
    t = np.array([5, 70000, 3])
    p = os.path.join(tmp, "t32.bin")
    write_bin(p, t, u32=True)
    raw = file_bytes(p)
    hdr = np.frombuffer(raw[:1024], "<i4")
    assert hdr[:3].tolist() == [20240801, 2, 3] and np.frombuffer(raw[1024:], "<u4").tolist() == t.tolist()
    write_bin(p, t[[0, 2]])
    hdr = np.frombuffer(file_bytes(p)[:1024], "<i4")
    assert hdr[:3].tolist() == [20240520, 1, 2] and os.path.getsize(p) == 1024 + 4
    p = os.path.join(tmp, "t.h5")
    write_h5(p, t, np.array([0, 1, 1]))
    with h5py.File(p) as f:
        assert f["tokens"].dtype == np.int32 and f["loss_mask"].dtype == np.uint8


def _selftest_data_windows() -> None:
    tokens = np.arange(118)  # N = 117 // 16 = 7 samples
    mask = np.zeros(118, np.uint8)
    mask[16 * 6 + 1 + 3] = 200  # sample 6, target 3
    inp, tgt, w = step_batch(tokens, mask, 16, 5, 1)  # samples 5, 6, 0, 1, 2
    assert inp[0, 0] == 80 and tgt[0, 0] == 81 and inp[2, 0] == 0 and tgt[1, 15] == 16 * 7
    assert w.sum() == 1 and w[1, 3] == 1
    assert np.array_equal(sample_inputs(tokens, 16, 2), inp[2:4])
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


def _selftest_peft() -> None:
    config = {"r": 4, "lora_alpha": 8, "use_rslora": True, "target_modules": ["c_fc", "h.1.attn.c_proj"],
              "rank_pattern": {"h.0.mlp.c_fc": 2, "c_fc": 3}, "alpha_pattern": {"attn.c_proj": 6}}
    mods = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc", "transformer.h.1.attn.c_proj",
            "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fcx"]
    assert peft_targeted(config, mods) == mods[:3]
    assert peft_targeted(dict(config, target_modules="all-linear"), mods) == mods
    assert peft_targeted(dict(config, target_modules=r".*\.h\.0\..*"), mods) == [mods[0], mods[3], mods[4]]
    assert peft_module_scale(config, mods[0]) == (2, 8, 8 / math.sqrt(2))  # the first key that matches
    assert peft_module_scale(config, mods[1]) == (3, 8, 8 / math.sqrt(3))
    assert peft_module_scale(config, mods[2]) == (4, 6, 3.0)
    tensors = {PEFT_PREFIX + mods[0] + ".lora_A.weight": np.zeros((2, 5)),
               PEFT_PREFIX + mods[0] + ".lora_B.weight": np.zeros((7, 2)),
               PEFT_PREFIX + mods[2] + ".lora_B.weight": np.zeros((7, 4))}
    assert peft_modules(tensors) == sorted([mods[0], mods[2]])
    A, B, s = peft_pair(config, tensors, mods[0], 5, 7)
    assert A.shape == (2, 5) and B.shape == (7, 2) and s == 8 / math.sqrt(2)
    for bad in ((mods[0], 6, 7), (mods[2], 5, 7)):  # a wrong shape, a missing lora_A
        try:
            peft_pair(config, tensors, *bad)
        except ValueError:
            continue
        raise AssertionError(f"peft_pair accepted {bad}")
    try:
        peft_modules({"base_model.model.x.lora_C.weight": np.zeros(1)})
        raise AssertionError("peft_modules accepted a tensor PEFT would not load")
    except ValueError:
        pass


def run_self_tests(title: str, steps: List[Tuple[str, Callable[[], None]]]) -> None:
    """Runs a module's self-test STEPS (name, function that asserts) in order, saying each."""
    for name, fn in steps:
        fn()
        print(f"self-test {name}: ok", flush=True)
    print(f"{title} self-test: PASS", flush=True)


def self_test() -> None:
    import tempfile
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        steps = [("safetensors", lambda: _selftest_safetensors(tmp, rng)),
                 ("bin/h5 writers", lambda: _selftest_bin_h5(tmp)),
                 ("data windows", _selftest_data_windows),
                 ("PEFT matching and scales", _selftest_peft)]
        run_self_tests("harness", steps)


if __name__ == "__main__":
    self_test()
