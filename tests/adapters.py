"""adapters.py: many adapters on one base (issue #15), unmerged, in one pass.

Cases (--case):
  eval_gpt2   three GPT-2 adapters of different targets, ranks and scales (lorad's q/v
              block form with a rank/alpha pattern; plain c_attn with rsLoRA; attn.c_proj
              alone at rank 2) in one `lorad eval --adapter A --adapter B --adapter C`:
              each adapter's loss equals `eval --adapter X` (merged) within 1e-5 and the
              PyTorch reference of the PEFT merge within 1e-5; the adapters reordered, one
              given twice, or given as one comma list, give each adapter the same loss;
              two ranks (mpirun) give the one-process losses within 1e-6; an uneven last
              micro-batch (9 samples, --batch 4) counts every sample once; the text output
              names each adapter
  eval_llama  the same for a Llama (GQA) with q,v r=4; all-linear r=2 rsLoRA; gate,up,down
              r=8 with an alpha pattern
  generate_gpt2, generate_llama
              `generate --prompts FILE.jsonl --adapter NAME=DIR ...`: lines of three
              adapters and of the base, prompts of 1 byte up to the end of the context,
              in slots of 3 (a line takes the slot of one that ended), of 1 and of 8: each line's
              greedy ids equal the float64 reference of its merged model (up to a near-tie),
              its log-probabilities within 1e-5, and its ids and text those of
              `generate --adapter DIR --prompt` alone (merged); it ends at max_new or at
              the context
  refusals    nine adapters (more than one pass holds), --logits with two adapters, and an
              adapter of a module the model lacks among good ones; for generate, each
              malformed --prompts line (FILE:LINE), an empty file, and the flags that do not
              go together: exit 2 with one line naming the flag or the file, nothing on
              stdout
"""
import json
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import infer as inf  # noqa: E402  (the GPT-2 model, data and adapters of the infer cases)
import torch_gpt2 as gpt2  # noqa: E402
import torch_llama as llama  # noqa: E402
import torch_train as tt  # noqa: E402

T = inf.T
N_SAMPLES = inf.N_SAMPLES


def eval_lines(fails, p, n, what):
    """The N JSON objects of a several-adapter `eval --json`, one per line, or None."""
    if not h.expect_ok(fails, p, what):
        return None
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    try:
        out = [json.loads(line) for line in lines]
        assert len(out) == n and all(set(o) == {"adapter", "loss", "perplexity", "tokens", "samples"} for o in out)
    except Exception as e:  # noqa: BLE001 - any malformed output is a failure
        fails.add(f"{what}: stdout is not {n} eval JSON lines ({e}): {p.stdout!r}")
        return None
    return out


def mixed_args(model, data, adapters, extra=(), json_out=True):
    args = ["eval", "--model", model, "--data", data, "--batch", 4, "--seq", T, "--threads", 1]
    args += ["--json"] if json_out else []
    for a in adapters:
        args += ["--adapter", a]
    return args + list(extra)


