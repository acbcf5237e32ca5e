"""bench/quant.py: the large-model benchmark of issue #17, in one run: quantized frozen
bases (--base-dtype bf16, int8, nf4) and activation recompute (--recompute off, on) on
Llama shapes, written into bench/RESULTS.md's section for it (bench/run.py keeps it).

  1. quant_peak (bench/quant_peak.c) at the 1B shape's products, M = 512 and 2048: the
     bf16 matmul's best rate is the peak MFU is measured against; beside it the same
     products with the weight int8 (per block of 64, and per row) and nf4, decoded inside
     the product, and the decoding's own cost.
  2. Llama-3.2-1B's shape (16 layers, d 2048, FFN 8192, 32 heads / 8 KV heads, vocab
     128256, tied; random weights, BF16 on disk), LoRA r=16 on q_proj,v_proj, batch 1,
     seq 512 and 2048: bf16, int8, nf4 x recompute off, on. Tokens/s (the measured steps
     after one warm-up), peak RSS (wait4's ru_maxrss), the activations lorad states,
     MFU = useful FLOPs / s over the bf16 peak of step 1. One run per dtype at seq 512
     with --profile shows where the time goes (products, decoding, the rest).
  3. PyTorch (bench/torch_llama.py, float32, the same model file) at the 1B shape, seq 512.
  4. Llama-3-8B's shape (32 layers, d 4096, FFN 14336, 32 / 8 heads, vocab 128256,
     untied; random weights, BF16 on disk, ~16 GB), LoRA r=16 on q,k,v,o_proj, seq 2048,
     batch 1: nf4 + recompute, and int8 + recompute; peak RSS and s/step over 3 steps.

Every run goes one at a time under `nice -n 10` (the machine is shared: others' CPU time
during each run is in the table). Speed is reported, never asserted.
usage: quant.py --lorad PATH --peak PATH [--workdir DIR] [--results FILE] [--parts 1,2,3,4] [--big nf4,int8]
                [--report]   (--report: rewrite the section from WORKDIR/results.json, running nothing)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (bench/run.py: it keeps this file's section of RESULTS.md)


SHAPES = {
    "1b": dict(L=16, C=2048, F=8192, H=32, KV=8, V=128256, tied=True),
    "8b": dict(L=32, C=4096, F=14336, H=32, KV=8, V=128256, tied=False),
}


# ---- the model files ----

def tensors_of(s):
    hd = s["C"] // s["H"]
    out = [("model.embed_tokens.weight", (s["V"], s["C"]))]
    for l in range(s["L"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (s["C"],)), (p + "post_attention_layernorm.weight", (s["C"],))]
        out += [(p + "self_attn.q_proj.weight", (s["H"] * hd, s["C"])), (p + "self_attn.k_proj.weight", (s["KV"] * hd, s["C"])),
                (p + "self_attn.v_proj.weight", (s["KV"] * hd, s["C"])), (p + "self_attn.o_proj.weight", (s["C"], s["H"] * hd)),
                (p + "mlp.gate_proj.weight", (s["F"], s["C"])), (p + "mlp.up_proj.weight", (s["F"], s["C"])),
                (p + "mlp.down_proj.weight", (s["C"], s["F"]))]
    out.append(("model.norm.weight", (s["C"],)))
    if not s["tied"]:
        out.append(("lm_head.weight", (s["V"], s["C"])))
    return out


def make_model(path, s):
    """A random Llama of shape S, BF16, written tensor by tensor from one random pool of
    bf16 values (std 0.02; norms 1), so even the 8B file takes only seconds of numpy."""
    st = os.path.join(path, "model.safetensors")
    if os.path.exists(st) and os.path.exists(os.path.join(path, "config.json")):
        return
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(17)
    pool = rng.normal(0, 0.02, 1 << 26).astype(np.float32).view(np.uint32)
    pool = ((pool + 0x7FFF + ((pool >> 16) & 1)) >> 16).astype(np.uint16)
    one = np.full(1, 0x3F80, np.uint16)
    header, at = {}, 0
    items = tensors_of(s)
    for name, shape in items:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [at, at + n]}
        at += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = st + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for i, (name, shape) in enumerate(items):
            n = int(np.prod(shape))
            if len(shape) == 1:
                np.repeat(one, n).tofile(f)
                continue
            start = (i * 7919) % len(pool)
            left = n
            while left:
                chunk = pool[start:start + left]
                chunk.tofile(f)
                left -= len(chunk)
                start = 0
    os.rename(tmp, st)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": s["C"],
           "intermediate_size": s["F"], "num_attention_heads": s["H"], "num_key_value_heads": s["KV"],
           "num_hidden_layers": s["L"], "vocab_size": s["V"], "max_position_embeddings": 8192,
           "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": s["tied"], "hidden_act": "silu",
           "torch_dtype": "bfloat16"}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)


def make_data(path, V, n=1 << 16):
    if os.path.exists(path):
        return
    hdr = np.zeros(256, np.int32)
    hdr[:3] = [20240801, 1, n]
    with open(path, "wb") as f:
        f.write(hdr.tobytes() + np.random.default_rng(3).integers(0, V, n).astype(np.uint32).tobytes())


def n_params(s):
    return sum(int(np.prod(shape)) for _, shape in tensors_of(s))


def product_params(s):
    """Weights the frozen products multiply by per token: every layer linear and the head."""
    return sum(int(np.prod(shape)) for name, shape in tensors_of(s) if "_proj" in name) + s["V"] * s["C"]


def useful_flops(s, T):
    """Per token of a LoRA step: forward and input gradient of every frozen product (2 + 2
    FLOPs per weight), causal attention (QKᵀ and PV: 2·T·d per layer forward on average,
    twice that backward), the rank-16 adapters negligible; recompute's second forward is
    not useful work."""
    return 4 * product_params(s) + 6 * s["L"] * T * s["C"]


# ---- the formats' accuracy (numpy, as tests/quant.py defines them) ----

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)


def dequant(w, fmt, block):
    o, i = w.shape
    b = w.reshape(o, i // block, block)
    m = np.abs(b).max(axis=2, keepdims=True)
    m = np.where(m > 0, m, 1).astype(np.float32)
    if fmt == "int8":
        return (np.clip(np.rint(b / (m / 127)), -127, 127) * (m / 127)).reshape(o, i)
    mid = (NF4[:-1] + NF4[1:]) / 2
    return (NF4[np.searchsorted(mid, b / m)] * m).reshape(o, i)


def format_errors():
    """Relative RMS error of each format on a (2048, 2048) weight: Gaussian, and Gaussian
    with outlier input features (1 % of the columns x 20, as LLM.int8() finds in real
    models), which a per-row scale spreads over the whole row and a block of 64 confines."""
    rng = np.random.default_rng(1)
    g = rng.normal(0, 0.02, (2048, 2048)).astype(np.float32)
    cols = rng.random(2048) < 0.01
    outl = np.where(cols[None, :], g * 20, g).astype(np.float32)
    res = {}
    for name, w in (("gaussian", g), ("outlier features", outl)):
        res[name] = {f: float(np.sqrt(np.mean((dequant(w, *fb) - w) ** 2) / np.mean(w ** 2)))
                     for f, fb in (("int8_row", ("int8", 2048)), ("int8_b64", ("int8", 64)), ("nf4", ("nf4", 64)))}
    return res


# ---- running ----

def cpu_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], sum(v)


def run_capture(cmd):
    """CMD's stdout, under nice -n 10."""
    print("+ nice -n 10 " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(["nice", "-n", "10"] + [str(c) for c in cmd], capture_output=True, text=True,
                          check=True).stdout


def run_waited(cmd, env=None):
    """Runs CMD under nice -n 10 (stdout dropped); its wall time, exact peak RSS (MiB, from
    wait4) and the share of the machine's CPU that others took meanwhile."""
    print("+ nice -n 10 " + " ".join(str(c) for c in cmd), flush=True)
    b0, _ = cpu_busy()
    w0 = time.time()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.nice(10)
        os.execvpe(str(cmd[0]), [str(c) for c in cmd], dict(os.environ, **(env or {})))
    _, status, ru = os.wait4(pid, 0)
    wall = time.time() - w0
    b1, _ = cpu_busy()
    hz = os.sysconf("SC_CLK_TCK")
    others = max(0.0, ((b1 - b0) / hz - (ru.ru_utime + ru.ru_stime)) / (wall * os.cpu_count()))
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{cmd[0]} failed: exit {os.waitstatus_to_exitcode(status)}")
    return wall, ru.ru_maxrss / 1024.0, others


def train(lorad, model, data, out, T, dtype, recompute, targets, steps, profile=False):
    cmd = [lorad, "train", "--model", model, "--data", data, "--out", out, "--overwrite", "--steps", steps,
           "--batch", 1, "--seq", T, "--targets", targets, "--rank", 16, "--alpha", 16, "--threads", 2,
           "--log-every", 1, "--ckpt-every", 0, "--shuffle", "off", "--base-dtype", dtype, "--recompute", recompute]
    if profile:
        cmd.append("--profile")
    wall, rss, others = run_waited(cmd)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(l) for l in f if '"step"' in l and '"loss"' in l]
    times = [r["tokens"] / r["tokens_per_s"] for r in rows]
    with open(os.path.join(out, "train.log")) as f:
        log = f.read()
    m = re.search(r"activations ([0-9.]+) MiB", log)
    res = {"dtype": dtype, "recompute": recompute, "T": T, "wall_s": wall, "peak_rss_mib": rss, "others": others,
           "step_s": times, "measured_s": sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0],
           "loss1": rows[0]["loss"],
           "act_mib": float(m.group(1)) if m else None}
    res["tokens_per_s"] = T / res["measured_s"]
    if profile:
        with open(os.path.join(out, "profile.jsonl")) as f:
            prof = [json.loads(l) for l in f if l.strip()]
        k = prof[0]["steps"] if prof else 1
        res["product_s"] = sum(p["seconds"] for p in prof) / k
        res["decode_s"] = sum(p["convert_s"] for p in prof if p["lib"] in ("onednn_int8", "onednn_nf4")) / k
        res["round_s"] = sum(p["convert_s"] for p in prof if p["lib"] == "onednn_bf16") / k
        res["frozen_s"] = sum(p["seconds"] for p in prof if p["lib"].startswith("onednn_")) / k
    print(json.dumps(res), flush=True)
    return res


