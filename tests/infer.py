"""infer.py: `lorad eval`, `lorad merge` and `lorad generate` against the PyTorch reference.

Cases (--case):
  merge           two random PEFT adapters with non-zero B (q/v block form + attn.c_proj +
                  an h.1.mlp.c_fc rank/alpha pattern; plain c_attn + attn.c_proj + mlp.c_fc
                  with use_rslora and patterns): the f32 merge equals W0 + s*(B@A)^T within
                  1e-6 per tensor; eval --adapter equals eval of the merged directory
                  (1e-6) and the reference loss (1e-5); bf16/f16 merges are the f32 merge
                  rounded to nearest even; a sharded merge has an index covering every
                  tensor and evaluates to exactly the same loss; config.json and the
                  tokenizer files are copied byte for byte
  merge_refusals  an adapter for a module the model lacks (with A and B, or B alone), a
                  NaN in lora_B, a wrong lora_A shape, a lora_B without its lora_A: exit 2
                  with one line naming the adapter file (merge, and eval/generate for the
                  missing module), and nothing written
  roundtrip       export -> --init-adapter -> export (train --steps 1 --lr 0) keeps every
                  adapter tensor bit for bit, for --targets c_attn and q,v (rsLoRA)
  eval_ranks      eval alone and under `mpirun -np 2` (9 samples: an uneven split), .bin
                  and HDF5 with a loss mask, with and without --max-batches: same loss
                  within 1e-6, same token and sample counts, equal to the reference
  generate        greedy decoding (KV cache) equals the float64 reference's argmax
                  continuation, with and without an adapter and up to the last position;
                  seeded top-k sampling is reproducible, depends on the seed and stays in
                  the reference's top k; --max-new 0 prints nothing; a prompt longer than
                  n_positions is refused naming --prompt; a run the context cuts short
                  says so on stderr
"""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_ref as ref  # noqa: E402

CFG = ref.GPT2Config(vocab_size=260, n_positions=64, n_embd=32, n_head=4, n_layer=2)
T = 16
N_SAMPLES = 9  # odd: two ranks split it unevenly
TOKENIZER = '{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}, "note": "h\\u00e9"}\n'
MERGES = "#version: 0.2\na b\n"


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------

def make_model(work, rng, name="model", wpe_std=None):
    """A random F32 model directory with a tokenizer; returns (dir, the weights as stored).
    WPE_STD replaces the position embeddings' 0.1: with the default, the tied embeddings
    make a random model repeat its last token forever, which would hide decoding bugs."""
    path = os.path.join(work, name)
    w = ref.random_gpt2_weights(CFG, rng)
    if wpe_std is not None:
        w["wpe.weight"] *= wpe_std / 0.1
    ref.write_model_dir(path, CFG, w)
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        f.write(TOKENIZER)
    with open(os.path.join(path, "merges.txt"), "w") as f:
        f.write(MERGES)
    return path, ref.read_model_dir(path)[1]


def make_tokens(rng, n=N_SAMPLES, extra=5):
    """N samples of T (+1) tokens, plus EXTRA trailing tokens no sample reaches."""
    return rng.integers(0, CFG.vocab_size, n * T + 1 + extra)


def write_adapter(path, config, tensors):
    """Writes an F32 adapter and returns (config, tensors) as lorad will read them."""
    ref.write_peft_dir(path, config, tensors, "F32")
    return ref.read_peft_dir(path)


def adapter_block_qv(work, rng, name="adapter_qv"):
    """lorad's export form of q,v (block B, rank/alpha pattern for c_attn) + attn.c_proj,
    plus h.1.mlp.c_fc with its own rank_pattern / alpha_pattern entries (h.0.mlp.c_fc
    keeps the global r and alpha)."""
    targets, r, alpha = ["q", "v", "attn.c_proj"], 4, 8
    specs = ref.resolve_targets(CFG, targets)
    params = ref.random_adapters(specs, r, ref.lora_scale(alpha, r, False), rng)
    config, tensors = ref.export_adapters(specs, params, CFG, targets, r, alpha, False)
    config["target_modules"].append("mlp.c_fc")
    config["rank_pattern"]["h.1.mlp.c_fc"] = 3
    config["alpha_pattern"]["h.1.mlp.c_fc"] = 5
    fc = [ref.module_path(i, "mlp.c_fc") for i in range(CFG.n_layer)]
    tensors.update(ref.random_peft_tensors(CFG, config, fc, rng))
    return os.path.join(work, name), *write_adapter(os.path.join(work, name), config, tensors)


