"""packing.py: training and evaluation on data whose examples are known (/doc_offsets), packed.

Each example of a packed sample must be trained exactly as if it were alone: its own
positions, attention within itself, its first token predicted from nothing. The
reference here runs every example alone in the PyTorch float64 models of torch_gpt2.py
and torch_llama.py, with samples planned by its own first-fit decreasing (a linear scan,
against lorad's tree): pieces of at most T+1 tokens overlapping by one, longest first,
each in the first sample with room (storage/packing.h).

  gpt2, llama      --packing on (the default), --shuffle off, 6 steps of 4 samples (past
                   one epoch) on examples of 1 to 40 tokens with a loss mask: every
                   step's loss (rel 2e-5) and grad norm (1e-4) and the trained adapter
                   (1e-4) equal the per-example reference, and the sample count lorad
                   states equals the plan's. The case can fail: the same samples run
                   as one sequence each (examples attending to each other, positions
                   running on) give losses at least 100x the tolerance away.
  off              --packing off: one example (piece) a sample, in file order
  truncate         --truncate: only an example's first T+1 tokens
  eval             `lorad eval` of the packed data with an adapter equals the reference's
                   per-example loss over every piece (rel 2e-5), and equals itself with
                   --packing off; --val during training reports the same loss
  resume_chat      chat JSONL prepared by lorad prep for the bundled base (its tokenizer
                   and chat template), packed, 2 ranks stopped at step 4 and resumed on 1
                   and on 3 ranks (shuffle on): every step's loss within 1e-5 of the
                   uninterrupted 2-rank run; resumed on 2, the metrics equal it exactly
  refusals         --packing and --truncate are kept on resume (one line naming each);
                   a /doc_offsets out of order, or not from 0, is refused naming the file

Exits 0 when every check passes, 1 with one line per failure. A missing lorad fails.
Usage: packing.py --lorad PATH --case CASE --workdir DIR
"""

import json
import math
import os
import sys

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import harness as h  # noqa: E402
import torch_gpt2 as gpt2  # noqa: E402
import torch_llama  # noqa: E402
from torch_train import TrainSpec, make_lora, masked_ce_sum, reference_train, to_torch, to_torch_pairs  # noqa: E402

T, G, STEPS = 16, 4, 6
TOL_LOSS, TOL_GRAD, TOL_PARAM = 2e-5, 1e-4, 1e-4
LENGTHS = [1, 2, 3, 4, 5, 7, 9, 12, 16, 17, 18, 23, 33, 40, 6, 6, 10, 11, 2, 8, 14, 3]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEUE = 75

GPT2_CFG = gpt2.GPT2Config(vocab_size=61, n_positions=48, n_embd=32, n_head=4, n_layer=2)
LLAMA_CFG = torch_llama.LlamaConfig(model_type="llama", vocab_size=61, hidden_size=32, intermediate_size=48,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    attention_bias=True, max_position_embeddings=48)


class Fam:
    def __init__(self, mod, cfg, targets, logits):
        self.mod, self.cfg, self.targets, self.logits = mod, cfg, targets, logits


FAMS = {"gpt2": Fam(gpt2, GPT2_CFG, ["c_attn", "mlp.c_fc"], gpt2.gpt2_logits),
        "llama": Fam(torch_llama, LLAMA_CFG, ["q_proj", "v_proj", "down_proj"], torch_llama.llama_logits)}


# ---- the reference's plan: its own first-fit decreasing ----

def plan(doc, n_tokens, pack=True, truncate=False):
    """The samples as lists of (first token, length) pieces (storage/packing.h)."""
    pieces = []
    for i, b in enumerate(doc):
        e = doc[i + 1] if i + 1 < len(doc) else n_tokens
        if e - b < 2:
            continue
        k = 1 if truncate else math.ceil((e - b - 1) / T)
        pieces += [(b + j * T, min(T + 1, e - b - j * T)) for j in range(k)]
    if not pack:
        return [[p] for p in pieces]
    samples, room = [], []
    for i in sorted(range(len(pieces)), key=lambda i: (-pieces[i][1], i)):
        n = pieces[i][1]
        at = next((s for s, r in enumerate(room) if r >= n), None)
        if at is None:
            samples.append([])
            room.append(T + 1)
            at = len(samples) - 1
        samples[at].append(pieces[i])
        room[at] -= n
    return samples


def piece_part(tokens, mask, piece):
    """A piece alone: inputs, targets, weights [1, n-1]."""
    b, n = piece
    win = tokens[b:b + n].astype(np.int64)
    return win[None, :-1], win[None, 1:], (mask[b + 1:b + n] != 0).astype(np.float64)[None]