def check_mixed(fails, lorad, model, data, adapters, want, label):
    """ADAPTERS (dirs) in one eval against WANT (dir -> reference loss) and against each
    adapter's merged eval; then reordered, repeated, as a comma list and on two ranks."""
    got = eval_lines(fails, h.run_lorad(lorad, mixed_args(model, data, adapters)), len(adapters), f"{label}: mixed")
    if not got:
        return
    fails.check([g["adapter"] for g in got] == adapters, f"{label}: lines name {[g['adapter'] for g in got]}")
    spread = max(want.values()) - min(want.values())
    fails.check(spread > 1e-3 * min(want.values()),  # the adapters differ 100x more than the tolerance
                f"{label}: the adapters' reference losses differ by only {spread:.2e}")
    for g in got:
        a = g["adapter"]
        merged = inf.run_eval(fails, lorad, model, data, a, what=f"{label}: eval --adapter {os.path.basename(a)}")
        print(f"{label}: {os.path.basename(a)}: mixed {g['loss']:.9g}, merged "
              f"{merged['loss'] if merged else float('nan'):.9g}, reference {want[a]:.9g}", flush=True)
        fails.check(h.rel_err(g["loss"], want[a]) <= 1e-5, f"{label}: {a}: mixed loss {g['loss']} != reference {want[a]}")
        if merged:
            fails.check(h.rel_err(g["loss"], merged["loss"]) <= 1e-5,
                        f"{label}: {a}: mixed loss {g['loss']} != merged eval {merged['loss']}")
        fails.check((g["tokens"], g["samples"]) == (N_SAMPLES * T, N_SAMPLES),
                    f"{label}: {a}: tokens/samples {g['tokens']}/{g['samples']}")
        fails.check(h.rel_err(g["perplexity"], np.exp(g["loss"])) < 1e-6, f"{label}: {a}: perplexity != exp(loss)")
    by = {g["adapter"]: g["loss"] for g in got}
    variants = [("reversed", list(reversed(adapters)), ()),
                ("first twice", [adapters[0]] + adapters, ()),
                ("comma list", [",".join(adapters)], ())]
    for name, order, extra in variants:
        n = len(order) if name != "comma list" else len(adapters)
        other = eval_lines(fails, h.run_lorad(lorad, mixed_args(model, data, order, extra)), n, f"{label}: {name}")
        if other:
            bad = [(o["adapter"], o["loss"], by[o["adapter"]]) for o in other
                   if h.rel_err(o["loss"], by[o["adapter"]]) > 1e-6]
            fails.check(not bad, f"{label}: {name}: losses moved: {bad}")
    two = eval_lines(fails, h.run_lorad_mpi(lorad, 2, mixed_args(model, data, adapters)), len(adapters),
                     f"{label}: 2 ranks")
    if two:
        bad = [(o["adapter"], o["loss"], by[o["adapter"]]) for o in two if h.rel_err(o["loss"], by[o["adapter"]]) > 1e-6]
        fails.check(not bad, f"{label}: 2 ranks: losses differ from one process: {bad}")
    p = h.run_lorad(lorad, mixed_args(model, data, adapters, json_out=False))
    if h.expect_ok(fails, p, f"{label}: text output"):
        lines = p.stdout.splitlines()
        ok = len(lines) == len(adapters) and all(
            re.fullmatch(rf"adapter {re.escape(a)}  loss \S+  perplexity \S+  tokens {N_SAMPLES * T}  "
                         rf"samples {N_SAMPLES}", line) for a, line in zip(adapters, lines))
        fails.check(ok, f"{label}: text output {p.stdout!r}")


def gpt2_adapters(work, rng):
    """Three GPT-2 adapters: q/v block form with patterns, plain c_attn rsLoRA, attn.c_proj r=2."""
    proj_cfg = h.peft_config("", 2, 5, False, ["attn.c_proj"], True, {}, {})
    mods = h.peft_targeted(proj_cfg, [p for p, _, _ in gpt2.all_modules(inf.CFG)])
    proj = os.path.join(work, "adapter_proj")
    return [inf.adapter_block_qv(work, rng), inf.adapter_plain_rslora(work, rng),
            (proj, *inf.write_adapter(proj, proj_cfg, gpt2.random_peft_tensors(inf.CFG, proj_cfg, mods, rng)))]


def case_eval_gpt2(fails, lorad, work):
    rng, model, base_w, tokens, data = inf.inputs(work, 31)
    qv, rs, proj = gpt2_adapters(work, rng)
    want = {}
    for d, config, tensors in (qv, rs, proj):
        merged = gpt2.peft_merge(inf.CFG, base_w, config, tensors)
        want[d] = tt.dataset_loss(gpt2.gpt2_logits, inf.CFG, tt.to_torch(merged), tokens, None, T, 4)
    check_mixed(fails, lorad, model, data, [qv[0], rs[0], proj[0]], want, "gpt2")


def llama_adapters(work, cfg, rng):
    """Three Llama adapters: q,v r=4; all-linear r=2 rsLoRA; gate,up,down r=8 with an alpha pattern."""
    return [llama_adapter(work, "qv", cfg, rng, ["q_proj", "v_proj"], 4, 8, False),
            llama_adapter(work, "all", cfg, rng, ["all-linear"], 2, 3, True),
            llama_adapter(work, "mlp", cfg, rng, ["gate_proj", "up_proj", "down_proj"], 8, 16, False,
                          alpha_pattern=[("down_proj", 4)])]


