"""config.py: `lorad train --config FILE.json`, keys as the flag names.

With a small GPT-2 from `lorad init-model` and a dataset from `lorad prep`:
  - a config (keys spelt as flags and as fields, a list as a JSON array, a switch as
    false, numbers as JSON numbers) plus flags on the command line that override two of
    its keys: the checkpoint's job holds the config's values where no flag was given and
    the command line's where one was, and the run writes the command line's step count;
  - the same job given entirely as flags writes a byte-identical adapter and the same
    metrics (but timings): the config is only another spelling of the flags;
  - under `mpirun -np 2` only rank 0 reads the file, and the job is the same;
  - `lorad train --help` offers --config.
The errors of --config (unknown keys with the nearest name, wrong types, ranges, bad
JSON, twice) are errors.py's case train.
"""

import json
import os
import sys

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

STEPS = 3


def checkpoint_job(lorad: str, out: str) -> dict:
    p = h.run_lorad(lorad, ["inspect", os.path.join(out, "checkpoints", "latest")])
    return json.loads(p.stdout.split("\njob\n", 1)[1]) if p.returncode == 0 and "\njob\n" in p.stdout else {}


def run(fails: h.Failures, lorad: str, work: str) -> None:
    model, data = os.path.join(work, "model"), os.path.join(work, "data.h5")
    init = ["init-model", "--out", model, "--layers", 1, "--dim", 16, "--heads", 2, "--positions", 32, "--seed", 3]
    if not h.expect_ok(fails, h.run_lorad(lorad, init), "init-model"):
        return
    text = os.path.join(work, "text.txt")
    with open(text, "w") as f:
        f.write("the quick brown fox jumps over the lazy dog. " * 40)
    if not h.expect_ok(fails, h.run_lorad(lorad, ["prep", "--text", text, "--out", data]), "prep"):
        return
    config = {"model": model, "data": data, "steps": 50, "lr": 0.01, "targets": ["c_attn", "mlp.c_fc"],
              "rank": 4, "alpha": 16, "shuffle": False, "micro-batch": 1, "batch": 2, "seq": 16,
              "threads": 1, "ckpt_every": 1, "weight_decay": 0.01}
    path = os.path.join(work, "job.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    out_cfg = os.path.join(work, "run_config")
    p = h.run_lorad(lorad, ["train", "--config", path, "--out", out_cfg, "--steps", STEPS, "--lr", "0.001"])
    if not h.expect_ok(fails, p, "train --config"):
        return
    job = checkpoint_job(lorad, out_cfg)
    want = {"steps": STEPS, "lr": 0.001, "targets": ["c_attn", "mlp.c_fc"], "rank": 4, "alpha": 16, "shuffle": False,
            "micro_batch": 1, "batch": 2, "seq": 16, "ckpt_every": 1, "weight_decay": 0.01, "model": model}
    for key, value in want.items():
        fails.check(job.get(key) == value, f"the checkpoint's job has {key} = {job.get(key)!r}, want {value!r}")
    rows = h.metrics_rows(out_cfg)
    fails.check([r["step"] for r in rows] == list(range(1, STEPS + 1)), f"steps run: {[r['step'] for r in rows]}")

    out_flags = os.path.join(work, "run_flags")
    flags = ["train", "--model", model, "--data", data, "--out", out_flags, "--steps", STEPS, "--lr", "0.001",
             "--targets", "c_attn,mlp.c_fc", "--rank", 4, "--alpha", 16, "--shuffle", "off", "--micro-batch", 1,
             "--batch", 2, "--seq", 16, "--threads", 1, "--ckpt-every", 1, "--weight-decay", "0.01"]
    if h.expect_ok(fails, h.run_lorad(lorad, flags), "train with the same flags"):
        fails.check(h.adapter_bytes(out_flags) == h.adapter_bytes(out_cfg), "the adapters of --config and flags differ")
        fails.check(h.metrics_rows(out_flags) == rows, "the metrics of --config and flags differ")

    out_mpi = os.path.join(work, "run_mpi")
    p = h.run_lorad_mpi(lorad, 2, ["train", "--config", path, "--out", out_mpi, "--steps", STEPS,
                                   "--lr", "0.001"])
    if h.expect_ok(fails, p, "mpirun -np 2 train --config"):
        got = checkpoint_job(lorad, out_mpi)
        for key, value in want.items():
            fails.check(got.get(key) == value, f"2 ranks: the job has {key} = {got.get(key)!r}, want {value!r}")

    p = h.run_lorad(lorad, ["train", "--help"])
    fails.check(p.returncode == 0 and "--config FILE.json" in p.stdout, "train --help does not offer --config")


if __name__ == "__main__":
    h.run_driver("config", run)
