"""analyze.py: `lorad analyze` against a numpy implementation written here.

The test writes random PEFT adapters (adapter_config.json + adapter_model.safetensors) and
base models of both families, runs lorad analyze --json, and recomputes everything with
numpy in float64:
  - spectra: the singular values of the formed ΔW = s·B·A (numpy.linalg.svd), the energy
    shares of the top 1/2/4/8 directions, the numerical rank (numpy.linalg.matrix_rank,
    whose default tolerance is the rule lorad states), ‖ΔW‖_F; on full-rank factors and
    on rank-deficient ones (B with zero columns, B with duplicate columns, A with
    duplicate rows, r above min(d, k)), with rank_pattern, alpha_pattern and rsLoRA;
    a fused GPT-2 c_attn with block-structured B (lorad's q/k/v slice export) analysed
    as its slices, and one with a dense B as one module;
  - similarity: φ(i,j) = ‖U₁[:, :i]ᵀU₂[:, :j]‖²_F / min(i,j) for the right-singular
    vectors of A and the left-singular vectors of B, r 4 against r 12, up to each
    factor's rank; an adapter against itself gives φ = 1;
  - amplification_gpt2, amplification_llama: ‖UᵀWV‖_F for ΔW's top-r directions and
    W's, ‖W‖_F, ‖ΔW‖_F and the factor, with W from a GPT-2 base (Conv1D [in, out],
    c_attn's q/v rows) and a Llama base (nn.Linear [out, in], grouped-query k/v); the
    random directions' projection against its expectation r·‖W‖_F/√(d·k), a fixed seed
    reproducing it and another seed changing it;
  - outputs: --out's analysis.json equals --json's document, the tables name every
    module, every PNG is a PNG, an existing --out is refused and left as it was, and
    --overwrite replaces exactly the analysis;
  - errors: every bad input exits 2 with one line that names the file or flag.
"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

EPS = np.finfo(np.float64).eps
TOL = 1e-9  # relative agreement asked of float64 results computed two ways
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Failures:
    def __init__(self):
        self.msgs = []

    def check(self, ok, msg):
        if not ok:
            self.msgs.append(msg)
            print(f"FAIL: {msg}", flush=True)
        return ok


# ---- files ----

def write_safetensors(path, tensors):
    """TENSORS: name -> float array, written as F32 in the given order."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def peft_key(module, which):
    return f"base_model.model.{module}.lora_{which}.weight"


def write_adapter(path, modules, r, alpha, rslora=False, rank_pattern=None, alpha_pattern=None):
    """MODULES: module -> (A (r,k), B (d,r)) float32 arrays."""
    os.makedirs(path, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rslora, "bias": "none",
           "target_modules": sorted({m.split(".")[-1] for m in modules}), "task_type": "CAUSAL_LM",
           "rank_pattern": rank_pattern or {}, "alpha_pattern": alpha_pattern or {}, "fan_in_fan_out": False}
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = {}
    for m, (A, B) in modules.items():
        tensors[peft_key(m, "A")] = A
        tensors[peft_key(m, "B")] = B
    write_safetensors(os.path.join(path, "adapter_model.safetensors"), tensors)


GPT2 = dict(C=32, L=2, V=64, P=16)


