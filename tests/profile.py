"""profile.py: `lorad train --profile` counts every matrix product of a step, once.

Trains a small GPT-2 (made with `lorad init-model`) with LoRA on q and v for a few steps,
in f32 on oneDNN, on OpenBLAS and with --base-dtype bf16, and checks OUT/profile.jsonl
against the products a LoRA step must run, counted here from the model's shape:
- per layer, each of the four frozen linear maps once forward and once for its input
  gradient (lorad backpropagates through every layer), on the library the run asked for;
- the tied LM head, forward and input gradient, once per chunk of at most 128 rows;
- per adapter (two a layer), the two thin products forward and four backward, in f32;
- attention's per-head products only on OpenBLAS, whose thread pool does not nest (on
  oneDNN they run inside attention's OpenMP region, where calls overlap and go untimed);
so the products' FLOPs per step add up to the step's model FLOPs (less attention's). The first
step is left out; the times are positive, and they sum to less than the steps they were
taken in. That holds at any machine speed: lorad times each product as an interval of the
step (the same monotonic clock, products one after another on the step's thread), so
their sum is part of the step time metrics.jsonl reports, however slow or loaded the
machine. Without --profile no file is written. Exits non-zero on any difference.
"""
import collections
import math
import os
import sys

import numpy as np

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

L, C, H, V, P = 2, 64, 4, 300, 128  # layers, width, heads, vocab, positions
B, T, R, STEPS = 3, 64, 4, 4         # sequences, their length, LoRA rank, steps
HEAD_ROWS = 128                      # the LM head's rows per chunk (worker/model.h)


def attention_products():
    """Attention's products, per layer and (sequence, head): T <= 64 rows are one block
    of queries against all T keys; the backward recomputes the scores."""
    hd = C // H
    return collections.Counter({("NT", T, T, hd): 3,    # S = Q.K^T, forward and again backward; dP = dO.V^T
                                ("NN", T, hd, T): 2,    # O = P.V; dQ = dS.K
                                ("TN", T, hd, T): 2})   # dV += P^T.dO; dK += dS^T.Q


def expected(frozen_lib, f32_lib, nests):
    """(lib, op, m, n, k) -> calls per step. When the f32 library NESTS, attention runs its
    products inside its OpenMP region, where they are not timed; otherwise the main
    thread runs them one (sequence, head) after another, and they count."""
    N, F = B * T, 4 * C
    want = collections.Counter()
    if not nests:
        for shape, calls in attention_products().items():
            want[(f32_lib,) + shape] += calls * L * B * H
    for out, inp in ((3 * C, C), (C, C), (F, C), (C, F)):  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
        want[frozen_lib, "NN", N, out, inp] += L  # forward: x (N,in) . W (in,out), GPT-2's Conv1D layout
        want[frozen_lib, "NT", N, inp, out] += L  # input gradient: dy (N,out) . W^T
    for r0 in range(0, N, HEAD_ROWS):
        rows = min(HEAD_ROWS, N - r0)
        want[frozen_lib, "NT", rows, V, C] += 1   # logits = x . wte^T
        want[frozen_lib, "NN", rows, C, V] += 1   # dx = dlogits . wte
    adapters = 2 * L                              # q and v: both inside c_attn, in and out C
    for shape in (("NT", N, R, C), ("NT", N, C, R),            # u = x.A^T; out += s.u.B^T
                  ("TN", C, R, N), ("NN", N, R, C),            # dB += dout^T.u; du = dout.B
                  ("TN", R, C, N), ("NN", N, C, R)):           # dA += du^T.x; dx += du.A
        want[(f32_lib,) + shape] += adapters
    return want