def adapter_plain_rslora(work, rng, name="adapter_rs"):
    """Plain c_attn + attn.c_proj + mlp.c_fc, use_rslora, a rank and an alpha pattern."""
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "",
              "r": 4, "lora_alpha": 6, "use_rslora": True,
              "target_modules": ["c_attn", "attn.c_proj", "mlp.c_fc"], "fan_in_fan_out": True,
              "lora_dropout": 0.0, "bias": "none", "rank_pattern": {"h.0.attn.c_proj": 2},
              "alpha_pattern": {"c_fc": 3.5}}
    mods = ref.peft_targeted(config, [ref.module_path(i, n) for i in range(CFG.n_layer)
                                      for n, _, _ in ref.layer_linears(CFG)])
    assert len(mods) == 3 * CFG.n_layer
    tensors = ref.random_peft_tensors(CFG, config, mods, rng)
    return os.path.join(work, name), *write_adapter(os.path.join(work, name), config, tensors)


# --------------------------------------------------------------------------------------
# running lorad
# --------------------------------------------------------------------------------------

def expect_ok(fails, p, what):
    return fails.check(p.returncode == 0, f"{what} exited {p.returncode}: {p.stderr.strip()[-800:]}")


def eval_args(model, data, adapter=None, extra=()):
    return (["eval", "--model", model, "--data", data, "--batch", 4, "--seq", T, "--threads", 1, "--json"]
            + (["--adapter", adapter] if adapter else []) + list(extra))


def parse_eval(fails, p, what):
    """The JSON object of `lorad eval --json`, or None (a failure) when it is not there."""
    if not expect_ok(fails, p, what):
        return None
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    try:
        out = json.loads(lines[-1])
        assert set(out) == {"loss", "perplexity", "tokens", "samples"}, sorted(out)
    except Exception as e:  # noqa: BLE001 - any malformed output is a failure
        fails.add(f"{what}: stdout is not the eval JSON object ({e}): {p.stdout!r}")
        return None
    fails.check(len(lines) == 1, f"{what}: expected one line on stdout, got {p.stdout!r}")
    fails.check(ref.rel_err(out["perplexity"], math.exp(out["loss"])) < 1e-6,
                f"{what}: perplexity {out['perplexity']} is not exp(loss {out['loss']})")
    return out


def run_eval(fails, lorad, model, data, adapter=None, extra=(), what="eval"):
    return parse_eval(fails, ref.run_lorad(lorad, eval_args(model, data, adapter, extra)), what)


def one_line_error(fails, p, words, what):
    """Exit 2 and exactly one non-empty stderr line, starting "lorad: " and holding WORDS."""
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    ok = (p.returncode == 2 and len(lines) == 1 and lines[0].startswith("lorad: ")
          and all(w in lines[0] for w in words))
    fails.check(ok, f"{what}: expected exit 2 and one line naming {words}, got {p.returncode}: {p.stderr.strip()!r}")


# --------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------

def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def check_copies(fails, base, out, what):
    for name in ("config.json", "tokenizer.json", "merges.txt"):
        dst = os.path.join(out, name)
        fails.check(os.path.exists(dst) and file_bytes(dst) == file_bytes(os.path.join(base, name)),
                    f"{what}: {name} missing or not copied byte for byte")


def check_f32_merge(fails, merged_dir, base_w, want, what):
    """Every tensor of MERGED_DIR is F32, named transformer.*, and within 1e-6 of WANT."""
    got, dtypes, _ = ref.read_weights_dir(merged_dir)
    names = {"transformer." + k for k in base_w}
    fails.check(set(got) == names, f"{what}: tensor names {sorted(set(got) ^ names)} differ from the base model's")
    fails.check(set(dtypes.values()) == {"F32"}, f"{what}: dtypes {set(dtypes.values())}, expected F32")
    worst, moved = 0.0, []
    for k in base_w:
        g = got.get("transformer." + k)
        if g is None or not fails.check(g.shape == want[k].shape, f"{what}: {k} shape {g.shape}"):
            continue
        e = ref.rel_err(g, want[k])
        worst = max(worst, e)
        fails.check(e <= 1e-6, f"{what}: {k} differs from W0 + s*(B@A)^T by {e:.2e} relative")
        if ref.rel_err(want[k], base_w[k]) > 1e-2:
            moved.append(k)
    print(f"{what}: worst tensor rel err {worst:.2e}; {len(moved)} tensors moved by > 1e-2", flush=True)
    return got, moved