def llama_adapter(work, name, cfg, rng, targets, r, alpha, rslora, alpha_pattern=()):
    specs = llama.resolve_targets(cfg, targets)
    scale = lambda mod: h.lora_scale(dict(alpha_pattern).get(mod.rsplit(".", 1)[-1], alpha), r, rslora)  # noqa: E731
    params = h.random_adapters(specs, r, scale, rng)
    config, tensors = llama.export_adapters(specs, params, targets, r, alpha, rslora, alpha_pattern=alpha_pattern)
    path = os.path.join(work, name)
    return (path, *inf.write_adapter(path, config, tensors))


def case_eval_llama(fails, lorad, work):
    rng = np.random.default_rng(32)
    cfg = llama.LlamaConfig(model_type="llama", vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = os.path.join(work, "llama")
    base_w = llama.make_model(model, cfg, rng)
    tokens = rng.integers(0, cfg.vocab_size, N_SAMPLES * T + 6)
    data = os.path.join(work, "data.bin")
    h.write_bin(data, tokens)
    ads = llama_adapters(work, cfg, rng)
    want = {d: tt.dataset_loss(llama.llama_logits, cfg, tt.to_torch(llama.peft_merge(cfg, base_w, c, t)), tokens,
                               None, T, 4) for d, c, t in ads}
    check_mixed(fails, lorad, model, data, [a[0] for a in ads], want, "llama")


# --------------------------------------------------------------------------------------
# generate --prompts
# --------------------------------------------------------------------------------------

MARGIN_MIN = inf.MARGIN_MIN
MAX_NEW = 12


def ref_decode(logits_fn, prompt, n, P):
    """The float64 greedy continuation of PROMPT (a full forward per token): ids, each
    step's top-1/top-2 margin and the log-probability of the picked token; it stops where
    the model has no further position, as lorad must."""
    seq, ids, margins, lps = list(prompt), [], [], []
    while len(ids) < n and len(seq) <= P:
        lg = logits_fn(seq)
        top = np.sort(lg)[::-1]
        ids.append(int(np.argmax(lg)))
        margins.append(float(top[0] - top[1]))
        lps.append(float(lg[ids[-1]] - top[0] - np.log(np.exp(lg - top[0]).sum())))
        seq.append(ids[-1])
    return ids, margins, lps


def check_prompts(fails, lorad, model, adapters, lines, logits_fn, P, label):
    """One `generate --prompts` over LINES ((adapter name or None, prompt) pairs) with the
    named ADAPTERS (name -> (dir, merged weights)), at --batch 3 and 1: every line against
    the reference of its merged model (greedy ids up to a near-tie, log-probabilities
    within 1e-5) and against `generate --adapter DIR --prompt` (ids and text)."""
    path = os.path.join(os.path.dirname(model), f"{label}_prompts.jsonl")
    with open(path, "w") as f:
        for i, (name, prompt) in enumerate(lines):
            o = {"prompt": prompt, "note": i} if name is None and i % 2 else {"prompt": prompt, "adapter": name}
            f.write(json.dumps(o) + "\n" + ("\n" if i == 1 else ""))  # a blank line is passed over
    flags = ["--temperature", 0, "--max-new", MAX_NEW, "--threads", 1]
    for a in adapters:
        flags += ["--adapter", f"{a}={adapters[a][0]}"]
    outs = {}
    for batch in (3, 1, 8):  # 8: more slots than adapters
        p = h.run_lorad(lorad, ["generate", "--model", model, "--prompts", path, "--batch", batch] + flags)
        if not h.expect_ok(fails, p, f"{label}: --batch {batch}"):
            return
        try:
            outs[batch] = [json.loads(x) for x in p.stdout.splitlines()]
        except ValueError as e:
            fails.add(f"{label}: --batch {batch}: stdout is not JSON lines ({e}): {p.stdout[:300]!r}")
            return
        fails.check(len(outs[batch]) == len(lines), f"{label}: --batch {batch}: {len(outs[batch])} lines out")
    for i, ((name, prompt), got, one, eight) in enumerate(zip(lines, outs[3], outs[1], outs[8])):
        what = f"{label}: line {i} ({name})"
        fails.check((got["adapter"], got["prompt"]) == (name, prompt), f"{what}: echoes {got['adapter']}, {got['prompt']!r}")
        want, margins, lps = ref_decode(lambda seq: logits_fn(adapters[name][1] if name else None, seq),
                                        list(prompt.encode()), MAX_NEW, P)
        inf.check_greedy(fails, got["ids"], want, margins, what)
        k = next((j for j, m in enumerate(margins) if m < MARGIN_MIN), len(want))
        worst = max((abs(a - b) for a, b in zip(got["logprobs"][:k], lps[:k])), default=0.0)
        fails.check(worst <= 1e-5, f"{what}: log-probabilities differ from the reference's by {worst:.2e}")
        # the last token may be picked at position P: "context" when one more was due
        fails.check(got["end"] == ("context" if len(prompt.encode()) + MAX_NEW > P + 1 else "max_new"),
                    f"{what}: end {got['end']}")
        for other, b in ((one, 1), (eight, 8)):
            fails.check(other["ids"] == got["ids"] and
                        max(abs(x - y) for x, y in zip(other["logprobs"], got["logprobs"])) < 1e-5,
                        f"{what}: --batch {b} gives {other['ids']}, --batch 3 {got['ids']}")
        ad = adapters[name][0] if name else None
        alone = h.generated_ids(fails, h.generate(lorad, model, prompt, flags[:4] + ["--ids"], ad), f"{what}: alone")
        fails.check(alone == got["ids"], f"{what}: alone (merged) gives {alone}, in the batch {got['ids']}")
        p = h.generate(lorad, model, prompt, flags[:4], ad)
        if h.expect_ok(fails, p, f"{what}: alone, text"):
            try:
                want_text = p.stdout.decode("utf-8")
            except UnicodeDecodeError:
                want_text = None
            fails.check(got["text"] == want_text, f"{what}: text {got['text']!r}, alone {want_text!r}")


def gen_prompts(rng, P):
    """Prompts of 1 to P-3 bytes (the last reaches the end of the context)."""
    words = ["Héllo, lorad! ", "a", "The quick brown fox ", "01234567", "zz top "]
    return words + ["".join(chr(c) for c in rng.integers(ord("a"), ord("z") + 1, P - 3))]


def case_generate_gpt2(fails, lorad, work):
    rng = np.random.default_rng(35)
    model, base_w = inf.make_model(work, rng, wpe_std=1.0)
    for name in ("tokenizer.json", "merges.txt"):  # byte-level
        os.remove(os.path.join(model, name))
    ads = gpt2_adapters(work, rng)
    adapters = {n: (d, tt.to_torch(gpt2.peft_merge(inf.CFG, base_w, c, t))) for n, (d, c, t) in zip(("qv", "rs", "pj"), ads)}
    W0 = tt.to_torch(base_w)

    def logits(W, seq):
        with torch.no_grad():
            return gpt2.gpt2_logits(inf.CFG, W if W is not None else W0, torch.tensor([seq]))[0, -1].numpy()

    ps = gen_prompts(rng, inf.CFG.n_positions)
    lines = [("qv", ps[0]), ("rs", ps[0]), (None, ps[0]), ("pj", ps[1]), ("qv", ps[2]), (None, ps[3]), ("rs", ps[4]),
             ("pj", ps[5]), (None, ps[5])]
    check_prompts(fails, lorad, model, adapters, lines, logits, inf.CFG.n_positions, "gpt2")


def case_generate_llama(fails, lorad, work):
    rng = np.random.default_rng(36)
    cfg = llama.LlamaConfig(model_type="llama", vocab_size=260, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=64)
    model = os.path.join(work, "llama")
    base_w = llama.make_model(model, cfg, rng)
    ads = llama_adapters(work, cfg, rng)
    adapters = {n: (d, tt.to_torch(llama.peft_merge(cfg, base_w, c, t))) for n, (d, c, t) in zip(("qv", "all", "mlp"), ads)}
    W0 = tt.to_torch(base_w)

    def logits(W, seq):
        with torch.no_grad():
            return llama.llama_logits(cfg, W if W is not None else W0, torch.tensor([seq]))[0, -1].numpy()

    ps = gen_prompts(rng, cfg.max_position_embeddings)
    lines = [("all", ps[0]), ("mlp", ps[1]), (None, ps[2]), ("qv", ps[3]), ("all", ps[5]), ("mlp", ps[4])]
    check_prompts(fails, lorad, model, adapters, lines, logits, cfg.max_position_embeddings, "llama")


def case_refusals(fails, lorad, work):
    rng, model, _, _, data = inf.inputs(work, 33)
    good = inf.adapter_plain_rslora(work, rng)[0]
    p = h.run_lorad(lorad, mixed_args(model, data, [good] * 9))
    h.one_line_error(fails, p, ["--adapter", "9", "8"], "nine adapters")
    fails.check(p.stdout == "", f"nine adapters printed {p.stdout!r}")
    p = h.run_lorad(lorad, mixed_args(model, data, [good, good], ["--logits", os.path.join(work, "l.bin")]))
    h.one_line_error(fails, p, ["--logits", "--adapter"], "--logits with two adapters")
    fails.check(not os.path.exists(os.path.join(work, "l.bin")), "--logits with two adapters wrote a file")
    config, tensors = h.read_peft_dir(good)
    tensors["base_model.model.transformer.h.9.attn.c_proj.lora_A.weight"] = rng.normal(0, 0.2, (4, inf.CFG.n_embd))
    tensors["base_model.model.transformer.h.9.attn.c_proj.lora_B.weight"] = rng.normal(0, 0.2, (inf.CFG.n_embd, 4))
    bad = os.path.join(work, "h9")
    h.write_peft_dir(bad, config, tensors, "F32")
    p = h.run_lorad(lorad, mixed_args(model, data, [good, bad]))
    h.one_line_error(fails, p, [os.path.join(bad, "adapter_model.safetensors"), "h.9"], "an adapter of a missing module")
    fails.check(p.stdout == "", f"an adapter of a missing module printed {p.stdout!r}")

    # generate --prompts: each malformed line by FILE:LINE, and the flags that do not go together
    for name in ("tokenizer.json", "merges.txt"):  # byte-level: without the infer cases' stand-in tokenizer files
        os.remove(os.path.join(model, name))
    gen = ["generate", "--model", model, "--max-new", 2, "--adapter", f"rs={good}"]
    cases = [("unknown adapter", '{"prompt": "ab"}\n\n{"prompt": "cd", "adapter": "math"}\n', ":3", ["math", "--adapter"]),
             ("not JSON", '{"prompt": "ab"}\n{"prompt": \n', ":2", ["JSON"]),
             ("no prompt", '{"adapter": "rs"}\n', ":1", ["prompt"]),
             ("prompt not a string", '{"prompt": 7}\n', ":1", ["prompt", "string"]),
             ("adapter not a string", '{"prompt": "a", "adapter": 3}\n', ":1", ["adapter", "string"]),
             ("too long", json.dumps({"prompt": "x" * (inf.CFG.n_positions + 1)}) + "\n", ":1", ["positions"]),
             ("empty", "\n\n", "", ["no prompt"])]
    for name, text, where, words in cases:
        path = os.path.join(work, name.replace(" ", "_") + ".jsonl")
        with open(path, "w") as f:
            f.write(text)
        p = h.run_lorad(lorad, gen + ["--prompts", path])
        h.one_line_error(fails, p, [path + where] + words, f"--prompts {name}")
        fails.check(p.stdout == "", f"--prompts {name} printed {p.stdout!r}")
    ok = os.path.join(work, "ok.jsonl")
    with open(ok, "w") as f:
        f.write('{"prompt": "ab", "adapter": "rs"}\n')
    flags = [(["--adapter", good, "--prompts", ok], ["--adapter", "NAME=DIR"]),
             (["--adapter", f"rs={good}", "--adapter", f"rs={good}", "--prompts", ok], ["--adapter", "twice"]),
             (["--prompts", ok, "--ids"], ["--ids", "--prompts"]),
             (["--prompts", ok, "--prompt", "ab"], ["--prompt", "--prompts"]),
             ([], ["--prompt", "required"]),
             (["--prompt", "ab", "--adapter", good, "--adapter", good], ["--adapter", "--prompts"])]
    for extra, words in flags:
        p = h.run_lorad(lorad, ["generate", "--model", model, "--max-new", 2] + extra)
        h.one_line_error(fails, p, words, f"generate {extra}")
    p = h.run_lorad(lorad, gen + ["--prompts", ok])
    h.expect_ok(fails, p, "the unedited prompts file")


CASES = {"eval_gpt2": case_eval_gpt2, "eval_llama": case_eval_llama, "generate_gpt2": case_generate_gpt2,
         "generate_llama": case_generate_llama, "refusals": case_refusals}


if __name__ == "__main__":
    torch.set_num_threads(1)
    h.run_driver("adapters", CASES)
