"""bad_input.py: lorad must reject bad files and flags cleanly.

It writes one valid tiny GPT-2 model, datasets and a PEFT init adapter, checks that
valid one-step runs succeed, then runs `lorad train` once per defect (corrupt
safetensors, bad config.json, bad datasets, bad flags, bad init adapters). Each bad run
must:
  - exit with a code > 0 that is not a signal (no negative code, no 128+signal) and not
    3 (error.h's exit code for an internal CHECK failure: bad input is a user error);
  - print exactly one non-empty line on stderr, starting with "lorad: " and containing
    one of the case's distinctive words (a flag name or a file's basename);
  - show no sanitizer report ("AddressSanitizer", "runtime error", ...).
Every case runs; the script then exits 1 listing all failures, or 0.
Usage: bad_input.py --lorad PATH --workdir DIR
"""

import json
import os
import shutil
import struct
import sys
from typing import Dict, List, Optional

import numpy as np

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (  # noqa: E402
    Failures, encode_tensor, fmt_num, random_adapters, read_metrics, read_safetensors, run_driver, run_lorad,
    safetensors_bytes, write_bin, write_h5, write_peft_dir)
from torch_gpt2 import GPT2Config, export_adapters, random_gpt2_weights, resolve_targets, write_model_dir  # noqa: E402

CFG = GPT2Config(vocab_size=61, n_positions=32, n_embd=16, n_head=2, n_layer=2)
RANK, ALPHA, SEQ = 4, 8.0, 16
BAD_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error", "Segmentation fault", "internal error")
EXIT_INTERNAL = 3


class Inputs:
    """The valid files every case starts from, and helpers to derive broken copies."""

    def __init__(self, wd: str):
        self.wd = wd
        rng = np.random.default_rng(11)
        self.weights = random_gpt2_weights(CFG, rng)
        self.model = os.path.join(wd, "model")
        write_model_dir(self.model, CFG, self.weights, "F32", prefix=True)
        self.tokens = rng.integers(0, CFG.vocab_size, 300)
        self.data = self.path("train.bin")
        write_bin(self.data, self.tokens)
        self.h5 = self.path("train.h5")
        write_h5(self.h5, self.tokens, (rng.random(300) > 0.3).astype(np.uint8))
        specs = resolve_targets(CFG, ["c_attn"])
        params = random_adapters(specs, RANK, ALPHA / RANK, rng)
        self.adapter_config, self.adapter_tensors = export_adapters(
            specs, params, ["c_attn"], RANK, ALPHA, False, base_model=self.model)
        self.adapter = self.adapter_dir("adapter")

    def path(self, name: str) -> str:
        return os.path.join(self.wd, name)

    # ---- model variants ----
    def entries(self, drop=(), override: Optional[Dict[str, tuple]] = None) -> list:
        """safetensors entries (name, dtype, shape, bytes) of the valid model, minus DROP,
        with OVERRIDE[name] = (dtype, shape, bytes) replacing single entries."""
        out = []
        for short, arr in self.weights.items():
            name = "transformer." + short
            if short in drop:
                continue
            if override and short in override:
                out.append((name,) + override[short])
            else:
                out.append((name, "F32", list(arr.shape), encode_tensor(arr, "F32")))
        return out

    def st_bytes(self, **kw) -> bytes:
        return safetensors_bytes(self.entries(**kw), {"format": "pt"})

    def model_dir(self, name: str, st: Optional[bytes] = None,
                  config: Optional[str] = None) -> str:
        """A copy of the valid model dir with model.safetensors and/or config.json replaced."""
        d = self.path(name)
        shutil.copytree(self.model, d)
        if st is not None:
            with open(os.path.join(d, "model.safetensors"), "wb") as f:
                f.write(st)
        if config is not None:
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(config)
        return d

    # ---- dataset and adapter variants ----
    def bin_file(self, name: str, tokens=None, **overrides) -> str:
        p = self.path(name)
        write_bin(p, self.tokens if tokens is None else tokens, **overrides)
        return p

    def adapter_dir(self, name: str, config_changes=None, tensor_changes=None) -> str:
        config = dict(self.adapter_config, **(config_changes or {}))
        tensors = dict(self.adapter_tensors, **(tensor_changes or {}))
        d = self.path(name)
        write_peft_dir(d, config, tensors, "F32")
        return d


def split_st(blob: bytes):
    """(header length, header dict, data) of a safetensors blob."""
    (n,) = struct.unpack("<Q", blob[:8])
    return n, json.loads(blob[8:8 + n]), blob[8 + n:]


def join_st(header: dict, data: bytes) -> bytes:
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + data


