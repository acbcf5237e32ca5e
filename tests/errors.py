"""errors.py: every validation error of train, eval, merge, generate, prep and submit tells
the truth.

The driver writes small models whose limits it chooses (a GPT-2 with n_positions 32 and
a vocabulary of 61, a byte-level GPT-2 with 8 positions, a Mistral with a sliding window
of 24) and a dataset, then triggers each check once. Every rejection must:
  - exit with code 2;
  - print exactly one line on stderr, starting with "lorad: ";
  - name the flag (or file) the check is about;
  - carry exactly the numbers the case expects, worked out from the case's own inputs
    (the value given, the bound, the model's context...), and no other: flag names and
    the work directory's paths are taken out of the line first, so "--beta1" or a path
    is no number. Wording is not checked, so the messages may change (issue #18).
Case `coverage` checks that the cases enumerate the checks: every flag `lorad CMD --help`
lists has a case or is listed in UNCHECKED with the reason, and every flag named in an
err_set/need call of the sources has a case.
Case `seq_default` checks --seq's default: the model's context when shorter than 256, on
train (stated on the start-up line, checkpointed, resumed), eval and the daemon.
Usage: errors.py --lorad PATH --workdir DIR --case train|eval|merge|generate|prep|submit|coverage|seq_default
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import prep as prep_test  # noqa: E402
import torch_gpt2 as gpt2  # noqa: E402
import torch_llama  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = gpt2.GPT2Config(vocab_size=61, n_positions=32, n_embd=16, n_head=2, n_layer=2)
BYTE_CFG = gpt2.GPT2Config(vocab_size=256, n_positions=8, n_embd=16, n_head=2, n_layer=1)
MISTRAL = torch_llama.LlamaConfig(model_type="mistral", vocab_size=61, hidden_size=16, intermediate_size=32,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                  max_position_embeddings=64, sliding_window=24)
N_TOKENS = 400
SEQ = 16  # an explicit --seq that fits every model
MODEL_SEQ_DEFAULT = 256  # lorad's cap on the default --seq (worker/model.h)
EXIT_USER = 2
# Flags whose values no check can reject (free strings, seeds, switches, enums the parser
# takes), or whose only failures are the files they name (covered by bad_input.py).
CONFIG = "one parser for every command: case train's --config cases"
TEXT_DATA = "prep's flags for .jsonl/.txt data: gentext.py data (on a token file), prep.py (their values)"
TEXT_FLAGS = {f: TEXT_DATA for f in ("--format", "--split", "--train-on", "--add-eos", "--max-len", "--template")}
PACKING_FLAGS = {f: "a switch (packing.py refusals: kept on resume)" for f in ("--packing", "--truncate")}
UNCHECKED = {
    "train": {"--val": "a file (bad_input.py)", "--init": "an enum: the parser's check (case train: --mode)",
              "--schedule": "an enum", "--seed": "any integer", "--shuffle": "a switch",
              "--gemm": "an enum", "--profile": "a switch", "--recompute": "a switch",
              **TEXT_FLAGS, **PACKING_FLAGS},
    "eval": {"--adapter": "a directory (infer.py's and adapters.py's refusals)", "--json": "a switch", "--config": CONFIG,
             **TEXT_FLAGS, **PACKING_FLAGS},
    "merge": {"--dtype": "an enum", "--config": CONFIG},
    "generate": {"--adapter": "a directory (infer.py's and adapters.py's refusals)", "--seed": "any integer",
                 "--ids": "a switch (adapters.py: with --prompts)",
                 "--config": CONFIG, "--chat": "a switch (gentext.py errors: no chat template)",
                 "--stop": "gentext.py errors: not UTF-8 for a tokenizer"},
    "prep": {"--config": CONFIG, "--split": "an enum", "--add-eos": "a switch (prep.py: no EOS)",
             "--template": "a name (prep_chat.py generation: an unknown one, one on text data)",
             "--skip-bad": "a switch (prep.py's malformed lines)"},
    "submit": {"--socket": "bad_input.py's daemon cases", "--connect": "bad_input.py", "--token-file": "bad_input.py",
               "--json": "a switch", "--config": CONFIG},
}


class Case(NamedTuple):
    name: str
    argv: List[str]
    names: List[str]             # flags or files the line must name
    nums: Optional[Sequence]     # exactly the numbers it must hold; None: not checked (e.g. a quoted item)
    ranks: int = 0               # > 0: under mpirun with this many ranks


class Inputs:
    def __init__(self, wd: str):
        self.wd = wd
        rng = np.random.default_rng(5)
        self.model = self.path("model")
        gpt2.write_model_dir(self.model, CFG, gpt2.random_gpt2_weights(CFG, rng), "F32", prefix=True)
        self.byte_model = self.path("byte_model")
        gpt2.write_model_dir(self.byte_model, BYTE_CFG, gpt2.random_gpt2_weights(BYTE_CFG, rng), "F32")
        self.mistral = self.path("mistral")
        torch_llama.write_model_dir(self.mistral, MISTRAL, torch_llama.random_llama_weights(MISTRAL, rng))
        self.data = self.path("train.bin")
        h.write_bin(self.data, rng.integers(0, CFG.vocab_size, N_TOKENS))
        self.short = self.path("short.bin")  # one token short of a sample of SEQ
        h.write_bin(self.short, rng.integers(0, CFG.vocab_size, SEQ))
        self.text = self.path("text.txt")
        with open(self.text, "w") as f:
            f.write("some text\n")
        self.empty = self.path("empty.txt")
        open(self.empty, "w").close()
        self.jsonl = self.path("two.jsonl")  # two text lines for prep, and a tokenizer
        with open(self.jsonl, "w") as f:
            f.write('{"text": "some text"}\n{"text": "more text"}\n')
        self.tokenizer = prep_test.write_tokenizer(self.path("tokenizer"), "gpt2", "some text and more").dir

    def path(self, name: str) -> str:
        return os.path.join(self.wd, name)

    def train(self, out: str, *extra, model=None, seq=SEQ) -> List[str]:
        args = ["train", "--model", model or self.model, "--data", self.data, "--out", self.path(out),
                "--steps", 1, "--batch", 2, "--threads", 1, "--targets", "c_attn", "--rank", 2]
        if seq is not None:
            args += ["--seq", seq]
        return [str(a) for a in args + list(extra)]

    def adapter(self) -> str:
        """A trained adapter (and its run), made once."""
        out = self.path("run_adapter")
        if not os.path.isdir(os.path.join(out, "adapter")):
            p = h.run_lorad(LORAD, self.train("run_adapter"), timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"the run that makes an adapter failed: {p.stderr.strip()}")
        return os.path.join(out, "adapter")


LORAD = ""


def numbers(line: str, wd: str) -> List[float]:
    """The numbers of LINE, without the work directory's paths and the flag names."""
    line = line.replace(wd, "<wd>")
    line = re.sub(r"<wd>[^\s:]*", "<path>", line)  # a path's ":LINE" stays a number
    line = re.sub(r"--[a-z][a-z0-9-]*", "<flag>", line)
    return [float(x) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])", line)]