def step_parts(tokens, mask, samples, step):
    """Every piece of step STEP's samples (shuffle off: (step*G + g) mod N), each alone."""
    ids = [(step * G + g) % len(samples) for g in range(G)]
    return [piece_part(tokens, mask, p) for i in ids for p in samples[i]]


def joined_parts(tokens, mask, samples, step):
    """The contaminated view: each sample's pieces joined into one sequence, attending
    across and with positions running on; the same targets counted."""
    out = []
    for i in [(step * G + g) % len(samples) for g in range(G)]:
        parts = [piece_part(tokens, mask, p) for p in samples[i]]
        seq = np.concatenate([np.concatenate([a[0, :1], b[0]]) for a, b, _ in parts])
        w = np.concatenate([np.concatenate([[0.0], c[0]]) for _, _, c in parts])
        out.append((seq[None, :-1], seq[None, 1:], w[None, 1:]))
    return out


# ---- inputs ----

def write_data(path, rng, lengths=LENGTHS, vocab=61):
    doc = np.cumsum([0] + lengths[:-1]).astype(np.int64)
    n = int(sum(lengths))
    tokens = rng.integers(0, vocab, n).astype(np.int64)
    mask = (rng.random(n) > 0.25).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=tokens.astype(np.int32))
        f.create_dataset("loss_mask", data=mask)
        f.create_dataset("doc_offsets", data=doc)
    return doc, tokens, mask


class Setup:
    def __init__(self, name, work, seed=5):
        self.fam = FAMS[name]
        rng = np.random.default_rng(seed)
        self.model = os.path.join(work, "model")
        self.base = self.fam.mod.make_model(self.model, self.fam.cfg, rng)
        self.specs = self.fam.mod.resolve_targets(self.fam.cfg, self.fam.targets)
        self.ts = TrainSpec(targets=tuple(self.fam.targets), rank=4, alpha=8.0, steps=STEPS, batch=G,
                            micro_batch=G, seq=T, lr=1e-2)
        params = h.random_adapters(self.specs, self.ts.rank, self.ts.scale, rng)
        config, tensors = self.fam.mod.export_adapters(self.specs, params, self.fam.targets, 4, 8.0, False,
                                                       self.model)
        self.init_dir = os.path.join(work, "init_adapter")
        h.write_peft_dir(self.init_dir, config, tensors, "F32")
        self.init = self.fam.mod.import_adapters(self.specs, h.read_peft_dir(self.init_dir)[1])
        self.data = os.path.join(work, "train.h5")
        self.doc, self.tokens, self.mask = write_data(self.data, rng)

    def train_args(self, out, extra=()):
        return ["train", "--model", self.model, "--data", self.data, "--out", out, "--targets",
                ",".join(self.fam.targets), "--init", "kaiming", "--init-adapter", self.init_dir, "--rank", "4",
                "--alpha", "8", "--steps", str(STEPS), "--batch", str(G), "--micro-batch", "2", "--seq", str(T),
                "--lr", "0.01", "--schedule", "constant", "--clip", "0", "--shuffle", "off", "--threads", "1",
                "--log-every", "1"] + list(extra)

    def reference(self, samples, joined=False):
        parts = (lambda s: joined_parts(self.tokens, self.mask, samples, s)) if joined else \
            (lambda s: step_parts(self.tokens, self.mask, samples, s))
        return reference_train(self.fam.logits, self.fam.cfg, self.base, self.tokens, self.mask, self.ts,
                               self.init, self.specs, parts=parts)

    def lora(self, params):
        return make_lora(self.specs, to_torch_pairs(params), self.ts.scale)


def check_run(fails, s, samples, out, stderr, label):
    """lorad's run OUT against the per-example reference of SAMPLES."""
    ref = s.reference(samples)
    fails.check(f"{len(samples)} training samples" in stderr,
                f"{label}: lorad does not state the plan's {len(samples)} samples: {stderr[-600:]}")
    rows = h.metrics_rows(out)
    if not fails.check(len(rows) == STEPS, f"{label}: {len(rows)} metrics rows, expected {STEPS}"):
        return ref
    worst = max(h.rel_err(r["loss"], x) for r, x in zip(rows, ref.losses))
    worst_g = max(h.rel_err(r["grad_norm"], x) for r, x in zip(rows, ref.grad_norms))
    print(f"{label}: {len(samples)} samples, worst rel err loss {worst:.2e}, grad norm {worst_g:.2e}", flush=True)
    fails.check(worst <= TOL_LOSS, f"{label}: losses {[r['loss'] for r in rows]} vs reference {ref.losses}")
    fails.check(worst_g <= TOL_GRAD, f"{label}: grad norms differ by {worst_g:.2e}")
    _, got = h.read_peft_dir(os.path.join(out, "adapter"))
    _, want = s.fam.mod.export_adapters(s.specs, ref.params, s.fam.targets, 4, 8.0, False, "")
    worst_p = max(h.rel_err(got[k], want[k]) for k in want)
    print(f"{label}: adapter worst rel err {worst_p:.2e}", flush=True)
    fails.check(sorted(got) == sorted(want) and worst_p <= TOL_PARAM, f"{label}: adapter differs by {worst_p:.2e}")
    return ref