def gap_st(blob: bytes) -> bytes:
    """Moves the last tensor 4 bytes later, leaving a hole: every size still matches its
    shape and the data still ends at the end of the file, but the offsets do not tile."""
    _, header, data = split_st(blob)
    name = max((k for k in header if k != "__metadata__"),
               key=lambda k: header[k]["data_offsets"][0])
    a, b = header[name]["data_offsets"]
    header[name]["data_offsets"] = [a + 4, b + 4]
    return join_st(header, data[:a] + b"\0" * 4 + data[a:])


def train_args(inp: Inputs, out: str, **over) -> List[str]:
    """A valid one-step command line (random A, zero B: no --init-adapter, so that only the
    adapter cases depend on one); OVER replaces flag values or adds flags (model=... is
    --model, micro_batch=... is --micro-batch)."""
    flags = {"--model": inp.model, "--data": inp.data, "--out": out, "--targets": "c_attn",
             "--rank": RANK, "--alpha": ALPHA, "--dropout": 0.0, "--init": "kaiming",
             "--mode": "lora", "--steps": 1, "--batch": 2,
             "--micro-batch": 2, "--seq": SEQ, "--lr": 1e-3, "--schedule": "constant",
             "--warmup": 0, "--weight-decay": 0.0, "--beta1": 0.9, "--beta2": 0.999,
             "--eps": 1e-8, "--clip": 1.0, "--seed": 1, "--shuffle": "off", "--threads": 1,
             "--log-every": 1, "--eval-every": 0}
    flags.update({"--" + k.replace("_", "-"): v for k, v in over.items()})
    args = ["train"]
    for flag, val in flags.items():
        if val is not None:
            args += [flag, val if isinstance(val, str) else fmt_num(val)]
    return args