def peaks(peak_bin, T):
    out = run_capture([peak_bin, "--tokens", T, "--min-time", 0.5])
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


# ---- the report ----

def mib(x):
    return f"{x:,.0f}"


def targets(res):
    """The issue's targets against the runs: measured, met or not (reported, never asserted)."""
    runs, big = res.get("runs", []), {r["dtype"]: r for r in res.get("8b", [])}
    rows = []

    def run(T, d, rc):
        return next((r for r in runs if r["T"] == T and r["dtype"] == d and r["recompute"] == rc), None)

    def add(what, value, ok, detail):
        rows.append(f"| {what} | {value} | {'**met**' if ok else '**not met**'} | {detail} |")

    if "nf4" in big:
        r = big["nf4"]
        add("8B shape, nf4 + recompute: peak RSS ≤ 10 GB", f"{r['peak_rss_mib'] * 2**20 / 1e9:.2f} GB",
            r["peak_rss_mib"] * 2**20 <= 10e9, f"{mib(r['peak_rss_mib'])} MiB" + (" (see the note below)" if r.get("note") else ""))
    if "int8" in big:
        r = big["int8"]
        add("8B shape, int8 + recompute: within 24 GB", f"{r['peak_rss_mib'] * 2**20 / 1e9:.2f} GB",
            r["peak_rss_mib"] * 2**20 <= 24e9, f"{mib(r['peak_rss_mib'])} MiB")
    for d, goal in (("int8", 0.8), ("nf4", 0.6)):
        pairs = [(run(T, d, rc), run(T, "bf16", rc)) for T in (512, 2048) for rc in ("off", "on")]
        pairs = [(a, b) for a, b in pairs if a and b]
        if pairs:
            x = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in pairs]
            add(f"{d} tokens/s ≥ {goal}× bf16's (1B shape)", f"{min(x):.2f}–{max(x):.2f}×", min(x) >= goal,
                "seq 512, 2048 × recompute off, on")
    pairs = [(run(T, d, "on"), run(T, d, "off")) for T in (512, 2048) for d in ("bf16", "int8", "nf4")]
    pairs = [(a, b) for a, b in pairs if a and b]
    if pairs:
        x = [a["measured_s"] / b["measured_s"] for a, b in pairs]
        add("recompute ≤ 1.35× the step time (1B shape)", f"{min(x):.2f}–{max(x):.2f}×", max(x) <= 1.35,
            "every dtype, seq 512 and 2048")
    pairs = [(run(2048, d, "off"), run(2048, d, "on")) for d in ("bf16", "int8", "nf4")]
    pairs = [(a, b) for a, b in pairs if a and b]
    if pairs:
        x = [a["act_mib"] / b["act_mib"] for a, b in pairs]
        add("recompute cuts activation memory ≥ 3× at seq 2048 (1B)", f"{min(x):.2f}×", min(x) >= 3,
            f"{mib(pairs[0][0]['act_mib'])} → {mib(pairs[0][1]['act_mib'])} MiB (train.log's activation block)")
    if not rows:
        return []
    return ["", "### Targets (issue #17)", "", "| target | measured | | detail |", "|---|---:|---|---|"] + rows