def run_train(fails, lorad, s, out, extra=()):
    p = h.run_lorad(lorad, s.train_args(out, extra))
    if not h.expect_ok(fails, p, f"lorad train {' '.join(extra)}"):
        fails.finish()
    return p


def case_family(name):
    def run(fails, lorad, work):
        s = Setup(name, work)
        samples = plan(s.doc, len(s.tokens))
        assert len(samples) < len(LENGTHS) and any(len(x) > 2 for x in samples), "test defect: nothing packs"
        assert len(samples) < STEPS * G, "test defect: the steps do not wrap past one epoch"
        out = os.path.join(work, "out")
        ref = check_run(fails, s, samples, out, run_train(fails, lorad, s, out).stderr, f"{name} packed")
        joined = s.reference(samples, joined=True)
        gap = max(h.rel_err(a, b) for a, b in zip(joined.losses, ref.losses))
        gap_g = max(h.rel_err(a, b) for a, b in zip(joined.grad_norms, ref.grad_norms))
        print(f"{name}: examples attending to each other move the losses by {gap:.2e}, grad norms {gap_g:.2e}",
              flush=True)
        assert gap >= 100 * TOL_LOSS, "test defect: contamination would pass unseen"
    return run


def case_off(fails, lorad, work):
    s = Setup("gpt2", work)
    out = os.path.join(work, "out")
    p = run_train(fails, lorad, s, out, ["--packing", "off"])
    check_run(fails, s, plan(s.doc, len(s.tokens), pack=False), out, p.stderr, "--packing off")


def case_truncate(fails, lorad, work):
    s = Setup("gpt2", work)
    out = os.path.join(work, "out")
    p = run_train(fails, lorad, s, out, ["--truncate"])
    samples = plan(s.doc, len(s.tokens), truncate=True)
    assert samples != plan(s.doc, len(s.tokens)), "test defect: nothing is truncated"
    check_run(fails, s, samples, out, p.stderr, "--truncate")


def eval_json(fails, p, what):
    got = h.eval_json(fails, p, what)
    return None if got is None else got["loss"]


def case_eval(fails, lorad, work):
    s = Setup("gpt2", work)
    W, lora = to_torch(s.base), s.lora(s.init)
    total, count = 0.0, 0.0
    with torch.no_grad():
        for sample in plan(s.doc, len(s.tokens)):
            for piece in sample:
                inp, tgt, w = piece_part(s.tokens, s.mask, piece)
                total += masked_ce_sum(s.fam.logits(s.fam.cfg, W, torch.tensor(inp), lora), torch.tensor(tgt),
                                       torch.tensor(w)).item()
                count += w.sum()
    want = total / count
    base = ["eval", "--model", s.model, "--adapter", s.init_dir, "--data", s.data, "--seq", str(T), "--batch", "2",
            "--json", "--threads", "1"]
    packed = eval_json(fails, h.run_lorad(lorad, base), "lorad eval")
    alone = eval_json(fails, h.run_lorad(lorad, base + ["--packing", "off"]), "lorad eval --packing off")
    if packed is None or alone is None:
        return
    print(f"eval: packed {packed:.7f}, --packing off {alone:.7f}, reference {want:.7f}", flush=True)
    fails.check(h.rel_err(packed, want) <= TOL_LOSS, f"eval packed {packed} vs reference {want}")
    fails.check(h.rel_err(alone, want) <= TOL_LOSS, f"eval --packing off {alone} vs reference {want}")
    # --val during training evaluates the same way (at lr 0 the step changes nothing)
    out = os.path.join(work, "out")
    run_train(fails, lorad, s, out, ["--val", s.data, "--steps", "1", "--lr", "0"])
    rows = [r for r in h.read_metrics(os.path.join(out, "metrics.jsonl")) if "val_loss" in r]
    got = rows[0]["val_loss"] if rows else None
    fails.check(got is not None and h.rel_err(got, want) <= TOL_LOSS, f"--val: {got} vs reference {want}")