def write_gpt2(path, rng, C=GPT2["C"]):
    """A GPT-2 directory; returns {module: Conv1D weight [in, out]} of its linears."""
    os.makedirs(path, exist_ok=True)
    L, V, P = GPT2["L"], GPT2["V"], GPT2["P"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": C, "n_head": 4,
                   "n_layer": L, "n_positions": P, "vocab_size": V, "n_inner": None,
                   "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}, f)
    t, convs = {"transformer.wte.weight": rng.normal(0, 0.3, (V, C)), "transformer.wpe.weight": rng.normal(0, 0.1, (P, C))}, {}
    for i in range(L):
        p = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            t[p + ln + ".weight"] = 1 + rng.normal(0, 0.1, C)
            t[p + ln + ".bias"] = rng.normal(0, 0.05, C)
        for name, fin, fout in (("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, 4 * C),
                                ("mlp.c_proj", 4 * C, C)):
            w = rng.normal(0, 1 / math.sqrt(fin), (fin, fout)).astype(np.float32)
            t[p + name + ".weight"], t[p + name + ".bias"] = w, rng.normal(0, 0.05, fout)
            convs[p + name] = w
    t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = np.ones(C), np.zeros(C)
    write_safetensors(os.path.join(path, "model.safetensors"), t)
    return convs


LLAMA = dict(C=48, L=2, V=64, F=96, heads=4, kv=2)


def write_llama(path, rng):
    """A Llama directory with grouped-query attention; returns {module: weight [out, in]}."""
    os.makedirs(path, exist_ok=True)
    C, L, V, F, H, KV = (LLAMA[k] for k in ("C", "L", "V", "F", "heads", "kv"))
    hd = C // H
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
                   "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": H,
                   "num_key_value_heads": KV, "vocab_size": V, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                   "max_position_embeddings": 32, "tie_word_embeddings": False}, f)
    t, lins = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, C))}, {}
    shapes = {"self_attn.q_proj": (H * hd, C), "self_attn.k_proj": (KV * hd, C), "self_attn.v_proj": (KV * hd, C),
              "self_attn.o_proj": (C, H * hd), "mlp.gate_proj": (F, C), "mlp.up_proj": (F, C),
              "mlp.down_proj": (C, F)}
    for i in range(L):
        for n, shape in shapes.items():
            w = rng.normal(0, 1 / math.sqrt(shape[1]), shape).astype(np.float32)
            t[f"model.layers.{i}.{n}.weight"] = w
            lins[f"model.layers.{i}.{n}"] = w
        t[f"model.layers.{i}.input_layernorm.weight"] = np.ones(C)
        t[f"model.layers.{i}.post_attention_layernorm.weight"] = np.ones(C)
    t["model.norm.weight"], t["lm_head.weight"] = np.ones(C), rng.normal(0, 0.2, (V, C))
    write_safetensors(os.path.join(path, "model.safetensors"), t)
    return lins


def factors(rng, r, d, k, kind="full"):
    """Random A (r,k), B (d,r) in float32; KIND makes them rank-deficient on purpose."""
    A = rng.normal(0, 1 / math.sqrt(k), (r, k)).astype(np.float32)
    B = rng.normal(0, 0.1, (d, r)).astype(np.float32)
    if kind == "zero_cols":  # two directions that learned nothing
        B[:, 1] = 0
        B[:, r - 1] = 0
    elif kind == "dup_cols":  # B repeats a direction
        B[:, 2] = B[:, 0]
    elif kind == "dup_rows":  # A repeats a direction
        A[3] = A[1]
    return A, B


# ---- running lorad ----

def run(lorad, args, env=None):
    cmd = [lorad, "analyze"] + [str(a) for a in args]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def analyze_json(fails, lorad, args, what):
    p = run(lorad, args + ["--json"])
    if not fails.check(p.returncode == 0, f"{what}: exit {p.returncode}: {p.stderr.strip()}"):
        return None
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError as e:
        fails.check(False, f"{what}: --json printed no JSON ({e}): {p.stdout[:200]!r}")
        return None


def close(a, b, scale=1.0, tol=TOL):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol * max(scale, 1e-300)))


# ---- the numpy reference ----

def ref_spectrum(A, B, s):
    dW = s * (B.astype(np.float64) @ A.astype(np.float64))
    S = np.linalg.svd(dW, compute_uv=False)
    e = S ** 2
    shares = {str(n): float(e[:n].sum() / e.sum()) for n in (1, 2, 4, 8)}
    return dW, S, shares, int(np.linalg.matrix_rank(dW))


def ref_basis(M, which):
    U, S, Vt = np.linalg.svd(M.astype(np.float64), full_matrices=False)
    rank = int(np.linalg.matrix_rank(M.astype(np.float64)))
    return Vt[:rank].T if which == "A" else U[:, :rank]


def ref_phi(U1, U2):
    m = (U1.T @ U2) ** 2
    c = m.cumsum(0).cumsum(1)
    i, j = np.meshgrid(np.arange(1, U1.shape[1] + 1), np.arange(1, U2.shape[1] + 1), indexing="ij")
    return c / np.minimum(i, j)