def product_flops_per_step(nests):
    """The step's FLOPs in products: forward and input gradient of the frozen maps, the
    adapters' (forward, and twice that backward), and attention's unless it nests."""
    N, F = B * T, 4 * C
    frozen = L * (3 * C * C + C * C + 2 * C * F) + V * C
    lora = 2 * L * R * (C + C)
    attention = 0 if nests else L * B * H * 7 * 2 * T * T * (C // H)
    return 2 * N * frozen * 2 + 2 * N * lora * 3 + attention


def train(fails, lorad, work, model, data, name, flags):
    """OUT of a LoRA run of the shapes above with FLAGS, or None (a failure)."""
    out = os.path.join(work, name)
    cmd = ["train", "--model", model, "--data", data, "--out", out, "--steps", STEPS, "--batch", B, "--seq", T,
           "--targets", "q,v", "--rank", R, "--threads", 2, "--log-every", 1]
    return out if h.expect_ok(fails, h.run_lorad(lorad, cmd + flags), f"{name}: lorad train") else None


def check_row(r):
    """What is wrong with one profile.jsonl row on its own."""
    errors = []
    if r["calls"] % (STEPS - 1):
        errors.append(f"{r}: calls not a whole number per step")
    if not r["seconds"] > 0:
        errors.append(f"{r}: no time")
    if r["lib"] == "onednn_bf16" and not 0 < r["convert_s"] < r["seconds"]:
        errors.append(f"{r}: the bf16 rounding of A is not part of the product's time")
    if r["lib"] != "onednn_bf16" and r["convert_s"] != 0:
        errors.append(f"{r}: an f32 product reports a bf16 conversion")
    if not math.isclose(r["gflops"], 2 * r["m"] * r["n"] * r["k"] * r["calls"] / r["seconds"] * 1e-9,
                        rel_tol=1e-6):
        errors.append(f"{r}: gflops is not 2mnk.calls / seconds")
    return errors


def check(fails, lorad, work, model, data, name, flags, frozen_lib, f32_lib, nests=True):
    out = train(fails, lorad, work, model, data, name, flags + ["--profile"])
    if out is None:
        return
    rows = h.read_metrics(os.path.join(out, "profile.jsonl"))
    steps = h.read_metrics(os.path.join(out, "metrics.jsonl"))
    # the steps the profile covers (all but the first), as lorad timed them
    step_s = sum(s["tokens"] / s["tokens_per_s"] for s in steps[1:])
    errors = []
    if {r["steps"] for r in rows} != {STEPS - 1}:
        errors.append(f"rows give steps {sorted({r['steps'] for r in rows})}, want {STEPS - 1}")
    got = collections.Counter()
    for r in rows:
        errors += check_row(r)
        got[r["lib"], r["op"], r["m"], r["n"], r["k"]] += r["calls"] // (STEPS - 1)
    want = expected(frozen_lib, f32_lib, nests)
    for key in sorted(set(want) | set(got)):
        if want[key] != got[key]:
            errors.append(f"{key}: {got[key]} calls a step, want {want[key]}")
    flops = sum(2 * m * n * k * c for (_, _, m, n, k), c in got.items())
    if flops != product_flops_per_step(nests):
        errors.append(f"products do {flops} FLOPs a step, the model {product_flops_per_step(nests)}")
    timed = sum(r["seconds"] for r in rows)
    if not timed < step_s:
        errors.append(f"products take {timed:.4f} s of steps 2..{STEPS}, more than those steps' {step_s:.4f} s")
    for e in errors:
        fails.add(f"{name}: {e}")
    print(f"{name}: {len(rows)} shapes, {sum(got.values())} products a step, {flops / 1e6:.1f} MFLOP, "
          f"{1e3 * timed / (STEPS - 1):.2f} of {1e3 * step_s / (STEPS - 1):.2f} ms a step", flush=True)


def run(fails, lorad, work):
    model = os.path.join(work, "model")
    if not h.expect_ok(fails, h.run_lorad(lorad, ["init-model", "--out", model, "--layers", L, "--dim", C, "--heads",
                                                  H, "--vocab", V, "--positions", P]), "init-model"):
        return
    data = os.path.join(work, "data.bin")
    h.write_bin(data, np.random.default_rng(0).integers(0, V, 4096))
    check(fails, lorad, work, model, data, "f32", [], "onednn", "onednn")
    check(fails, lorad, work, model, data, "openblas", ["--gemm", "openblas"], "openblas", "openblas", nests=False)
    check(fails, lorad, work, model, data, "bf16", ["--base-dtype", "bf16"], "onednn_bf16", "onednn")
    plain = train(fails, lorad, work, model, data, "plain", [])
    if plain is not None:
        fails.check(not os.path.exists(os.path.join(plain, "profile.jsonl")),
                    "a run without --profile wrote profile.jsonl")


if __name__ == "__main__":
    h.run_driver("profile", run)