def case_merge_one(fails, lorad, work, model, base_w, data, tokens, adapter, config, tensors, label):
    want = ref.peft_merge(CFG, base_w, config, tensors)
    adapted = sorted({k[len("base_model.model.transformer."):-len(".lora_A.weight")] + ".weight"
                      for k in tensors if k.endswith("lora_A.weight")})
    out = os.path.join(work, f"merged_{label}")
    if not expect_ok(fails, ref.run_lorad(lorad, ["merge", "--model", model, "--adapter", adapter, "--out", out]),
                     f"{label}: merge"):
        return
    got, moved = check_f32_merge(fails, out, base_w, want, f"{label}: f32 merge")
    fails.check(sorted(moved) == adapted, f"{label}: the adapter should move exactly {adapted}, moved {moved}")
    check_copies(fails, model, out, f"{label}: merge")

    # eval: --adapter, the merged directory, the reference
    base_ref = ref.dataset_loss(CFG, ref.to_torch(base_w), tokens, None, T, 4)
    want_ref = ref.dataset_loss(CFG, ref.to_torch(want), tokens, None, T, 4)
    fails.check(abs(want_ref - base_ref) > 1e-3 * base_ref,  # 100x the tolerance below
                f"{label}: the adapter changes the reference loss by only {want_ref - base_ref:.2e}")
    e_base = run_eval(fails, lorad, model, data, what=f"{label}: eval base")
    e_ad = run_eval(fails, lorad, model, data, adapter, what=f"{label}: eval --adapter")
    e_mg = run_eval(fails, lorad, out, data, what=f"{label}: eval merged")
    if not (e_base and e_ad and e_mg):
        return
    print(f"{label}: loss base {e_base['loss']:.9g} (ref {base_ref:.9g}), adapter {e_ad['loss']:.9g} "
          f"(ref {want_ref:.9g}), merged dir {e_mg['loss']:.9g}", flush=True)
    fails.check(ref.rel_err(e_base["loss"], base_ref) <= 1e-5, f"{label}: base loss {e_base['loss']} != ref {base_ref}")
    fails.check(ref.rel_err(e_ad["loss"], want_ref) <= 1e-5,
                f"{label}: eval --adapter loss {e_ad['loss']} != reference {want_ref}")
    fails.check(ref.rel_err(e_ad["loss"], e_mg["loss"]) <= 1e-6,
                f"{label}: eval --adapter {e_ad['loss']} != eval of the merged dir {e_mg['loss']}")
    for e in (e_base, e_ad, e_mg):
        fails.check((e["tokens"], e["samples"]) == (N_SAMPLES * T, N_SAMPLES),
                    f"{label}: tokens/samples {e['tokens']}/{e['samples']}, expected {N_SAMPLES * T}/{N_SAMPLES}")

    # bf16 and f16: the f32 merge rounded (nearest even)
    f32 = {k: v.astype(np.float32) for k, v in got.items()}
    for dt, flag in (("BF16", "bf16"), ("F16", "f16")):
        o = os.path.join(work, f"merged_{label}_{flag}")
        if not expect_ok(fails, ref.run_lorad(lorad, ["merge", "--model", model, "--adapter", adapter, "--out", o,
                                                      "--dtype", flag]), f"{label}: merge --dtype {flag}"):
            continue
        header, buf = ref.read_safetensors_raw(os.path.join(o, "model.safetensors"))
        bad = []
        for name, x in f32.items():
            info = header.get(name)
            if info is None or info["dtype"] != dt or info["shape"] != list(x.shape):
                bad.append(f"{name}: {info}")
                continue
            a, b = info["data_offsets"]
            bits = np.frombuffer(buf[a:b], "<u2").reshape(x.shape)
            expect = ref.f32_to_bf16_bits(x) if dt == "BF16" else x.astype("<f2").view("<u2")
            if not np.array_equal(bits, expect):
                bad.append(f"{name}: {int((bits != expect).sum())} of {x.size} values not the rounded f32 merge")
        fails.check(not bad and len(header) - ("__metadata__" in header) == len(f32),
                    f"{label}: {flag} merge: {bad[:4]} ({len(header)} header entries)")
        check_copies(fails, model, o, f"{label}: merge --dtype {flag}")
    return out, e_mg