def ref_amplification(dW, W):
    U, S, Vt = np.linalg.svd(dW)
    r = int(np.linalg.matrix_rank(dW))
    proj = float(np.linalg.norm(U[:, :r].T @ W @ Vt[:r].T))
    sw = np.linalg.svd(W, compute_uv=False)
    return {"r": r, "w_frobenius": float(np.linalg.norm(W)), "delta_frobenius": float(np.linalg.norm(dW)),
            "projection_delta": proj, "projection_w": float(np.sqrt((sw[:r] ** 2).sum())),
            "factor": float(np.linalg.norm(dW)) / proj}


def check_spectrum(fails, got, A, B, s, name):
    """GOT: a module's JSON against numpy's spectrum of s·B·A."""
    dW, S, shares, rank = ref_spectrum(A, B, s)
    p = min(A.shape[0], *dW.shape)
    sv = got["singular_values"]
    fails.check(len(sv) == p, f"{name}: {len(sv)} singular values, expected min(d, k, r) = {p}")
    if len(sv) == p:
        fails.check(close(sv, S[:p], S[0]), f"{name}: singular values {sv[:4]}... numpy {S[:4]}...")
    fails.check(bool(np.all(S[p:] <= 1e-12 * S[0])), f"{name}: test defect: ΔW has values past r")
    fails.check(got["rank"] == rank, f"{name}: rank {got['rank']}, numpy.linalg.matrix_rank {rank}")
    fails.check(close(got["frobenius"], np.linalg.norm(dW), S[0]), f"{name}: |dW|_F {got['frobenius']}")
    fails.check(abs(got["scale"] - s) <= 1e-12 * s, f"{name}: scale {got['scale']}, expected {s}")
    for n, share in shares.items():
        fails.check(abs(got["energy_top"][n] - share) <= 1e-9, f"{name}: energy top {n} {got['energy_top'][n]} vs {share}")
    tol = S[0] * max(dW.shape) * EPS
    fails.check(close(got["tolerance"], tol, tol), f"{name}: tolerance {got['tolerance']} vs {tol}")
    return rank


def by_name(doc):
    return {m["name"]: m for m in doc["modules"]} if doc else {}


# ---- cases ----

