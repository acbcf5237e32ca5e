"""bench/adapters.py: many adapters on one base (issue #15), measured side by side in one
run on the GPT-2-124M shape, written into bench/RESULTS.md's section for it (bench/run.py
keeps it).

  Mixed-adapter evaluation: four adapters of different targets and ranks (each trained
  one step by lorad train, so B is not zero) evaluated in one `lorad eval --adapter A
  --adapter B --adapter C --adapter D` against four separate `lorad eval --adapter X`
  (each merging its adapter into a copy of the weights), and the base alone. Each run's
  wall time (the median of 3 repeats, with their range), and its start-up (model load,
  merge, adapter import) measured as the same command over one sequence, so the table
  shows where the time goes.

Every run goes one at a time after the machine is idle (others' CPU share per run in the
table). Speed is reported, never asserted.
usage: adapters.py [--lorad build-dev/lorad] [--workdir DIR] [--results FILE] [--report]
       (--report: rewrite the section from WORKDIR/results.json, running nothing)
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (bench/run.py: the model, the data, the idle wait, the measured child runs)

CFG = dict(run.CONFIGS["full"], batch=2, seq=128)
ADAPTERS = [("c_attn r8", ["--targets", "c_attn", "--rank", 8, "--alpha", 16]),
            ("q,v r16", ["--targets", "q,v", "--rank", 16, "--alpha", 16]),
            ("attn.c_proj r4", ["--targets", "attn.c_proj", "--rank", 4, "--alpha", 8]),
            ("mlp.c_fc r8 rsLoRA", ["--targets", "mlp.c_fc", "--rank", 8, "--alpha", 8, "--rslora"])]
EVAL_BATCH, EVAL_BATCHES = 8, 8  # 64 sequences of 128 tokens
REPEATS = 3


def adapters_make(lorad, model, data, work):
    """Each adapter trained one step (made once and reused)."""
    dirs = []
    for i, (_, flags) in enumerate(ADAPTERS):
        out = os.path.join(work, f"adapter-{i}")
        if not os.path.exists(os.path.join(out, "adapter", "adapter_model.safetensors")):
            run.run([lorad, "train", "--model", model, "--data", data, "--out", out, "--overwrite", "--steps", 1,
                     "--lr", 1e-2, "--batch", CFG["batch"], "--seq", CFG["seq"], "--ckpt-every", 0] + flags)
        dirs.append(os.path.join(out, "adapter"))
    return dirs


def timed_eval(lorad, model, data, adapters, batches):
    """One `lorad eval` over BATCHES micro-batches (1: one sequence) with ADAPTERS."""
    batch = EVAL_BATCH if batches > 1 else 1
    cmd = [lorad, "eval", "--model", model, "--data", data, "--seq", CFG["seq"], "--batch", batch, "--max-batches",
           batches, "--threads", CFG["threads"], "--json"]
    for a in adapters:
        cmd += ["--adapter", a]
    run.wait_idle(60)
    return run.run(cmd)


def measure(lorad, model, data, dirs):
    """Every run REPEATS times, the runs of one repeat one after another (so a slow spell of
    the machine touches every run of it alike): each row's median and range."""
    runs = [("base alone", [])] + [(f"--adapter {name}", [d]) for (name, _), d in zip(ADAPTERS, dirs)] \
        + [("4 adapters in one pass", dirs)]
    got = {label: [] for label, _ in runs}
    for rep in range(REPEATS):
        for label, adapters in runs:
            full = timed_eval(lorad, model, data, adapters, EVAL_BATCHES)
            start = timed_eval(lorad, model, data, adapters, 1)
            got[label].append((full.wall_s, start.wall_s, full.rss_mib, max(full.other_cpu, start.other_cpu)))
            run.log(f"repeat {rep + 1}: {label}: {full.wall_s:.2f} s (start-up {start.wall_s:.2f} s)")
    rows = []
    for label, adapters in runs:
        walls = sorted(g[0] for g in got[label])
        rows.append(dict(label=label, n=len(adapters), wall=walls[len(walls) // 2], lo=walls[0], hi=walls[-1],
                         start=sorted(g[1] for g in got[label])[len(walls) // 2], rss=max(g[2] for g in got[label]),
                         others=max(g[3] for g in got[label])))
    return rows


def section(rows, commit, date):
    sep = [r for r in rows if r["n"] == 1]
    mixed = next(r for r in rows if r["n"] == len(ADAPTERS))
    total = sum(r["wall"] for r in sep)
    compute_sep, compute_mixed = sum(r["wall"] - r["start"] for r in sep), mixed["wall"] - mixed["start"]
    ratio = mixed["wall"] / total
    L = ["## Many adapters on one base (issue #15)", "",
         f"- **Command**: `/usr/bin/python3 bench/adapters.py` (every run one at a time, after the machine is idle)",
         f"- **Date**: {date}; commit {commit}",
         f"- **Shape**: GPT-2 124M ({CFG['layers']} layers, d {CFG['dim']}, vocab {CFG['vocab']}), random weights; "
         f"eval of {EVAL_BATCH * EVAL_BATCHES} sequences of {CFG['seq']} tokens, --batch {EVAL_BATCH}, "
         f"{CFG['threads']} threads; adapters: " + "; ".join(name for name, _ in ADAPTERS), "",
         "### Targets (issue #15)", "", "| target | measured | | detail |", "|---|---:|---|---|",
         f"| mixed eval of 4 adapters ≤ 0.5× the time of 4 separate evals | {ratio:.2f}× | "
         f"**{'met' if ratio <= 0.5 else 'not met'}** | {mixed['wall']:.2f} s against {total:.2f} s |", "",
         "### Mixed-adapter evaluation", "",
         f"Medians of {REPEATS} repeats (the range of the wall times beside them):", "",
         "| run | wall s | wall s, range | start-up s (one sequence) | evaluation s (wall − start-up) | peak RSS MiB | "
         "others' CPU |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        L.append(f"| {r['label']} | {r['wall']:.2f} | {r['lo']:.2f}–{r['hi']:.2f} | {r['start']:.2f} | "
                 f"{r['wall'] - r['start']:.2f} | {r['rss']:,.0f} | {100 * r['others']:.0f} % |")
    L += ["", f"Where the time goes: the four separate evals spend {total - compute_sep:.2f} s starting up (each loads "
          f"the model and merges its adapter into a copy of the weights) and {compute_sep:.2f} s evaluating; the one "
          f"pass spends {mixed['start']:.2f} s and {compute_mixed:.2f} s ({compute_mixed / compute_sep:.2f}× the "
          "separate evals' evaluation: its adapters' thin products run unmerged, beside products of four times "
          "the rows). Rows can share a frozen product only while their inputs are equal, that is up to the first "
          "adapted module (in layer 0 for all four adapters here): after it every adapter needs its own "
          "activations. So what one pass can save is the start-ups, and the 0.5× target holds only where an "
          "eval is shorter than about three start-ups."]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorad", default=os.path.join(os.path.dirname(HERE), "build-dev", "lorad"))
    ap.add_argument("--workdir", default="/tmp/lorad-bench-adapters")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--report", action="store_true", help="only rewrite the section from WORKDIR/results.json")
    args = ap.parse_args()
    lorad = os.path.abspath(args.lorad)
    os.makedirs(args.workdir, exist_ok=True)
    state = os.path.join(args.workdir, "results.json")
    if args.report:
        res = json.load(open(state))
    else:
        res = {"commit": subprocess.run(["git", "-C", HERE, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                        text=True).stdout.strip(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        model, data = run.model_dir(args.workdir, CFG, lorad), run.data_file(args.workdir, CFG)
        dirs = adapters_make(lorad, model, data, args.workdir)
        res["rows"] = measure(lorad, model, data, dirs)
        with open(state, "w") as f:
            json.dump(res, f)
    text = section(res["rows"], res["commit"], res["date"])
    run.section_write(args.results, run.ADAPTERS_MARKERS, text)
    print(text)


if __name__ == "__main__":
    main()