def check_sharded(fails, lorad, work, model, base_w, data, adapter, single_dir, single_eval):
    out = os.path.join(work, "merged_sharded")
    max_mb = 0.04  # 41,943 bytes: the 72 KB of a layer's weights cannot share one shard
    max_bytes = int(max_mb * 1048576)
    if not expect_ok(fails, ref.run_lorad(lorad, ["merge", "--model", model, "--adapter", adapter, "--out", out,
                                                  "--max-shard-mb", max_mb]), "sharded merge"):
        return
    index_path = os.path.join(out, "model.safetensors.index.json")
    if not fails.check(os.path.exists(index_path), "sharded merge: no model.safetensors.index.json"):
        return
    fails.check(not os.path.exists(os.path.join(out, "model.safetensors")),
                "sharded merge: model.safetensors written besides the shards")
    with open(index_path) as f:
        index = json.load(f)
    shards = sorted(n for n in os.listdir(out) if n.endswith(".safetensors"))
    n = len(shards)
    print(f"sharded merge: {n} shards {shards}", flush=True)
    fails.check(n >= 2 and shards == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)],
                f"sharded merge: shard files {shards}")
    try:
        got, dtypes, where = ref.read_weights_dir(out)
    except ValueError as e:
        fails.add(f"sharded merge: {e}")
        return
    single, _, _ = ref.read_weights_dir(single_dir)
    wm = index.get("weight_map", {})
    fails.check(set(wm) == set(single) == set(got), f"sharded merge: weight_map covers {sorted(set(wm) ^ set(single))} wrongly")
    fails.check(all(wm.get(k) == where[k] for k in got), "sharded merge: weight_map names the wrong shard")
    fails.check(set(where.values()) == set(shards), "sharded merge: a shard holds no tensor of the index")
    fails.check(all(np.array_equal(got[k], single[k]) for k in single if k in got),
                "sharded merge: tensors differ from the unsharded merge")
    total = sum(v.size * 4 for v in got.values())
    fails.check(index.get("metadata", {}).get("total_size") == total,
                f"sharded merge: total_size {index.get('metadata')} != {total}")
    for s in shards:
        t, _ = ref.read_safetensors(os.path.join(out, s))
        size = sum(v.size * 4 for v in t.values())
        fails.check(size <= max_bytes or len(t) == 1, f"sharded merge: {s} holds {size} bytes in {len(t)} tensors")
    check_copies(fails, model, out, "sharded merge")
    e = run_eval(fails, lorad, out, data, what="eval of the sharded merge")
    if e and single_eval:
        fails.check(e == single_eval, f"sharded merge evaluates to {e}, unsharded to {single_eval}")


def case_merge(fails, lorad, work):
    rng = np.random.default_rng(11)
    model, base_w = make_model(work, rng)
    tokens = make_tokens(rng)
    data = os.path.join(work, "data.bin")
    ref.write_bin(data, tokens)
    a1 = adapter_block_qv(work, rng)
    a2 = adapter_plain_rslora(work, rng)
    r1 = case_merge_one(fails, lorad, work, model, base_w, data, tokens, *a1, label="qv_block")
    case_merge_one(fails, lorad, work, model, base_w, data, tokens, *a2, label="rslora")
    if r1:
        check_sharded(fails, lorad, work, model, base_w, data, a1[0], *r1)


def case_merge_refusals(fails, lorad, work):
    rng = np.random.default_rng(12)
    model, _ = make_model(work, rng)
    data = os.path.join(work, "data.bin")
    ref.write_bin(data, make_tokens(rng))
    _, config, tensors = adapter_block_qv(work, rng, "good")

    def variant(name, edit, cfg_edit=None):
        c, t = json.loads(json.dumps(config)), {k: v.copy() for k, v in tensors.items()}
        edit(t)
        if cfg_edit:
            cfg_edit(c)
        d = os.path.join(work, name)
        ref.write_peft_dir(d, c, t, "F32")
        return d

    def h9(t):
        t["base_model.model.transformer.h.9.attn.c_proj.lora_A.weight"] = rng.normal(0, 0.2, (4, CFG.n_embd))
        t["base_model.model.transformer.h.9.attn.c_proj.lora_B.weight"] = rng.normal(0, 0.2, (CFG.n_embd, 4))

    def nan_b(t):
        t["base_model.model.transformer.h.1.attn.c_proj.lora_B.weight"][3, 1] = np.nan

    def wide_a(t):
        a = t["base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"]
        t["base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"] = np.concatenate([a, a[:, :1]], axis=1)

    def h9_b_only(t):  # the module is named by its lora_B alone
        t["base_model.model.transformer.h.9.attn.c_proj.lora_B.weight"] = rng.normal(0, 0.2, (CFG.n_embd, 4))

    def no_a(t):  # a module's B without its A: PEFT would not load it
        del t["base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"]

    cases = [("missing_module", h9, ["h.9"]), ("nan_b", nan_b, ["non-finite"]),
             ("wrong_a_shape", wide_a, ["lora_A", "h.0.attn.c_proj"]),
             ("missing_module_b_only", h9_b_only, ["h.9"]), ("b_without_a", no_a, ["h.0.attn.c_proj"])]
    for name, edit, words in cases:
        d = variant(name, edit)
        st = os.path.join(d, "adapter_model.safetensors")
        out = os.path.join(work, f"out_{name}")
        p = ref.run_lorad(lorad, ["merge", "--model", model, "--adapter", d, "--out", out])
        one_line_error(fails, p, [st] + words, f"merge with {name}")
        fails.check(not os.path.exists(os.path.join(out, "model.safetensors")), f"merge with {name} wrote a model")
        if name == "missing_module":
            p = ref.run_lorad(lorad, eval_args(model, data, d))
            one_line_error(fails, p, [st, "h.9"], f"eval --adapter with {name}")
            fails.check(p.stdout.strip() == "", f"eval with {name} printed {p.stdout!r}")
            p = ref.run_lorad(lorad, ["generate", "--model", model, "--adapter", d, "--prompt", "ab", "--max-new", 3])
            one_line_error(fails, p, [st, "h.9"], f"generate --adapter with {name}")
            fails.check(p.stdout == "", f"generate with {name} printed {p.stdout!r}")
    # the unedited adapter goes through: the refusals are about the edits
    p = ref.run_lorad(lorad, ["merge", "--model", model, "--adapter", os.path.join(work, "good"),
                              "--out", os.path.join(work, "out_good")])
    expect_ok(fails, p, "merge of the unedited adapter")