def llama_modules(rng):
    """Modules of a Llama-shaped adapter: each rank-deficient kind once, r above min(d,k) once."""
    C, F, KV = LLAMA["C"], LLAMA["F"], LLAMA["kv"] * (LLAMA["C"] // LLAMA["heads"])
    return {
        "model.layers.0.self_attn.q_proj": (8,) + factors(rng, 8, C, C),
        "model.layers.0.self_attn.v_proj": (8,) + factors(rng, 8, KV, C, "zero_cols"),
        "model.layers.0.self_attn.o_proj": (8,) + factors(rng, 8, C, C, "dup_cols"),
        "model.layers.1.mlp.down_proj": (8,) + factors(rng, 8, C, F, "dup_rows"),
        "model.layers.1.self_attn.k_proj": (30,) + factors(rng, 30, KV, C),  # r 30 > d 24
    }


def case_spectra(fails, lorad, work):
    rng = np.random.default_rng(1)
    mods = llama_modules(rng)
    rank_pattern = {"model.layers.1.self_attn.k_proj": 30}
    alpha_pattern = {"o_proj": 3.0}
    path = os.path.join(work, "llama_adapter")
    write_adapter(path, {m: (A, B) for m, (_, A, B) in mods.items()}, 8, 16, rslora=True,
                  rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    doc = by_name(analyze_json(fails, lorad, ["--adapter", path], "llama adapter"))
    fails.check(sorted(doc) == sorted(mods), f"modules {sorted(doc)}, expected {sorted(mods)}")
    for m, (r, A, B) in mods.items():
        if m in doc:
            alpha = 3.0 if m.endswith("o_proj") else 16.0
            rank = check_spectrum(fails, doc[m], A, B, alpha / math.sqrt(r), m)
            print(f"{m}: r {r}, rank {rank} (lorad {doc[m]['rank']})", flush=True)
    deficient = {m: doc[m]["rank"] for m in doc if "q_proj" not in m and "k_proj" not in m}
    fails.check(deficient and all(v < 8 for v in deficient.values()),
                f"test defect: the rank-deficient factors are not deficient: {deficient}")

    # a GPT-2 adapter: layer 0's c_attn as lorad exports q/v slices (block B, one zero
    # column in v's block), layer 1's c_attn dense (one module), c_proj whole
    C, r = GPT2["C"], 4
    Aq, Bq = factors(rng, r, C, C)
    Av, Bv = factors(rng, r, C, C)
    Bv[:, 2] = 0
    A0 = np.concatenate([Aq, Av])
    B0 = np.zeros((3 * C, 2 * r), np.float32)
    B0[:C, :r], B0[2 * C:, r:] = Bq, Bv
    A1, B1 = factors(rng, r, 3 * C, C)
    A2, B2 = factors(rng, r, C, C, "dup_cols")
    path = os.path.join(work, "gpt2_adapter")
    write_adapter(path, {"transformer.h.0.attn.c_attn": (A0, B0), "transformer.h.1.attn.c_attn": (A1, B1),
                         "transformer.h.1.attn.c_proj": (A2, B2)}, r, 8,
                  rank_pattern={"transformer.h.0.attn.c_attn": 2 * r}, alpha_pattern={"transformer.h.0.attn.c_attn": 16})
    doc = by_name(analyze_json(fails, lorad, ["--adapter", path], "gpt2 adapter"))
    want = {"transformer.h.0.attn.c_attn.q": (Aq, Bq, r), "transformer.h.0.attn.c_attn.v": (Av[[0, 1, 3]], Bv[:, [0, 1, 3]], 3),
            "transformer.h.1.attn.c_attn": (A1, B1, r), "transformer.h.1.attn.c_proj": (A2, B2, r)}
    fails.check(sorted(doc) == sorted(want), f"gpt2 modules {sorted(doc)}, expected {sorted(want)}")
    for m, (A, B, rr) in want.items():
        if m in doc:
            check_spectrum(fails, doc[m], A, B, 2.0, m)
            fails.check(doc[m]["r"] == rr and doc[m]["slice"] == (m[-1] if "c_attn." in m else None),
                        f"{m}: r {doc[m]['r']} slice {doc[m]['slice']}")


def case_similarity(fails, lorad, work):
    rng = np.random.default_rng(2)
    C, F = LLAMA["C"], LLAMA["F"]
    pairs = {"model.layers.0.self_attn.q_proj": ("full", "full", C, C),
             "model.layers.0.mlp.down_proj": ("dup_rows", "zero_cols", C, F),
             "model.layers.1.self_attn.o_proj": ("dup_cols", "full", C, C)}
    one, two = {}, {}
    for m, (k1, k2, d, k) in pairs.items():
        one[m] = factors(rng, 4, d, k, k1)
        A2, B2 = factors(rng, 12, d, k, k2)
        A2[:2] += one[m][0][:2]  # share two directions, so that φ is neither 0 nor 1
        B2[:, :2] += one[m][1][:, :2]
        two[m] = (A2, B2)
    p1, p2 = os.path.join(work, "r4"), os.path.join(work, "r12")
    write_adapter(p1, one, 4, 8)
    write_adapter(p2, two, 12, 24)
    doc = by_name(analyze_json(fails, lorad, ["--adapter", p1, "--against", p2], "r4 against r12"))
    for m in pairs:
        g = doc.get(m, {}).get("against")
        if not fails.check(g is not None, f"{m}: no 'against' results"):
            continue
        check_spectrum(fails, g, *two[m], 2.0, m + " (--against)")
        for which, idx in (("A", 0), ("B", 1)):
            want = ref_phi(ref_basis(one[m][idx], which), ref_basis(two[m][idx], which))
            got = g[f"phi_{which}"]
            fails.check((got["rank_adapter"], got["rank_against"]) == want.shape,
                        f"{m}: phi_{which} ranks {got['rank_adapter']}x{got['rank_against']}, numpy {want.shape}")
            if np.asarray(got["phi"]).shape == want.shape:
                fails.check(close(got["phi"], want, 1.0, 1e-8), f"{m}: phi_{which} {got['phi'][0][:3]} numpy {want[0, :3]}")
                print(f"{m}: phi_{which}(1,1) {want[0, 0]:.4f}, phi_{which}(m,m) {want[-1, min(want.shape) - 1]:.4f}")
            fails.check(0.05 < want[0, -1] < 0.999, f"test defect: {m} phi_{which} is trivial: {want[0, -1]}")
    self_doc = by_name(analyze_json(fails, lorad, ["--adapter", p2, "--against", p2], "r12 against itself"))
    for m, mod in self_doc.items():
        for which in "AB":
            fails.check(close(mod["against"][f"phi_{which}"]["phi"], 1.0 + 0 * np.asarray(mod["against"][f"phi_{which}"]["phi"]),
                              1.0, 1e-9), f"{m}: phi_{which} of an adapter against itself is not 1")


def check_amplification(fails, lorad, adapter, model, weights, doc_mods):
    """WEIGHTS: name -> (A, B, s, W [out, in]) as the reference sees them."""
    doc = by_name(analyze_json(fails, lorad, ["--adapter", adapter, "--model", model], "--model"))
    fails.check(sorted(doc) == sorted(weights), f"modules {sorted(doc)}, expected {sorted(weights)}")
    for m, (A, B, s, W) in weights.items():
        got = doc.get(m, {}).get("amplification")
        if not fails.check(got is not None, f"{m}: no amplification"):
            continue
        dW = s * (B.astype(np.float64) @ A.astype(np.float64))
        want = ref_amplification(dW, W.astype(np.float64))
        for key, v in want.items():
            fails.check(close(got[key], v, abs(v), 1e-8), f"{m}: {key} {got[key]}, numpy {v}")
        d, k, r = W.shape[0], W.shape[1], want["r"]
        expect = r * want["w_frobenius"] / math.sqrt(d * k)
        ratio = got["projection_random"] / expect
        print(f"{m}: factor {want['factor']:.3f}, |U^T W V| dW {want['projection_delta']:.4f} W "
              f"{want['projection_w']:.4f} random {got['projection_random']:.4f} (expected about {expect:.4f})")
        fails.check(0.4 < ratio < 2.5, f"{m}: random projection {got['projection_random']} far from {expect}")
    again = by_name(analyze_json(fails, lorad, ["--adapter", adapter, "--model", model], "--model again"))
    other = by_name(analyze_json(fails, lorad, ["--adapter", adapter, "--model", model, "--seed", 7], "--seed 7"))
    for m in doc:
        a = doc[m]["amplification"]["projection_random"]
        fails.check(again[m]["amplification"]["projection_random"] == a, f"{m}: the same seed draws other directions")
        fails.check(other[m]["amplification"]["projection_random"] != a, f"{m}: --seed 7 draws the same directions")


def case_amplification_gpt2(fails, lorad, work):
    rng = np.random.default_rng(3)
    C, r = GPT2["C"], 4
    convs = write_gpt2(os.path.join(work, "gpt2"), rng)
    Aq, Bq = factors(rng, r, C, C)
    Av, Bv = factors(rng, r, C, C, "dup_cols")
    A0 = np.concatenate([Aq, Av])
    B0 = np.zeros((3 * C, 2 * r), np.float32)
    B0[:C, :r], B0[2 * C:, r:] = Bq, Bv
    A1, B1 = factors(rng, r, 4 * C, C)
    A2, B2 = factors(rng, r, C, 4 * C, "zero_cols")
    mods = {"transformer.h.0.attn.c_attn": (A0, B0), "transformer.h.1.mlp.c_fc": (A1, B1),
            "transformer.h.1.mlp.c_proj": (A2, B2)}
    adapter = os.path.join(work, "adapter")
    write_adapter(adapter, mods, r, 8, rank_pattern={"c_attn": 2 * r}, alpha_pattern={"c_attn": 16})
    conv = convs["transformer.h.0.attn.c_attn"]  # [in, out]: W_q is its first C columns, transposed
    weights = {"transformer.h.0.attn.c_attn.q": (Aq, Bq, 2.0, conv[:, :C].T),
               "transformer.h.0.attn.c_attn.v": (Av, Bv, 2.0, conv[:, 2 * C:].T),
               "transformer.h.1.mlp.c_fc": (A1, B1, 2.0, convs["transformer.h.1.mlp.c_fc"].T),
               "transformer.h.1.mlp.c_proj": (A2, B2, 2.0, convs["transformer.h.1.mlp.c_proj"].T)}
    check_amplification(fails, lorad, adapter, os.path.join(work, "gpt2"), weights, mods)


def case_amplification_llama(fails, lorad, work):
    rng = np.random.default_rng(4)
    lins = write_llama(os.path.join(work, "llama"), rng)
    mods = llama_modules(rng)
    del mods["model.layers.1.self_attn.k_proj"]  # r 30 > d: its own rank_pattern; spectra covers it
    adapter = os.path.join(work, "adapter")
    write_adapter(adapter, {m: (A, B) for m, (_, A, B) in mods.items()}, 8, 4)
    weights = {m: (A, B, 0.5, lins[m]) for m, (_, A, B) in mods.items()}
    check_amplification(fails, lorad, adapter, os.path.join(work, "llama"), weights, mods)


def png_ok(path):
    with open(path, "rb") as f:
        head = f.read(24)
    w, h = struct.unpack(">II", head[16:24]) if len(head) == 24 else (0, 0)
    return head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and w > 0 and h > 0


def tree(path):
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = f.read()
    return out


def case_outputs(fails, lorad, work):
    rng = np.random.default_rng(5)
    C = LLAMA["C"]
    mods = {f"model.layers.{i}.self_attn.q_proj": factors(rng, 4, C, C) for i in range(2)}
    mods2 = {m: factors(rng, 8, C, C) for m in mods}
    p1, p2, out = os.path.join(work, "a"), os.path.join(work, "b"), os.path.join(work, "out")
    write_adapter(p1, mods, 4, 8)
    write_adapter(p2, mods2, 8, 8)
    args = ["--adapter", p1, "--against", p2, "--model", os.path.join(work, "llama")]
    write_llama(os.path.join(work, "llama"), rng)
    p = run(lorad, args + ["--out", out])
    fails.check(p.returncode == 0, f"--out: exit {p.returncode}: {p.stderr.strip()}")
    for m in mods:
        fails.check(p.stdout.count(m) == 3, f"the tables name {m} {p.stdout.count(m)} times, not 3 (one per table)")
    doc = analyze_json(fails, lorad, args, "--json")
    with open(os.path.join(out, "analysis.json")) as f:
        fails.check(json.load(f) == doc, "analysis.json differs from --json's document")
    want = sorted(["analysis.json"] + [f"{sub}/{m}.png" for m in mods for sub in ("spectrum", "phi")])
    files = tree(out)
    fails.check(sorted(files) == want, f"--out holds {sorted(files)}, expected {want}")
    for name in files:
        if name.endswith(".png"):
            fails.check(png_ok(os.path.join(out, name)), f"{name} is not a PNG")
    # a second run is refused and leaves OUT as it was; a user's file survives --overwrite
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine\n")
    before = tree(out)
    p = run(lorad, args + ["--out", out])
    one_line_error(fails, p, ["--out", "--overwrite"], "an existing analysis")
    fails.check(tree(out) == before, "a refused --out was changed")
    p = run(lorad, ["--adapter", p1, "--out", out, "--overwrite"])
    fails.check(p.returncode == 0, f"--overwrite: exit {p.returncode}: {p.stderr.strip()}")
    now = sorted(tree(out))
    want = sorted(["analysis.json", "notes.txt"] + [f"spectrum/{m}.png" for m in mods])
    fails.check(now == want, f"after --overwrite without --against, --out holds {now}, expected {want}")
    p = run(lorad, ["--adapter", p1, "--out", os.path.join(work, "noplots"), "--plots", "off"])
    fails.check(p.returncode == 0 and sorted(tree(os.path.join(work, "noplots"))) == ["analysis.json"],
                f"--plots off: exit {p.returncode}, wrote {sorted(tree(os.path.join(work, 'noplots')))}")


def one_line_error(fails, p, names, what):
    lines = p.stderr.strip().splitlines()
    ok = p.returncode == 2 and len(lines) == 1 and lines[0].startswith("lorad: ") and all(n in lines[0] for n in names)
    fails.check(ok, f"{what}: expected exit 2 and one line naming {names}; exit {p.returncode}, stderr {p.stderr!r}")
    if ok:
        print(f"  {what}: {lines[0]}", flush=True)


def case_errors(fails, lorad, work):
    rng = np.random.default_rng(6)
    C = LLAMA["C"]
    good = {f"model.layers.{i}.self_attn.q_proj": factors(rng, 4, C, C) for i in range(2)}

    def adapter(name, mods=good, r=4, **kw):
        path = os.path.join(work, name)
        write_adapter(path, mods, r, 8, **kw)
        return path

    ok = adapter("good")
    cfg_file = "adapter_config.json"
    st_file = "adapter_model.safetensors"
    cases = []
    cases.append(("a missing adapter", [os.path.join(work, "nowhere")], [cfg_file]))
    p = adapter("bad_json")
    with open(os.path.join(p, cfg_file), "w") as f:
        f.write('{"peft_type": "LORA", "r": 4,\n')
    cases.append(("malformed adapter_config.json", [p], [cfg_file]))
    p = adapter("bad_st")
    with open(os.path.join(p, st_file), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    cases.append(("malformed safetensors", [p], [st_file]))
    cases.append(("lora_A of another rank", [adapter("bad_rank", r=5)], [st_file, "lora_A"]))
    m0 = "model.layers.0.self_attn.q_proj"
    p = adapter("stray")
    write_safetensors(os.path.join(p, st_file), {peft_key(m0, "A"): good[m0][0], peft_key(m0, "B"): good[m0][1],
                                                 "model.norm.weight": np.ones(4)})
    cases.append(("a tensor that is not LoRA", [p], [st_file, "model.norm.weight"]))
    p = adapter("lonely_b")
    write_safetensors(os.path.join(p, st_file), {peft_key(m0, "B"): good[m0][1]})
    cases.append(("lora_B without lora_A", [p], [st_file, "lora_B"]))
    nan = {m: (A.copy(), B.copy()) for m, (A, B) in good.items()}
    nan[m0][1][3, 1] = np.nan
    cases.append(("a NaN in lora_B", [adapter("nan", nan)], [st_file, "non-finite"]))
    m1 = "model.layers.1.self_attn.q_proj"
    cases.append(("--against lacks a module", [ok, "--against", adapter("one", {m0: good[m0]})], ["--against", m1]))
    more = dict(good, **{"model.layers.1.self_attn.o_proj": factors(rng, 4, C, C)})
    cases.append(("--against has another module", [ok, "--against", adapter("more", more)],
                  ["--against", "model.layers.1.self_attn.o_proj"]))
    wide = {m: factors(rng, 4, C, C + 8) for m in good}
    cases.append(("--against of another shape", [ok, "--against", adapter("wide", wide)], ["--against", m0]))
    write_gpt2(os.path.join(work, "gpt2"), rng)
    cases.append(("--model without the module", [ok, "--model", os.path.join(work, "gpt2")], ["--model", m0]))
    write_llama(os.path.join(work, "llama"), rng)
    cases.append(("--model of another width", [adapter("wide_only", wide), "--model", os.path.join(work, "llama")],
                  ["--model", m0]))
    cases.append(("--model missing", [ok, "--model", os.path.join(work, "nomodel")], ["config.json"]))
    for what, args, names in cases:
        one_line_error(fails, run(lorad, ["--adapter"] + args), names, what)
    # gnuplot missing: refused before anything is written
    out = os.path.join(work, "out_nognuplot")
    p = run(lorad, ["--adapter", ok, "--out", out], env=dict(os.environ, PATH="/nonexistent"))
    one_line_error(fails, p, ["gnuplot", "--plots off"], "gnuplot not on the PATH")
    fails.check(not os.path.exists(os.path.join(out, "analysis.json")), "gnuplot missing, yet analysis.json was written")
    one_line_error(fails, run(lorad, ["--against", ok]), ["--adapter"], "no --adapter")


CASES = {"spectra": case_spectra, "similarity": case_similarity, "amplification_gpt2": case_amplification_gpt2,
         "amplification_llama": case_amplification_llama, "outputs": case_outputs, "errors": case_errors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorad", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    a = ap.parse_args()
    fails = Failures()
    if not (os.path.isfile(a.lorad) and os.access(a.lorad, os.X_OK)):
        print(f"FAIL: lorad binary not found: {a.lorad}")
        sys.exit(1)
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    CASES[a.case](fails, a.lorad, a.workdir)
    print(f"analyze {a.case}: {'PASS' if not fails.msgs else f'{len(fails.msgs)} failure(s)'}", flush=True)
    sys.exit(1 if fails.msgs else 0)


if __name__ == "__main__":
    main()