def names_in(line: str, name: str) -> bool:
    """NAME (a flag or a path) appears as itself, not inside a longer flag."""
    return re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", line) is not None


def without_mpirun_report(stderr: str) -> str:
    """STDERR without the blocks mpirun itself prints between lines of dashes when a rank
    exits non-zero: they are mpirun's, not lorad's."""
    kept, inside = [], False
    for line in stderr.splitlines():
        if re.fullmatch(r"-{20,}", line):
            inside = not inside
        elif not inside:
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def judge(fails: h.Failures, wd: str, case: Case, p: subprocess.CompletedProcess) -> None:
    lines = (without_mpirun_report(p.stderr) if case.ranks else p.stderr).splitlines()
    problems = []
    if p.returncode != EXIT_USER:
        problems.append(f"exit code {p.returncode}, want {EXIT_USER}")
    if len(lines) != 1 or not lines[0].startswith("lorad: "):
        problems.append(f"stderr has {len(lines)} lines, want one starting 'lorad: '")
    line = lines[0] if lines else ""
    missing = [n for n in case.names if not names_in(line, n)]
    if missing:
        problems.append(f"does not name {missing}")
    if case.nums is not None:
        got, want = sorted(numbers(line, wd)), sorted(float(x) for x in case.nums)
        if got != want:
            problems.append(f"numbers {got}, want {want}")
    if problems:
        fails.add(f"{case.name}: " + "; ".join(problems) + f"; stderr: {p.stderr.strip()[:600]!r}")
    else:
        print(f"ok: {case.name}: {line}", flush=True)