# --------------------------------------------------------------------------------------
# roundtrip
# --------------------------------------------------------------------------------------

def case_roundtrip(fails, lorad, work):
    rng = np.random.default_rng(13)
    model, base_w = make_model(work, rng)
    tokens = make_tokens(rng)
    data = os.path.join(work, "data.bin")
    ref.write_bin(data, tokens)
    for targets, r, alpha, rs in ((["c_attn"], 4, 8, False), (["q", "v"], 3, 5, True)):
        label = ",".join(targets)
        specs = ref.resolve_targets(CFG, targets)
        scale = ref.lora_scale(alpha, r, rs)
        params = ref.random_adapters(specs, r, scale, rng)
        config, tensors = ref.export_adapters(specs, params, CFG, targets, r, alpha, rs)
        x = os.path.join(work, "x_" + "_".join(targets))
        ref.write_peft_dir(x, config, tensors, "F32")
        out = os.path.join(work, "out_" + "_".join(targets))
        args = ["train", "--model", model, "--data", data, "--out", out, "--init-adapter", x, "--steps", 1,
                "--lr", 0, "--batch", 2, "--seq", T, "--targets", label, "--rank", r, "--alpha", alpha,
                "--shuffle", "off", "--threads", 1] + (["--rslora"] if rs else [])
        if not expect_ok(fails, ref.run_lorad(lorad, args), f"{label}: train --init-adapter"):
            continue
        h0, d0 = ref.read_safetensors_raw(os.path.join(x, "adapter_model.safetensors"))
        h1, d1 = ref.read_safetensors_raw(os.path.join(out, "adapter", "adapter_model.safetensors"))
        names0 = {k for k in h0 if k != "__metadata__"}
        names1 = {k for k in h1 if k != "__metadata__"}
        fails.check(names0 == names1, f"{label}: exported tensors {sorted(names1)} != {sorted(names0)}")
        for k in sorted(names0 & names1):
            same = (h0[k]["dtype"] == h1[k]["dtype"] and h0[k]["shape"] == h1[k]["shape"]
                    and d0[slice(*h0[k]["data_offsets"])] == d1[slice(*h1[k]["data_offsets"])])
            fails.check(same, f"{label}: {k} is not bit-identical after export -> --init-adapter -> export")
        with open(os.path.join(out, "adapter", "adapter_config.json")) as f:
            c1 = json.load(f)
        for key in ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "fan_in_fan_out"):
            fails.check(c1.get(key) == config[key], f"{label}: adapter_config {key} {c1.get(key)!r} != {config[key]!r}")
        fails.check(sorted(c1.get("target_modules", [])) == sorted(config["target_modules"]),
                    f"{label}: target_modules {c1.get('target_modules')} != {config['target_modules']}")
        # the adapter was used, not just copied: step 1's loss is the loss with it
        rows = ref.read_metrics(os.path.join(out, "metrics.jsonl"))
        _, t_read = ref.read_peft_dir(x)
        W = ref.to_torch(ref.peft_merge(CFG, base_w, config, t_read))
        inp, tgt, w = ref.step_batch(tokens, None, T, 2, 0)
        with torch.no_grad():
            want = ref.masked_ce_sum(ref.gpt2_logits(CFG, W, torch.tensor(inp)), torch.tensor(tgt),
                                     torch.tensor(w)).item() / w.sum()
            plain = ref.masked_ce_sum(ref.gpt2_logits(CFG, ref.to_torch(base_w), torch.tensor(inp)),
                                      torch.tensor(tgt), torch.tensor(w)).item() / w.sum()
        fails.check(abs(want - plain) > 1e-2 * plain, f"{label}: the adapter hardly changes the loss")
        got = rows[0]["loss"] if rows else float("nan")
        print(f"{label}: step-1 loss {got:.9g}, reference with the adapter {want:.9g}, without {plain:.9g}")
        fails.check(ref.rel_err(got, want) <= 1e-5, f"{label}: step-1 loss {got} != reference {want}")