def reading(res):
    """How to read the run: the others' CPU share it had, where the time went (the
    profile), what the decoders cost against the bf16 matmul, all from RES."""
    runs = res.get("runs", []) + res.get("8b", [])
    if not runs:
        return []
    lo, hi = (100 * f(r["others"] for r in runs) for f in (min, max))
    if hi > 20:
        load = (f"other processes took {lo:.0f}–{hi:.0f} % of the machine's CPU during the runs here, so a run got a "
                "smaller and varying share of the 2 cores: peak RSS and the activation block do not depend on that "
                "and are exact, but tokens/s and the ratios between runs move with the load, and the speed targets' "
                "verdicts are within that noise.")
    else:
        load = (f"other processes took {lo:.0f}–{hi:.0f} % of the machine's CPU during the runs here: the speed "
                "figures and their ratios are this machine's own.")
    out = ["", "Reading these numbers: " + load]
    prof = {r["dtype"]: r for r in res.get("runs", []) if "product_s" in r}
    if {"bf16", "int8", "nf4"} <= set(prof):
        i8, n4, b16 = prof["int8"], prof["nf4"], prof["bf16"]
        out[-1] += (f" Where the time goes, from `--profile` at seq 512: decoding the int8/nf4 tiles took "
                    f"{i8['decode_s']:.2f} / {n4['decode_s']:.2f} s of {i8['measured_s']:.2f} / {n4['measured_s']:.2f} s "
                    f"steps ({100 * i8['decode_s'] / i8['measured_s']:.0f} / {100 * n4['decode_s'] / n4['measured_s']:.0f} %), "
                    f"against {b16['round_s']:.2f} s of a {b16['measured_s']:.2f} s bf16 step rounding the products' "
                    f"inputs to bf16 (the quantized path rounds each input once per product: "
                    f"{i8['round_s']:.2f} s).")
    pk = [r for rows in res.get("peak", {}).values() for r in rows]
    if pk and res.get("bf16_peak"):
        best = {f: min(r["decode_ns_per_weight"] for r in pk if r["form"] == f) for f in ("nf4", "int8_b64")}
        out[-1] += (f" At their best the decoders take {best['nf4']:.2f} (nf4) and {best['int8_b64']:.2f} (int8) ns a "
                    f"weight, against {2 * 512 / res['bf16_peak']:.2f} ns a weight for the bf16 matmul of 512 rows at "
                    "the measured peak.")
    out[-1] += (" Recompute's second forward is about a quarter of a step's FLOPs for this shape (it skips the MLP's "
                "output projection and the last layer).")
    return out