def run_cases(fails: h.Failures, inp: Inputs, cases: List[Case]) -> None:
    for c in cases:
        p = h.run_lorad_mpi(LORAD, c.ranks, c.argv) if c.ranks else h.run_lorad(LORAD, c.argv, timeout=300)
        judge(fails, inp.wd, c, p)


# --------------------------------------------------------------------------------------
# The cases, one per check
# --------------------------------------------------------------------------------------

def range_cases(make, items) -> List[Case]:
    """(flag, value, the numbers the message must carry besides the value) -> cases."""
    return [Case(f"{flag} {value}", make(flag, value), [flag], [value] + list(bound))
            for flag, value, bound in items]


def train_cases(inp: Inputs) -> List[Case]:
    t = inp.train
    # the flag table's ranges (coordinator/flag_table.c): the bound appears where the rule
    # has one, and a 0 where the row says what 0 means
    ranges = [("--rank", 0, [1]), ("--alpha", -1, []), ("--dropout", 1.5, [0, 1]), ("--steps", 0, [1]),
              ("--batch", 0, [1]), ("--micro-batch", -1, [0]), ("--seq", -5, [0, MODEL_SEQ_DEFAULT]), ("--lr", -1, []),
              ("--warmup", -2, []), ("--weight-decay", -0.5, []), ("--beta1", 1, [0, 1]),
              ("--beta2", 1.5, [0, 1]), ("--eps", 0, []), ("--clip", -1, [0]), ("--threads", -1, [0]),
              ("--log-every", 0, [1]), ("--eval-every", -1, [0]), ("--eval-batches", -1, [0]),
              ("--replica-check-every", -1, [0]), ("--ckpt-every", -1, [0]), ("--ckpt-every-seconds", -1, [0]),
              ("--keep", -1, [0])]
    cases = range_cases(lambda f, v: t(f"out_{f[2:]}", f, v) if f != "--seq" else t("out_seq", seq=v), ranges)
    ckpt = os.path.join(inp.adapter(), "..", "checkpoints", "latest")
    cases += [
        Case("--model missing", t("o1") [0:1] + t("o1")[3:], ["--model"], []),
        Case("--data missing", [a for i, a in enumerate(t("o2")) if i not in (3, 4)], ["--data"], []),
        Case("--out missing", [a for i, a in enumerate(t("o3")) if i not in (5, 6)], ["--out"], []),
        Case("--micro-batch 4 does not divide --batch 6", t("o4", "--batch", "6", "--micro-batch", "4"),
             ["--micro-batch", "--batch"], [4, 6]),
        Case("--overwrite with --resume PATH", t("o5", "--overwrite", "--resume", ckpt), ["--overwrite", "--resume"],
             None),
        Case("--init-adapter with --mode full", t("o6", "--mode", "full", "--init-adapter", inp.adapter()),
             ["--init-adapter", "--mode"], []),
        Case("--rank-pattern with --mode full", t("o7", "--mode", "full", "--rank-pattern", "c_attn=4"),
             ["--rank-pattern", "--mode"], []),
        Case("--dropout with --mode full", t("o8", "--mode", "full", "--dropout", "0.1"), ["--dropout", "--mode"], []),
        Case("--rslora with --mode full", t("o9", "--mode", "full", "--rslora"), ["--rslora", "--mode"], []),
        Case("--base-dtype f16", t("o10", "--base-dtype", "f16"), ["--base-dtype"], []),
        Case("--base-dtype bf16 with --mode full", t("o11", "--mode", "full", "--base-dtype", "bf16"),
             ["--base-dtype", "--mode"], []),
        # job_patterns: the item is quoted; its numbers and the hint's example are not checked
        Case("--rank-pattern without =", t("o12", "--rank-pattern", "c_attn"), ["--rank-pattern", "'c_attn'"], None),
        Case("--rank-pattern c_attn=0", t("o13", "--rank-pattern", "c_attn=0"), ["--rank-pattern", "'c_attn=0'"],
             None),
        Case("--rank-pattern c_attn=2.5", t("o14", "--rank-pattern", "c_attn=2.5"),
             ["--rank-pattern", "'c_attn=2.5'"], None),
        Case("--alpha-pattern c_attn=-1", t("o15", "--alpha-pattern", "c_attn=-1"),
             ["--alpha-pattern", "'c_attn=-1'"], None),
        Case("--rank-pattern with a regex key", t("o16", "--rank-pattern", "c.*attn=4"),
             ["--rank-pattern", "'c.*attn'"], None),
        # the parser (daemon/cli.c)
        Case("unknown flag", t("o17", "--frobnicate", "1"), ["--frobnicate"], []),
        Case("--steps abc", t("o18", "--steps", "abc"), ["--steps"], []),
        Case("--lr x", t("o19", "--lr", "x"), ["--lr"], []),
        Case("--mode bogus", t("o20", "--mode", "bogus"), ["--mode"], []),
        Case("--shuffle=maybe", t("o21", "--shuffle=maybe"), ["--shuffle"], []),
        Case("--seq without a value", t("o22", seq=None) + ["--seq"], ["--seq"], []),
        Case("--targets empty list", t("o23", "--targets", ","), ["--targets"], []),
        # model-dependent: the context, the sliding window, the modules, the data
        Case("--seq beyond n_positions", t("o24", seq=CFG.n_positions + 8), ["--seq"],
             [CFG.n_positions + 8, CFG.n_positions, CFG.n_positions]),
        Case("--seq beyond sliding_window", t("o25", "--targets", "q_proj", model=inp.mistral,
                                              seq=MISTRAL.sliding_window + 6),
             ["--seq"], [MISTRAL.sliding_window + 6, MISTRAL.sliding_window, MISTRAL.sliding_window]),
        Case("--targets naming no module", t("o26", "--targets", "nonexistent_module"),
             ["--targets", "nonexistent_module"], None),
        Case("data shorter than one sample", [a if a != inp.data else inp.short for a in t("o27")],
             [inp.short], [SEQ, SEQ, SEQ + 1]),  # its tokens, --seq, and the tokens a sample needs
    ]
    # a run directory and a resumed run
    os.makedirs(inp.path("o28"), exist_ok=True)
    with open(inp.path("o28/metrics.jsonl"), "w") as f:
        f.write('{"step": 1}\n')
    cases.append(Case("--out holding a run", t("o28"), ["--out", "--resume", "--overwrite"], None))
    cases += config_cases(inp)
    cases.append(Case("--seq differing from the checkpoint's",
                      t("run_adapter", "--resume", "auto", "--steps", "2", seq=SEQ // 2), ["--seq"], [SEQ // 2, SEQ]))
    return cases


def config_cases(inp: Inputs) -> List[Case]:
    """--config FILE.json: each error names the file, the line of the key and the key."""
    def cfg(name: str, text: str) -> str:
        path = inp.path(name)
        with open(path, "w") as f:
            f.write(text)
        return path
    t = inp.train
    unknown = cfg("c_unknown.json", '{\n  "steps": 2,\n  "lrr": 0.001\n}\n')
    typed = cfg("c_typed.json", '{"rank": 4,\n "steps": "many"}')
    ranged = cfg("c_range.json", '{\n\n\n "lr": -1}')
    boolean = cfg("c_bool.json", '{"shuffle": 3}')
    listed = cfg("c_list.json", '{"targets": ["c_attn", 7]}')
    nested = cfg("c_nested.json", '{"config": "other.json"}')
    broken = cfg("c_broken.json", '{"steps": 2,,}')
    array = cfg("c_array.json", '[1, 2]')
    return [
        Case("--config unknown key", t("c1", "--config", unknown), [unknown, '"lrr"', "--lr"],
             [3]),
        Case("--config key of the wrong type", t("c2", "--config", typed), [typed, '"steps"', "'many'"], [2]),
        Case("--config value out of range", t("c3", "--config", ranged), [ranged, '"lr"'], [4, -1]),
        Case("--config number for a switch", t("c4", "--config", boolean), [boolean, '"shuffle"'], [1, 3]),
        Case("--config list with a number", t("c5", "--config", listed), [listed, '"targets"'], [1]),
        Case("--config naming a config", t("c6", "--config", nested), [nested, '"config"'], [1]),
        Case("--config not JSON", t("c7", "--config", broken), [broken], None),
        Case("--config not an object", t("c8", "--config", array), [array], None),
        Case("--config missing file", t("c9", "--config", inp.path("nope.json")), [inp.path("nope.json")], None),
        Case("--config twice", t("c10", "--config", unknown, "--config", typed), ["--config"], []),
        Case("--config without a value", t("c11") + ["--config"], ["--config"], []),
    ]


def eval_cases(inp: Inputs) -> List[Case]:
    def e(*extra, data=None):
        return [str(a) for a in ["eval", "--model", inp.model, "--data", data or inp.data, "--seq", SEQ] + list(extra)]
    cases = range_cases(lambda f, v: e(f, v), [("--batch", 0, [1]), ("--seq", -1, [0, MODEL_SEQ_DEFAULT]), ("--max-batches", -1, [0]),
                                               ("--threads", -1, [0])])
    return cases + [
        Case("--data missing", ["eval", "--model", inp.model], ["--data"], []),
        Case("--model missing", ["eval", "--data", inp.data], ["--model"], []),
        Case("--seq beyond n_positions", e("--seq", CFG.n_positions + 1), ["--seq"],
             [CFG.n_positions + 1, CFG.n_positions, CFG.n_positions]),
        Case("data shorter than one sample", e(data=inp.short), [inp.short], [SEQ, SEQ, SEQ + 1]),
        Case("--logits on 2 ranks", e("--logits", inp.path("logits.bin")), ["--logits"], [], ranks=2),
    ]


def merge_cases(inp: Inputs) -> List[Case]:
    ad = inp.adapter()

    def m(out, *extra):
        return ["merge", "--model", inp.model, "--adapter", ad, "--out", inp.path(out)] + [str(a) for a in extra]
    done = inp.path("merged_once")
    if not os.path.exists(os.path.join(done, "model.safetensors")):
        p = h.run_lorad(LORAD, m("merged_once"))
        if p.returncode != 0:
            raise RuntimeError(f"the first merge failed: {p.stderr.strip()}")
    return range_cases(lambda f, v: m("m1", f, v), [("--max-shard-mb", 0, []), ("--max-shard-mb", -5, [])]) + [
        Case("--adapter missing", ["merge", "--model", inp.model, "--out", inp.path("m2")], ["--adapter"], []),
        Case("--out missing", ["merge", "--model", inp.model, "--adapter", ad], ["--out"], []),
        Case("--model missing", ["merge", "--adapter", ad, "--out", inp.path("m3")], ["--model"], []),
        Case("--out is --model", ["merge", "--model", inp.model, "--adapter", ad, "--out", inp.model],
             ["--out", "--model"], None),
        Case("--out holding a merged model", m("merged_once"), ["--out", "--overwrite"], None),
        Case("--dtype bogus", m("m4", "--dtype", "bogus"), ["--dtype"], []),
    ]


def generate_cases(inp: Inputs) -> List[Case]:
    def g(*extra, model=None, prompt="ab"):
        return ["generate", "--model", model or inp.byte_model, "--prompt", prompt] + [str(a) for a in extra]
    long_prompt = "x" * (BYTE_CFG.n_positions + 3)
    return range_cases(lambda f, v: g(f, v), [("--max-new", -1, []), ("--temperature", -0.5, [0]),
                                              ("--top-k", -1, [0]), ("--threads", -1, [0]), ("--batch", 0, [1])]) + [
        Case("--prompts missing", ["generate", "--model", inp.byte_model, "--prompts", inp.path("none.jsonl")],
             [inp.path("none.jsonl")], None),
        Case("--prompt and --prompts", g("--prompts", inp.jsonl), ["--prompt", "--prompts"], []),
        Case("--prompt missing", ["generate", "--model", inp.byte_model], ["--prompt"], []),
        Case("--model missing", ["generate", "--prompt", "ab"], ["--model"], []),
        Case("vocabulary below 256", g(model=inp.model), [inp.model], [CFG.vocab_size, 256]),
        Case("--prompt longer than the context", g(prompt=long_prompt), ["--prompt"],
             [len(long_prompt), BYTE_CFG.n_positions]),
        Case("--template without --chat", g("--template", "tool_use"), ["--template", "--chat"], []),
    ]


def prep_cases(inp: Inputs) -> List[Case]:
    def d(*extra) -> List[str]:
        return [str(a) for a in ["prep", "--data", inp.jsonl, "--out", inp.path("p1.h5")] + list(extra)]

    existing = inp.path("exists.h5")
    if not os.path.exists(existing):
        p = h.run_lorad(LORAD, ["prep", "--text", inp.text, "--out", existing])
        if p.returncode != 0:
            raise RuntimeError(f"the first prep failed: {p.stderr.strip()}")
    return [
        Case("--data and --text missing", ["prep", "--out", inp.path("p1.h5")], ["--data", "--text"], []),
        Case("--out missing", ["prep", "--text", inp.text], ["--out"], []),
        Case("--text with --data", ["prep", "--text", inp.text, "--data", inp.jsonl, "--out", inp.path("p1.h5")],
             ["--text"], []),
        Case("--model and --tokenizer missing", d(), ["--model", "--tokenizer"], []),
        Case("--model and --tokenizer", d("--model", inp.tokenizer, "--tokenizer", inp.tokenizer),
             ["--model", "--tokenizer"], []),
        Case("--format completion on text lines", d("--tokenizer", inp.tokenizer, "--format", "completion"),
             ["--format", inp.jsonl + ":1"], [1]),
        Case("--format chat, no chat template", d("--tokenizer", inp.tokenizer, "--format", "chat"),
             [inp.tokenizer, "no chat template"], []),
        Case("--train-on assistant on text lines", d("--tokenizer", inp.tokenizer, "--train-on", "assistant"),
             ["--train-on", inp.jsonl + ":1"], [1]),
        Case("--train-on completion of text", d("--tokenizer", inp.tokenizer, "--train-on", "completion"),
             ["--train-on"], []),
        Case("--val-split without --val-out", d("--tokenizer", inp.tokenizer, "--val-split", 0.5), ["--val-split"], []),
        Case("--val-out without --val-split", d("--tokenizer", inp.tokenizer, "--val-out", inp.path("v.h5")),
             ["--val-out"], []),
        Case("--val-out is --out", d("--tokenizer", inp.tokenizer, "--val-split", 0.5, "--val-out", inp.path("p1.h5")),
             ["--val-out"], []),
        Case("--val-split leaves no example", d("--tokenizer", inp.tokenizer, "--val-split", 0.4, "--val-out",
                                                inp.path("v.h5")), ["--val-split"], [0.4, 2]),
        Case("--data of another kind", ["prep", "--tokenizer", inp.tokenizer, "--data", inp.data, "--out",
                                        inp.path("p1.h5")], [inp.data], []),
    ] + range_cases(lambda f, v: d("--tokenizer", inp.tokenizer, f, v), [
        ("--val-split", 1, [0, 1, 0]), ("--val-split", -0.5, [0, 1, 0]), ("--max-len", -1, [0]), ("--threads", -1, [0]),
    ]) + [
        Case("--out exists", ["prep", "--text", inp.text, "--out", existing], ["--out", "--overwrite"], None),
        Case("empty text", ["prep", "--text", inp.empty, "--out", inp.path("p2.h5")], [inp.empty], None),
        Case("text missing", ["prep", "--text", inp.path("nope.txt"), "--out", inp.path("p3.h5")],
             [inp.path("nope.txt")], None),
    ]


class Daemon:
    """`lorad serve` in one process (no mpirun) on a state directory of the work dir."""

    def __init__(self, wd: str):
        self.state = os.path.join(wd, "state")
        self.sock = os.path.join(self.state, "lorad.sock")
        self.proc = subprocess.Popen([LORAD, "serve", "--state", self.state], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        while not os.path.exists(self.sock):  # no deadline: a dead daemon ends the wait
            if self.proc.poll() is not None:
                raise RuntimeError(f"lorad serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            time.sleep(0.05)

    def client(self, *args) -> subprocess.CompletedProcess:
        return h.run_lorad(LORAD, [str(a) for a in args] + ["--socket", self.sock])

    def wait(self, job: str) -> dict:
        """The job's record once it has ended (no deadline: the job ends or the daemon dies)."""
        while True:
            p = self.client("status", job, "--json")
            if p.returncode != 0:
                raise RuntimeError(f"status {job}: {p.stderr.strip()}")
            rec = json.loads(p.stdout)
            rec = rec["jobs"][0] if "jobs" in rec else rec
            if str(rec.get("state")).lower() not in ("queued", "running"):
                return rec
            time.sleep(0.2)

    def stop(self) -> None:
        self.client("shutdown")
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def submit_cases(inp: Inputs, sock: str) -> List[Case]:
    def s(*extra):
        return [str(a) for a in ["submit", "--socket", sock, "--model", inp.model, "--data", inp.data, "--steps", 1,
                                 "--batch", 2, "--seq", SEQ, "--threads", 1] + list(extra)]
    # the client's own checks, then job_validate and job_resolve at the daemon
    return [
        Case("submit --out", s("--out", inp.path("x")), ["--out"], []),
        Case("submit --resume", s("--resume", "auto"), ["--resume"], []),
        Case("submit --steps many", s("--steps", "many"), ["--steps"], []),
        Case("submit --rank 0", s("--rank", 0), ["--rank"], [0, 1]),
        Case("submit --micro-batch 4 --batch 6", s("--batch", 6, "--micro-batch", 4), ["--micro-batch", "--batch"],
             [4, 6]),
        Case("submit --seq beyond n_positions", s("--seq", CFG.n_positions + 2), ["--seq"],
             [CFG.n_positions + 2, CFG.n_positions, CFG.n_positions]),
        Case("submit --micro-batch -2", s("--micro-batch", -2), ["--micro-batch"], [-2, 0]),
    ]


# --------------------------------------------------------------------------------------
# Coverage and the default --seq
# --------------------------------------------------------------------------------------

def help_flags(cmd: str) -> List[str]:
    p = h.run_lorad(LORAD, [cmd, "--help"])
    return re.findall(r"^\s+(--[a-z0-9-]+)", p.stdout, re.M)


def source_flags() -> Dict[str, str]:
    """Flag -> the file of every err_set call that names a flag literally, and of every
    row of the flag table with a range or required."""
    found = {}
    with open(os.path.join(SRC, "coordinator", "flag_table.c")) as f:
        for m in re.finditer(r"\{[A-Z_]+, \"([a-z0-9_]+)\"[^}]*?\.(?:range|required) =", f.read()):
            found.setdefault("--" + m.group(1).replace("_", "-"), "coordinator/flag_table.c")
    for path in glob.glob(os.path.join(SRC, "*", "*.c")):
        if "/tests/" in path or "/build" in path:
            continue
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r"\b(?:err_set|need)\((?:[^;]*?,\s*)?\"(--[a-z0-9-]+)\"", text):
            found.setdefault(m.group(1), os.path.relpath(path, SRC))
    return found


def case_coverage(fails: h.Failures, lorad: str, work: str) -> None:
    inp = Inputs(work)
    sock = os.path.join(work, "nobody.sock")
    by_cmd = {"train": train_cases(inp), "eval": eval_cases(inp), "merge": merge_cases(inp),
              "generate": generate_cases(inp), "prep": prep_cases(inp), "submit": submit_cases(inp, sock)}
    named = {cmd: {n for c in cases for n in c.names} for cmd, cases in by_cmd.items()}
    listed = set()
    for cmd in by_cmd:
        flags = help_flags(cmd)
        listed.update(flags)
        fails.check(len(flags) >= 2, f"{cmd} --help lists no flags")
        # submit's job flags go through the train checks (a few submit cases show it)
        known = named[cmd] | (named["train"] | set(UNCHECKED["train"]) if cmd == "submit" else set())
        for flag in flags:
            fails.check(flag in known or flag in UNCHECKED[cmd],
                        f"{cmd} {flag}: no error case here and not listed in UNCHECKED (add one)")
    every = set().union(*named.values())
    unchecked = set().union(*(set(u) for u in UNCHECKED.values()))
    for flag, where in sorted(source_flags().items()):
        if flag not in listed or flag in every or flag in unchecked:
            continue  # another command's flag (serve, init-model), or covered
        fails.add(f"{flag}: an error of {where} names it, but no case triggers it (add one)")
    print(f"ok: {sum(map(len, by_cmd.values()))} cases", flush=True)


def startup_seq(stderr: str) -> Optional[int]:
    m = re.search(r"samples of (\d+) tokens \(--seq (\d+)", stderr)
    return int(m.group(2)) if m and m.group(1) == m.group(2) else None


def case_seq_default(fails: h.Failures, lorad: str, work: str) -> None:
    """No --seq: the model's context (32, the Mistral's window 24), stated, kept on resume."""
    inp = Inputs(work)
    for label, model, context, targets in (("gpt2", inp.model, CFG.n_positions, "c_attn"),
                                           ("mistral", inp.mistral, MISTRAL.sliding_window, "q_proj")):
        out = inp.path(f"seq_{label}")
        p = h.run_lorad(lorad, inp.train(f"seq_{label}", "--targets", targets, "--steps", 2, "--ckpt-every", 1,
                                         model=model, seq=None))
        if not fails.check(p.returncode == 0, f"{label}: train without --seq failed: {p.stderr.strip()}"):
            continue
        fails.check(startup_seq(p.stderr) == context, f"{label}: the start-up line does not state --seq {context}: "
                                                       f"{p.stderr.strip()[:400]}")
        rows = h.read_metrics(os.path.join(out, "metrics.jsonl"))
        fails.check([r["tokens"] for r in rows] == [2 * context] * 2, f"{label}: tokens per step {rows}")
        insp = h.run_lorad(lorad, ["inspect", os.path.join(out, "checkpoints", "latest")])
        fails.check(re.search(r'"seq":\s*%d\b' % context, insp.stdout) is not None,
                    f"{label}: the checkpoint's job has no seq {context}: {insp.stdout[-600:]}")
        # resumed with the default and with the same explicit value: both continue
        for extra, steps in (([], 3), (["--seq", str(context)], 4)):
            p = h.run_lorad(lorad, inp.train(f"seq_{label}", "--targets", targets, "--resume", "auto",
                                             "--steps", steps, *extra, model=model, seq=None))
            fails.check(p.returncode == 0 and "resuming from" in p.stderr,
                        f"{label}: resume {extra or 'without --seq'} failed: {p.stderr.strip()[:400]}")
        rows = h.read_metrics(os.path.join(out, "metrics.jsonl"))
        fails.check([r["step"] for r in rows] == [1, 2, 3, 4], f"{label}: steps after the resumes {rows}")
    p = h.run_lorad(lorad, ["eval", "--model", inp.model, "--data", inp.data, "--json"])
    if fails.check(p.returncode == 0, f"eval without --seq failed: {p.stderr.strip()}"):
        got = json.loads(p.stdout)["samples"]
        want = (N_TOKENS - 1) // CFG.n_positions
        fails.check(got == want, f"eval without --seq: {got} samples, want {want} of {CFG.n_positions} tokens")
    d = Daemon(work)
    try:
        p = d.client("submit", "--model", inp.model, "--data", inp.data, "--steps", 1, "--batch", 2, "--threads", 1)
        if fails.check(p.returncode == 0, f"submit without --seq failed: {p.stderr.strip()}"):
            job = p.stdout.strip()
            rec = d.wait(job)
            rows = h.read_metrics(os.path.join(d.state, "jobs", job, "metrics.jsonl"))
            fails.check(str(rec.get("state")).lower() == "succeeded" and [r["tokens"] for r in rows] == [2 * CFG.n_positions],
                        f"the daemon's job without --seq: {rec}, rows {rows}")
    finally:
        d.stop()


def command_case(cmd: str):
    def run(fails: h.Failures, lorad: str, work: str) -> None:
        inp = Inputs(work)
        if cmd == "submit":
            d = Daemon(work)
            try:
                run_cases(fails, inp, submit_cases(inp, d.sock))
            finally:
                d.stop()
            return
        run_cases(fails, inp, {"train": train_cases, "eval": eval_cases, "merge": merge_cases,
                               "generate": generate_cases, "prep": prep_cases}[cmd](inp))
    return run


def with_lorad(run):
    def wrapped(fails, lorad, work):
        global LORAD
        LORAD = lorad
        run(fails, lorad, work)
    return wrapped


if __name__ == "__main__":
    cases = {c: command_case(c) for c in ("train", "eval", "merge", "generate", "prep", "submit")}
    cases.update(coverage=case_coverage, seq_default=case_seq_default)
    h.run_driver("errors", {k: with_lorad(v) for k, v in cases.items()})