# --------------------------------------------------------------------------------------
# eval under mpirun
# --------------------------------------------------------------------------------------

def case_eval_ranks(fails, lorad, work):
    rng = np.random.default_rng(14)
    model, base_w = make_model(work, rng)
    adapter, config, tensors = adapter_plain_rslora(work, rng)
    tokens = make_tokens(rng)
    mask = (rng.random(len(tokens)) > 0.3).astype(np.uint8)
    mask[1 + 2 * T:1 + 3 * T] = 0  # sample 2 counts nothing
    mask[1 + 5 * T:1 + 6 * T] = 0
    mask[1 + 5 * T + 7] = 1  # sample 5 counts one target
    data_bin, data_h5 = os.path.join(work, "data.bin"), os.path.join(work, "data.h5")
    ref.write_bin(data_bin, tokens)
    ref.write_h5(data_h5, tokens, mask)
    weights = {"base": ref.to_torch(base_w), "adapter": ref.to_torch(ref.peft_merge(CFG, base_w, config, tensors))}
    for data, m in ((data_bin, None), (data_h5, mask)):
        for which in ("base", "adapter"):
            for batch, max_batches in ((4, 0), (2, 0), (2, 2)):
                label = f"{os.path.basename(data)} {which} --batch {batch} --max-batches {max_batches}"
                n = N_SAMPLES if not max_batches else min(N_SAMPLES, batch * max_batches)
                sums, counts = ref.sample_losses(CFG, weights[which], tokens, m, T, 4)
                want, want_tokens = sums[:n].sum() / counts[:n].sum(), int(counts[:n].sum())
                # the check can fail: leaving out or repeating any one sample moves the loss
                drop = min(abs((sums[:n].sum() - sums[i]) / max(counts[:n].sum() - counts[i], 1) - want)
                           for i in range(n) if counts[i] > 0)
                fails.check(drop > 1e-5 * want, f"{label}: a lost sample would change the loss by only {drop:.2e}")
                args = eval_args(model, data, adapter if which == "adapter" else None,
                                 ["--batch", batch, "--max-batches", max_batches])
                one = parse_eval(fails, ref.run_lorad(lorad, args), f"{label}: alone")
                two = parse_eval(fails, ref.run_lorad_mpi(lorad, 2, args), f"{label}: 2 ranks")
                if not (one and two):
                    continue
                print(f"{label}: alone {one['loss']:.9g}, 2 ranks {two['loss']:.9g}, reference {want:.9g}", flush=True)
                fails.check(ref.rel_err(two["loss"], one["loss"]) <= 1e-6,
                            f"{label}: 2 ranks give loss {two['loss']}, one process {one['loss']}")
                fails.check(ref.rel_err(one["loss"], want) <= 1e-5, f"{label}: loss {one['loss']} != reference {want}")
                for e, who in ((one, "alone"), (two, "2 ranks")):
                    fails.check((e["tokens"], e["samples"]) == (want_tokens, n),
                                f"{label}: {who}: tokens/samples {e['tokens']}/{e['samples']}, expected {want_tokens}/{n}")
    # the text form of the output
    p = ref.run_lorad(lorad, eval_args(model, data_bin)[:-1])
    if expect_ok(fails, p, "eval without --json"):
        m = re.fullmatch(r"loss (\S+)  perplexity (\S+)  tokens (\d+)  samples (\d+)\n", p.stdout)
        fails.check(bool(m) and int(m.group(3)) == N_SAMPLES * T and int(m.group(4)) == N_SAMPLES
                    and abs(math.exp(float(m.group(1))) - float(m.group(2))) < 1e-3 * float(m.group(2)),
                    f"eval's text output is {p.stdout!r}")