def bad_cases(inp: Inputs):
    """(name, extra args or replaced flags, distinctive words: any one must appear)."""
    C = CFG.n_embd
    good = inp.st_bytes()
    hlen, _, data = split_st(good)
    cases = [
        ("safetensors cut in the data section",
         {"model": inp.model_dir("m_trunc_data", good[:len(good) - len(data) // 2])},
         ["model.safetensors"]),
        ("safetensors cut in the header",
         {"model": inp.model_dir("m_trunc_header", good[:8 + hlen // 2])}, ["model.safetensors"]),
        ("safetensors header length 2^40",
         {"model": inp.model_dir("m_hlen_big", struct.pack("<Q", 1 << 40) + good[8:])},
         ["model.safetensors"]),
        ("safetensors header length 2^64-8 (8+n wraps to 0)",
         {"model": inp.model_dir("m_hlen_wrap", struct.pack("<Q", (1 << 64) - 8) + good[8:])},
         ["model.safetensors"]),
        ("safetensors header not JSON",
         {"model": inp.model_dir("m_garbage_json", good[:8] + b"#not json!" +
                                 b"@" * (hlen - 10) + data)}, ["model.safetensors"]),
        ("safetensors offsets do not tile", {"model": inp.model_dir("m_gap", gap_st(good))},
         ["model.safetensors"]),
        ("missing tensor h.1.mlp.c_fc.weight",
         {"model": inp.model_dir("m_missing", inp.st_bytes(drop=("h.1.mlp.c_fc.weight",)))},
         ["h.1.mlp.c_fc.weight", "model.safetensors"]),
        ("c_attn weight transposed",
         {"model": inp.model_dir("m_shape", inp.st_bytes(override={"h.0.attn.c_attn.weight": (
             "F32", [3 * C, C], encode_tensor(inp.weights["h.0.attn.c_attn.weight"].T, "F32"))}))},
         ["h.0.attn.c_attn.weight", "model.safetensors"]),
        ("tensor of dtype I32",
         {"model": inp.model_dir("m_i32", inp.st_bytes(override={"ln_f.weight": (
             "I32", [C], encode_tensor(np.arange(C), "I32"))}))},
         ["ln_f.weight", "I32", "model.safetensors"]),
        ("config.json without n_embd",
         {"model": inp.model_dir("m_no_embd", config=json.dumps(
             {k: v for k, v in CFG.to_json().items() if k != "n_embd"}))},
         ["n_embd", "config.json"]),
        ("config.json not JSON",
         {"model": inp.model_dir("m_config_text", config="this is { not json")}, ["config.json"]),
        ("token out of vocabulary",
         {"data": inp.bin_file("oov.bin", np.where(np.arange(300) == 123, CFG.vocab_size,
                                                   inp.tokens))}, ["oov.bin"]),
        ("corrupt .bin magic", {"data": inp.bin_file("badmagic.bin", magic=12345678)},
         ["badmagic.bin"]),
        (".bin count does not match the size",
         {"data": inp.bin_file("badcount.bin", count=len(inp.tokens) + 7)}, ["badcount.bin"]),
        ("HDF5 without /tokens", {"data": h5_without_tokens(inp)}, ["no_ds.h5"]),
        ("dataset shorter than one sample",
         {"data": inp.bin_file("short.bin", inp.tokens[:SEQ])}, ["short.bin", "--seq"]),
        ("unknown flag", {"frobnicate": "1"}, ["--frobnicate"]),
        ("--rank 0", {"rank": 0}, ["--rank"]),
        ("--lr -1", {"lr": -1}, ["--lr"]),
        ("--batch 6 --micro-batch 4", {"batch": 6, "micro_batch": 4},
         ["--batch", "--micro-batch"]),
        ("--seq larger than n_positions", {"seq": CFG.n_positions + 1}, ["--seq"]),
        ("--steps abc", {"steps": "abc"}, ["--steps"]),
        ("--mode bogus", {"mode": "bogus"}, ["--mode"]),
        ("--targets matching no module", {"targets": "nonexistent_module"}, ["--targets"]),
        # --rank-pattern / --alpha-pattern items: MODULE=VALUE, a non-empty key, a rank that
        # is a positive integer, a positive alpha; no patterns in full mode
        ("--rank-pattern c_attn (no =)", {"rank_pattern": "c_attn"}, ["--rank-pattern"]),
        ("--rank-pattern =4 (empty key)", {"rank_pattern": "=4"}, ["--rank-pattern"]),
        ("--rank-pattern c_attn=4,=2 (second item's key empty)", {"rank_pattern": "c_attn=4,=2"},
         ["--rank-pattern"]),
        ("--rank-pattern c_attn=0", {"rank_pattern": "c_attn=0"}, ["--rank-pattern"]),
        ("--rank-pattern c_attn=-3", {"rank_pattern": "c_attn=-3"}, ["--rank-pattern"]),
        ("--rank-pattern c_attn=2.5", {"rank_pattern": "c_attn=2.5"}, ["--rank-pattern"]),
        ("--rank-pattern c_attn= (no value)", {"rank_pattern": "c_attn="}, ["--rank-pattern"]),
        ("--alpha-pattern c_attn=-1", {"alpha_pattern": "c_attn=-1"}, ["--alpha-pattern"]),
        ("--alpha-pattern c_attn=0", {"alpha_pattern": "c_attn=0"}, ["--alpha-pattern"]),
        ("--alpha-pattern c_attn=abc", {"alpha_pattern": "c_attn=abc"}, ["--alpha-pattern"]),
        ("--mode full --rank-pattern c_attn=4", {"mode": "full", "rank_pattern": "c_attn=4"},
         ["--rank-pattern"]),
        ("--model missing", {"model": inp.path("no_such_model")}, ["no_such_model"]),
        ("--init-adapter with a transposed lora_A",
         {"init_adapter": inp.adapter_dir("adapter_badshape", tensor_changes={
             "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight":
                 inp.adapter_tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].T})},
         ["adapter_badshape", "lora_A", "adapter_model.safetensors"]),
        ("--init-adapter with use_dora",
         {"init_adapter": inp.adapter_dir("adapter_dora", config_changes={"use_dora": True})},
         ["use_dora", "adapter_dora", "adapter_config.json"]),
    ]
    return cases


def daemon_cases(inp: Inputs):
    """(name, argv, distinctive words) for `lorad serve` and the client commands."""
    sock, empty = inp.path("nobody.sock"), inp.path("empty_token")
    with open(empty, "w") as f:
        f.write("  \n")
    a_file = inp.path("a_file")
    with open(a_file, "w") as f:
        f.write("x")
    job = ["--model", inp.model, "--data", inp.data]
    return [
        ("serve without --state", ["serve"], ["--state"]),
        ("serve --state that is a file", ["serve", "--state", a_file], ["a_file"]),
        ("serve --listen without --token-file", ["serve", "--state", inp.path("st1"), "--listen", "7"], ["--token-file"]),
        ("serve with an empty token file",
         ["serve", "--state", inp.path("st2"), "--listen", "0", "--token-file", empty], ["empty_token"]),
        ("serve --socket in a directory open to others",
         ["serve", "--state", inp.path("st3"), "--socket", "/tmp/lorad-bad-input.sock"], ["/tmp"]),
        ("serve --listen on a bad address",
         ["serve", "--state", inp.path("st4"), "--listen", "no.such.host.invalid:1", "--token-file", a_file],
         ["--listen"]),
        ("status without a daemon address", ["status"], ["--socket"]),
        ("submit to a socket nobody serves", ["submit", "--socket", sock] + job, ["nobody.sock"]),
        ("submit --out", ["submit", "--socket", sock, "--out", "x"] + job, ["--out"]),
        ("submit --resume", ["submit", "--socket", sock, "--resume", "auto"] + job, ["--resume"]),
        ("submit with a bad train flag", ["submit", "--socket", sock, "--steps", "many"] + job, ["--steps"]),
        ("cancel without a job", ["cancel", "--socket", sock], ["job"]),
        ("status of a job id that is not a number", ["status", "abc", "--socket", sock], ["abc"]),
        ("--connect without --token-file", ["status", "--connect", "127.0.0.1:9"], ["--token-file"]),
        ("--connect to a bad address", ["list", "--connect", "nohost", "--token-file", a_file], ["--connect"]),
        ("an unknown client flag", ["list", "--socket", sock, "--bogus"], ["--bogus"]),
    ]


def h5_without_tokens(inp: Inputs) -> str:
    p = inp.path("no_ds.h5")
    write_h5(p, inp.tokens, tokens_name="input_ids")
    return p


def judge(fails: Failures, name: str, res, words: List[str]) -> None:
    """The rules every rejection must follow."""
    rc, err = res.returncode, res.stderr
    lines = err.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    problems = []
    if rc is None:
        problems.append("timed out")
    elif rc <= 0 or 128 < rc <= 128 + 64:
        problems.append(f"exit code {rc} (want > 0 and not a signal)")
    elif rc == EXIT_INTERNAL:
        problems.append(f"exit code {rc}: an internal CHECK failed on user input")
    if len(lines) != 1 or not lines[0].strip():
        problems.append(f"stderr has {len(lines)} lines, want exactly one non-empty line")
    elif not lines[0].startswith("lorad: "):
        problems.append("stderr does not start with 'lorad: '")
    elif not any(w.lower() in lines[0].lower() for w in words):
        problems.append(f"message names none of {words}")
    marks = [m for m in BAD_MARKS if m in err]
    if marks:
        problems.append(f"stderr shows {marks}")
    if problems:
        fails.add(f"{name}: " + "; ".join(problems) + f"; stderr: {err.strip()[:600]!r}")
    else:
        print(f"ok: {name}: {lines[0]}", flush=True)


def check_valid(fails: Failures, lorad: str, inp: Inputs, label: str, **over) -> str:
    """A valid one-step run succeeds and writes one metrics row and the adapter (in full
    mode the model); returns its --out."""
    out = inp.path("out_" + label)
    res = run_lorad(lorad, train_args(inp, out, **over), timeout=120)
    if res.returncode != 0:
        fails.abort(f"valid run ({label}) failed with exit code {res.returncode}: "
                    f"{res.stderr.strip()[:1000]}")
    rows = [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if "grad_norm" in r]
    fails.check(len(rows) == 1 and rows[0].get("step") == 1,
                f"valid run ({label}): metrics rows {rows}")
    files = (("model", "config.json"), ("model", "model.safetensors")) if over.get("mode") == "full" \
        else (("adapter", "adapter_config.json"), ("adapter", "adapter_model.safetensors"))
    for d, f in files:
        fails.check(os.path.isfile(os.path.join(out, d, f)), f"valid run ({label}): {d}/{f} missing")
    print(f"ok: valid run ({label})", flush=True)
    return out


def check_all(fails: Failures, lorad: str, work: str) -> None:
    """The valid runs, then every bad case, all judged before the driver reports."""
    inp = Inputs(work)
    cases = bad_cases(inp)
    check_valid(fails, lorad, inp, "bin")
    check_valid(fails, lorad, inp, "h5", data=inp.h5)
    check_valid(fails, lorad, inp, "init-adapter", init_adapter=inp.adapter)
    # well-formed patterns are accepted (the first matching key wins: c_attn=2 for h.1's
    # c_attn too), and full mode without them, so the pattern cases fail for their defect
    out = check_valid(fails, lorad, inp, "patterns", rank_pattern="c_attn=2,h.1.attn.c_attn=3",
                      alpha_pattern="c_attn=0.5")
    try:
        tensors, _ = read_safetensors(os.path.join(out, "adapter", "adapter_model.safetensors"))
        shapes = {k: list(v.shape) for k, v in tensors.items() if k.endswith("lora_A.weight")}
    except (OSError, ValueError) as e:
        shapes = repr(e)
    want = {f"base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight": [2, CFG.n_embd]
            for i in range(CFG.n_layer)}
    fails.check(shapes == want, f"valid run (patterns): lora_A shapes {shapes}, expected {want}")
    check_valid(fails, lorad, inp, "full", mode="full")
    for i, (name, over, words) in enumerate(cases):
        out = inp.path(f"out_bad{i:02d}")
        res = run_lorad(lorad, train_args(inp, out, **over), timeout=60)
        judge(fails, name, res, words)
    for name, argv, words in daemon_cases(inp):
        judge(fails, name, run_lorad(lorad, argv, timeout=60), words)


if __name__ == "__main__":
    run_driver("bad_input", check_all)