# ---- resume across ranks on packed chat data ----

def chat_data(work):
    """Chat JSONL of assorted lengths, prepared by lorad prep for the bundled base."""
    rng = np.random.default_rng(7)
    words = "the a model learns to stop when its answer ends and packs short turns together".split()
    path = os.path.join(work, "chat.jsonl")
    with open(path, "w") as f:
        for i in range(60):
            q = " ".join(rng.choice(words, int(rng.integers(1, 12))))
            a = " ".join(rng.choice(words, int(rng.integers(1, 30))))
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
    return path


def case_resume_chat(fails, lorad, work):
    model = os.path.join(REPO, "examples", "base")
    data = os.path.join(work, "chat.h5")
    p = h.run_lorad(lorad, ["prep", "--model", model, "--data", chat_data(work), "--out", data])
    if not h.expect_ok(fails, p, "lorad prep of the chat data"):
        return
    with h5py.File(data) as f:
        n_docs = len(f["doc_offsets"])
    steps, k = 8, 4

    def args(out, extra=()):
        return ["train", "--model", model, "--data", data, "--out", out, "--steps", str(steps), "--batch", "4",
                "--micro-batch", "1", "--seq", "96", "--lr", "0.01", "--rank", "4", "--dropout", "0.1",
                "--seed", "3", "--threads", "1", "--log-every", "1"] + list(extra)

    def run(ranks, a, env=None):
        return h.run_lorad_mpi(lorad, ranks, a, env=env) if ranks > 1 else \
            h.run_command([lorad] + a, 600, env=dict(os.environ, **(env or {})))

    straight = os.path.join(work, "straight")
    p = run(2, args(straight))
    if not h.expect_ok(fails, p, "the uninterrupted 2-rank run"):
        return
    base = h.metrics_rows(straight)
    m = [l for l in p.stderr.splitlines() if "training samples" in l]
    print(f"chat: {n_docs} examples, {m[0] if m else p.stderr[-300:]}", flush=True)
    for n in (2, 1, 3):
        out = os.path.join(work, f"resumed_{n}")
        p = run(2, args(out), env={"LORAD_FAULT": f"rank:0:step:{k}:stop"})
        fails.check(p.returncode == REQUEUE, f"the stopped run exited {p.returncode}: {p.stderr[-400:]}")
        p = run(n, args(out, ["--resume", "auto"]))
        if not h.expect_ok(fails, p, f"the run resumed on {n} ranks"):
            continue
        got = h.metrics_rows(out)
        if n == 2:
            fails.check(got == base, f"resumed on 2 ranks: metrics differ\n{got}\n{base}")
            continue
        worst = max(h.rel_err(x["loss"], y["loss"]) for x, y in zip(got, base))
        print(f"2 -> {n} ranks: worst loss rel err {worst:.2e}", flush=True)
        fails.check(len(got) == steps and worst <= 1e-5, f"2 -> {n} ranks: losses differ by {worst:.2e}")


def case_refusals(fails, lorad, work):
    s = Setup("gpt2", work)
    out = os.path.join(work, "out")
    run_train(fails, lorad, s, out, ["--ckpt-every", "2", "--steps", "2"])
    for flag in (["--packing", "off"], ["--truncate"]):
        p = h.run_lorad(lorad, s.train_args(out, flag + ["--resume", "auto"]))
        h.one_line_error(fails, p, [flag[0]], f"a resume with {' '.join(flag)}")
    for name, doc in (("unordered", [0, 9, 4]), ("offset", [3, 9])):
        bad = os.path.join(work, f"{name}.h5")
        with h5py.File(bad, "w") as f:
            f.create_dataset("tokens", data=s.tokens.astype(np.int32))
            f.create_dataset("doc_offsets", data=np.array(doc, np.int64))
        p = h.run_lorad(lorad, ["train", "--model", s.model, "--data", bad, "--out", os.path.join(work, name),
                                "--seq", str(T), "--steps", "1"])
        h.one_line_error(fails, p, [f"{name}.h5", "/doc_offsets"], f"a /doc_offsets {name}")


if __name__ == "__main__":
    h.run_driver("packing", {"gpt2": case_family("gpt2"), "llama": case_family("llama"), "off": case_off,
                             "truncate": case_truncate, "eval": case_eval, "resume_chat": case_resume_chat,
                             "refusals": case_refusals})