# --------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------

MARGIN_MIN = 1e-3  # a top-1/top-2 (or k/k+1) gap below this could flip under float32 rounding


def ref_logits(W, seq):
    with torch.no_grad():
        return ref.gpt2_logits(CFG, W, torch.tensor([seq]))[0, -1].numpy()


def ref_greedy(W, prompt, n):
    """The float64 argmax continuation (a full forward per token) and each step's top-1/top-2
    margin; stops where the model has no further position, as lorad must."""
    seq, out, margins = list(prompt), [], []
    while len(out) < n and len(seq) <= CFG.n_positions:
        lg = ref_logits(W, seq)
        top = np.sort(lg)[::-1]
        out.append(int(np.argmax(lg)))
        margins.append(float(top[0] - top[1]))
        seq.append(out[-1])
    return out, margins


def gen(lorad, model, prompt, extra, adapter=None):
    """Runs generate; stdout as bytes (the generated bytes need not be UTF-8)."""
    cmd = [lorad, "generate", "--model", model, "--prompt", prompt, "--threads", "1"] + \
          (["--adapter", adapter] if adapter else []) + [str(a) for a in extra]
    print("+ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, timeout=120)
    return subprocess.CompletedProcess(cmd, p.returncode, p.stdout, p.stderr.decode(errors="replace"))


def gen_ids(fails, p, what):
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


def check_greedy(fails, got, want, margins, what):
    """Token for token up to the first near-tie of the reference (at least 10 tokens)."""
    k = next((i for i, m in enumerate(margins) if m < MARGIN_MIN), len(want))
    print(f"{what}: min top-1/top-2 margin {min(margins):.3g}; checking {k} of {len(want)} tokens; "
          f"lorad {got}, reference {want}", flush=True)
    fails.check(k >= min(10, len(want)), f"{what}: a reference near-tie at token {k}: pick another seed")
    fails.check(got[:k] == want[:k] and len(got) == len(want),
                f"{what}: greedy tokens {got} != reference argmax continuation {want}")


def case_generate(fails, lorad, work):
    rng = np.random.default_rng(15)
    model, base_w = make_model(work, rng, wpe_std=1.0)
    for name in ("tokenizer.json", "merges.txt"):  # byte-level: without merge's stand-in tokenizer files
        os.remove(os.path.join(model, name))
    adapter, config, tensors = adapter_plain_rslora(work, rng)
    W = ref.to_torch(base_w)
    WA = ref.to_torch(ref.peft_merge(CFG, base_w, config, tensors))
    prompt = "Héllo, lorad! "
    pids = list(prompt.encode())
    greedy = ["--temperature", 0, "--ids", "--max-new", 20]

    # greedy, without and with the adapter
    want, margins = ref_greedy(W, pids, 20)
    want_a, margins_a = ref_greedy(WA, pids, 20)
    fails.check(want != want_a, "the adapter does not change the greedy continuation: the check could not fail")
    fails.check(len(set(want)) >= 5 and len(set(want_a)) >= 5,
                f"the reference continuations {want} / {want_a} hardly vary: pick other weights")
    got = gen_ids(fails, gen(lorad, model, prompt, greedy), "greedy")
    if got is not None:
        check_greedy(fails, got, want, margins, "greedy")
    got_a = gen_ids(fails, gen(lorad, model, prompt, greedy, adapter), "greedy --adapter")
    if got_a is not None:
        check_greedy(fails, got_a, want_a, margins_a, "greedy --adapter")

    # the bytes form: the same tokens as bytes, <|N|> past 255
    p = gen(lorad, model, prompt, ["--temperature", 0, "--max-new", 20])
    fails.check("stopped after" not in p.stderr, f"generate within the context says it stopped: {p.stderr!r}")
    if expect_ok(fails, p, "greedy, bytes"):
        k = next((i for i, m in enumerate(margins) if m < MARGIN_MIN), len(want))
        if k == len(want):
            text = b"".join(bytes([t]) if t < 256 else f"<|{t}|>".encode() for t in want)
            fails.check(p.stdout == text, f"greedy bytes {p.stdout!r} != {text!r}")

    # up to the last position: a 61-byte prompt leaves positions 61, 62, 63 and the
    # prediction from all 64
    long_prompt = "".join(chr(c) for c in rng.integers(ord("a"), ord("z") + 1, CFG.n_positions - 3))
    want_l, margins_l = ref_greedy(W, list(long_prompt.encode()), 20)
    p_l = gen(lorad, model, long_prompt, greedy)
    got_l = gen_ids(fails, p_l, "greedy at the end of the context")
    if got_l is not None:
        fails.check(len(got_l) >= 3, f"greedy at the end of the context: only {len(got_l)} tokens")
        # a run cut short by the context says so on stderr, in one line
        note = f"stopped after {len(got_l)} of --max-new 20 tokens: the model sees at most {CFG.n_positions}"
        fails.check(note in p_l.stderr and len(p_l.stderr.strip().splitlines()) == 1,
                    f"generate at the end of the context: stderr {p_l.stderr!r} lacks {note!r}")
        k = next((i for i, m in enumerate(margins_l) if m < MARGIN_MIN), len(want_l))
        print(f"end of context: lorad {got_l}, reference {want_l}, margins {[round(m, 4) for m in margins_l]}")
        fails.check(got_l[:k] == want_l[:min(k, len(got_l))] and len(got_l) <= len(want_l),
                    f"greedy at the end of the context: {got_l} != reference {want_l}")

    # sampling: reproducible, seed-dependent, inside the reference's top 5
    sample = ["--temperature", 0.8, "--top-k", 5, "--ids", "--max-new", 20]
    s1 = gen_ids(fails, gen(lorad, model, prompt, sample + ["--seed", 7]), "sample seed 7")
    s2 = gen_ids(fails, gen(lorad, model, prompt, sample + ["--seed", 7]), "sample seed 7 again")
    s3 = gen_ids(fails, gen(lorad, model, prompt, sample + ["--seed", 8]), "sample seed 8")
    if s1 is not None and s2 is not None and s3 is not None:
        fails.check(s1 == s2, f"seed 7 twice: {s1} != {s2}")
        fails.check(s1 != s3, f"seeds 7 and 8 give the same tokens {s1}")
        fails.check(s1 != want, "seed 7 gives the greedy continuation: sampling did not sample")
        fails.check(len(s1) == 20, f"sampling gave {len(s1)} tokens, expected 20")
        for name, s in (("seed 7", s1), ("seed 8", s3)):
            seq, p_all_top5, worst = list(pids), 1.0, math.inf
            for i, t in enumerate(s):
                lg = ref_logits(W, seq)
                top = np.sort(lg)[::-1]
                worst = min(worst, top[4] - top[5])
                pr = np.exp((lg - top[0]) / 0.8)
                p_all_top5 *= pr[lg >= top[4]].sum() / pr.sum()
                fails.check(lg[t] >= top[4] - 1e-4,
                            f"{name}: token {i} ({t}) is not among the reference's top 5 (logit {lg[t]:.4f}, 5th {top[4]:.4f})")
                seq.append(t)
            print(f"{name}: {s}; min 5th/6th margin {worst:.3g}; without top-k all 20 would be in the top 5 "
                  f"with probability {p_all_top5:.2e}", flush=True)
            fails.check(p_all_top5 < 1e-2, f"{name}: the top-5 check is too weak to catch an ignored --top-k")
    s1k = gen_ids(fails, gen(lorad, model, prompt, ["--temperature", 0.8, "--top-k", 1, "--ids", "--max-new", 20]),
                  "sample --top-k 1")
    if s1k is not None:
        k = next((i for i, m in enumerate(margins) if m < MARGIN_MIN), len(want))
        fails.check(s1k[:k] == want[:k], f"--top-k 1 sampling {s1k} is not greedy {want}")

    # --max-new 0 prints nothing; a prompt beyond n_positions is refused
    for extra in ([], ["--ids"]):
        p = gen(lorad, model, prompt, ["--max-new", 0] + extra)
        if expect_ok(fails, p, f"--max-new 0 {extra}"):
            fails.check(p.stdout.strip() == b"" and (extra or p.stdout == b""),
                        f"--max-new 0 {extra} printed {p.stdout!r}")
    p = gen(lorad, model, "x" * (CFG.n_positions + 5), ["--max-new", 3])
    one_line_error(fails, p, ["--prompt"], "a prompt longer than n_positions")
    fails.check(p.stdout == b"", f"the refused prompt printed {p.stdout!r}")


CASES = {
    "merge": case_merge,
    "merge_refusals": case_merge_refusals,
    "roundtrip": case_roundtrip,
    "eval_ranks": case_eval_ranks,
    "generate": case_generate,
}


if __name__ == "__main__":
    torch.set_num_threads(1)
    ref.run_driver("infer", CASES)