def section(args, res):
    L = ["", "## Large models: quantized bases and recompute (issue #17)", ""]
    cmds = sorted(set(res.get("commands", {}).values()))
    L.append("- **Commands**: " + "; ".join(f"`{c}`" for c in cmds) + " (every run under `nice -n 10`, one at a time)")
    run = res["meta"]
    L.append(f"- **Date**: {run['date']}; commit {run['commit']}; load average {run['load']} at the start (others' CPU "
             "share per run below)")
    s1, s8 = SHAPES["1b"], SHAPES["8b"]
    L.append(f"- **1B shape** (Llama-3.2-1B): {s1['L']} layers, d {s1['C']}, FFN {s1['F']}, {s1['H']}/{s1['KV']} heads,"
             f" vocab {s1['V']}, tied; {n_params(s1) / 1e9:.2f} B parameters, random, BF16 on disk; LoRA r=16 on "
             "q_proj,v_proj, batch 1, 2 threads; seq 512: 1 warm-up step, then 1 measured; seq 2048: its one step")
    L.append(f"- **8B shape** (Llama-3-8B): {s8['L']} layers, d {s8['C']}, FFN {s8['F']}, {s8['H']}/{s8['KV']} heads, "
             f"vocab {s8['V']}, untied; {n_params(s8) / 1e9:.2f} B parameters, random, BF16 on disk "
             f"({n_params(s8) * 2 / 2**30:.1f} GiB); LoRA r=16 on q,k,v,o_proj, seq 2048, batch 1")
    L += targets(res)
    L += reading(res)
    pk = res.get("peak", {})
    if pk:
        L += ["", "### Frozen products alone (quant_peak, GFLOP/s, best of ≥ 0.5 s; 1B shapes)", "",
              "| M | product | pass | bf16 | int8 (block 64) | int8 (per row) | nf4 | decode ns/weight int8 b64 / row / nf4 |",
              "|---:|---|---|---:|---:|---:|---:|---:|"]
        for T, rows in pk.items():
            by = {}
            for r in rows:
                by.setdefault((r["product"], r["pass"]), {})[r["form"]] = r
            for (prod, pas), f in by.items():
                L.append(f"| {T} | {prod} | {pas} | {f['bf16']['best_gflops']:.0f} | {f['int8_b64']['best_gflops']:.0f} | "
                         f"{f['int8_row']['best_gflops']:.0f} | {f['nf4']['best_gflops']:.0f} | "
                         f"{f['int8_b64']['decode_ns_per_weight']:.3f} / {f['int8_row']['decode_ns_per_weight']:.3f} / "
                         f"{f['nf4']['decode_ns_per_weight']:.3f} |")
        L.append("")
        L.append(f"bf16 peak (best over these shapes): {res['bf16_peak']:.0f} GFLOP/s — the MFU denominator.")
    if res.get("errors"):
        L += ["", "Relative RMS error of the decoded weight (numpy, a 2048×2048 weight; bytes per weight with the "
              "scales):", "", "| weights | int8 per row (1.002 B) | int8 block 64 (1.0625 B) | nf4 block 64 (0.5625 B) |",
              "|---|---:|---:|---:|"]
        for name, e in res["errors"].items():
            L.append(f"| {name} | {e['int8_row']:.2e} | {e['int8_b64']:.2e} | {e['nf4']:.2e} |")
    runs = res.get("runs", [])
    if runs:
        L += ["", "### 1B shape: tokens/s, memory, MFU", "",
              "| seq | --base-dtype | --recompute | tokens/s | × bf16 same recompute | step s | × recompute off | "
              "peak RSS MiB | activations MiB | MFU vs bf16 peak | step-1 loss | others' CPU |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            base = next(x for x in runs if x["T"] == r["T"] and x["dtype"] == "bf16" and x["recompute"] == r["recompute"])
            off = next(x for x in runs if x["T"] == r["T"] and x["dtype"] == r["dtype"] and x["recompute"] == "off")
            mfu = useful_flops(s1, r["T"]) * r["tokens_per_s"] / (res["bf16_peak"] * 1e9) if res.get("bf16_peak") else 0
            L.append(f"| {r['T']} | {r['dtype']} | {r['recompute']} | {r['tokens_per_s']:.1f} | "
                     f"{r['tokens_per_s'] / base['tokens_per_s']:.2f} | {r['measured_s']:.2f} | "
                     f"{r['measured_s'] / off['measured_s']:.2f} | {mib(r['peak_rss_mib'])} | {mib(r['act_mib'])} | "
                     f"{100 * mfu:.1f}% | {r['loss1']:.4f} | {100 * r['others']:.0f} % |")
        prof = [r for r in runs if "product_s" in r]
        if prof:
            L += ["", "Where a step's time goes (seq 512, recompute off, `--profile`, per step): the frozen products, "
                  "of which decoding the weight tiles (int8/nf4) or rounding A to bf16, and everything else.", "",
                  "| --base-dtype | step s | frozen products s | decode s | round A to bf16 s | other products s | "
                  "not in a product s |", "|---|---:|---:|---:|---:|---:|---:|"]
            for r in prof:
                L.append(f"| {r['dtype']} | {r['measured_s']:.2f} | {r['frozen_s']:.2f} | {r['decode_s']:.2f} | "
                         f"{r['round_s']:.2f} | {r['product_s'] - r['frozen_s']:.2f} | "
                         f"{r['measured_s'] - r['product_s']:.2f} |")
    if res.get("torch"):
        t = res["torch"]
        L += ["", f"PyTorch {t['version']} (float32, `bench/torch_llama.py`, the same file, LoRA r=16 q,v, seq "
              f"{t['T']}): {t['tokens_per_s']:.1f} tokens/s, step {t['step_s']:.2f} s, peak RSS {mib(t['peak_rss_mib'])} "
              f"MiB, step-1 loss {t['loss1']:.4f}; others' CPU {100 * t['others']:.0f} %."]
    big = res.get("8b", [])
    if big:
        L += ["", "### 8B shape, seq 2048", "",
              "| --base-dtype | --recompute | s/step | steps | peak RSS MiB | activations MiB | load s | "
              "step-1 loss | others' CPU |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in big:
            st = r["step_s"]
            L.append(f"| {r['dtype']} | {r['recompute']} | {sum(st) / len(st) if st else float('nan'):.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in st) or 'none'} | {mib(r['peak_rss_mib'])} | {mib(r['act_mib'])} | "
                     f"{r['wall_s'] - sum(st):.0f} | {r.get('loss1', float('nan')):.4f} | {100 * r['others']:.0f} % |")
        L += [f"- {r['dtype']}: {r['note']}" for r in big if r.get("note")]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorad", required=True)
    ap.add_argument("--peak", required=True)
    ap.add_argument("--workdir", default="/work/bench-quant")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--parts", default="1,2,3,4")
    ap.add_argument("--big", default="nf4,int8", help="part 4's dtypes")
    ap.add_argument("--report", action="store_true", help="only rewrite the section from WORKDIR/results.json")
    args = ap.parse_args()
    parts = set() if args.report else set(args.parts.split(","))
    args.lorad_rel, args.peak_rel = (os.path.relpath(p, os.path.dirname(HERE)) for p in (args.lorad, args.peak))
    args.lorad, args.peak = os.path.abspath(args.lorad), os.path.abspath(args.peak)
    args.commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
    args.load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    os.makedirs(args.workdir, exist_ok=True)
    state = os.path.join(args.workdir, "results.json")
    res = json.load(open(state)) if os.path.exists(state) else {}

    def save():
        with open(state, "w") as f:
            json.dump(res, f)
        run.section_write(args.results, run.QUANT_MARKERS, section(args, res))

    if args.report:
        save()
        return
    res["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": args.commit,
                   "load": args.load}

    cmd = (f"/usr/bin/python3 bench/quant.py --lorad {args.lorad_rel} --peak {args.peak_rel} --parts {args.parts}"
           + (f" --big {args.big}" if "4" in parts else ""))
    for part in parts:
        res.setdefault("commands", {})[part] = cmd
    m1, m8 = os.path.join(args.workdir, "llama-1b"), os.path.join(args.workdir, "llama-8b")
    data = os.path.join(args.workdir, "tokens.bin")
    make_data(data, SHAPES["1b"]["V"])
    if "1" in parts:
        res["peak"] = {str(T): peaks(args.peak, T) for T in (512, 2048)}
        res["bf16_peak"] = max(r["best_gflops"] for rows in res["peak"].values() for r in rows if r["form"] == "bf16")
        res["errors"] = format_errors()
        save()
    if "2" in parts:
        make_model(m1, SHAPES["1b"])
        res["runs"] = []
        for T, steps in ((512, 2), (2048, 1)):  # seq 2048: its one step measured (kernels made in it)
            for dtype in ("bf16", "int8", "nf4"):
                for rc in ("off", "on"):
                    r = train(args.lorad, m1, data, os.path.join(args.workdir, f"run-{T}-{dtype}-{rc}"), T, dtype, rc,
                              "q_proj,v_proj", steps, profile=(T == 512 and rc == "off"))
                    res["runs"].append(r)
                    save()
    if "3" in parts:
        make_model(m1, SHAPES["1b"])
        wall, rss, others = run_waited(["/usr/bin/python3", os.path.join(HERE, "torch_llama.py"), "--model", m1,
                                        "--data", data, "--seq", 512, "--steps", 3,
                                        "--out", os.path.join(args.workdir, "torch.json")],
                                       env={"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                                            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "SkylakeX")})
        t = json.load(open(os.path.join(args.workdir, "torch.json")))
        t.update(peak_rss_mib=rss, others=others, T=512)
        res["torch"] = t
        save()
    if "4" in parts:
        make_model(m8, SHAPES["8b"])
        for dtype, steps in (("nf4", 3), ("int8", 1)):  # int8: its peak RSS (the step is nf4's but for decoding)
            if dtype not in args.big.split(","):
                continue
            res["8b"] = [x for x in res.get("8b", []) if x["dtype"] != dtype]
            r = train(args.lorad, m8, data, os.path.join(args.workdir, f"run-8b-{dtype}"), 2048, dtype, "on",
                      "q_proj,k_proj,v_proj,o_proj", steps)
            res["8b"].append(r)
            save()
    save()


if __name__ == "__main__":
    main()
