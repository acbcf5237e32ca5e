"""memory.py: shows that LoRA's frozen weights cost no gradient or optimizer memory.

Builds a 17M-parameter GPT-2 with `lorad init-model`, trains it for two steps with LoRA
and with --mode full, and compares the peak resident memory of the two processes
(from wait4's rusage). Full fine-tuning holds weights, gradients and both AdamW moments
for every parameter; LoRA holds only the mapped weights and the tiny adapter block, so
its peak must be well under half of full mode's. Exits non-zero otherwise.
"""
import os
import subprocess
import sys

import numpy as np

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# harness imports no torch: a parent holding torch would inflate the children's
# ru_maxrss (Linux carries the pre-exec high-water mark over exec).
import harness as h  # noqa: E402


def peak_rss_mib(cmd):
    """Runs CMD and returns (exit code, peak RSS in MiB, stderr)."""
    print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024.0, err


def run(fails: h.Failures, lorad: str, work: str) -> None:
    model = os.path.join(work, "model")
    if not h.expect_ok(fails, h.run_lorad(lorad, ["init-model", "--out", model, "--layers", 4, "--dim", 512,
                                                  "--heads", 8, "--vocab", 8192, "--positions", 64]), "init-model"):
        return
    data = os.path.join(work, "data.bin")
    h.write_bin(data, np.random.default_rng(0).integers(0, 8192, 4096))
    common = ["train", "--model", model, "--data", data, "--steps", "2", "--batch", "2", "--seq", "64",
              "--threads", "1"]
    rss = {}
    for mode in ("lora", "full"):
        out = os.path.join(work, "out_" + mode)
        rc, rss[mode], err = peak_rss_mib([lorad] + common + ["--mode", mode, "--out", out])
        if not fails.check(rc == 0, f"lorad --mode {mode} exited {rc}: {err.strip()}"):
            return
        print(f"peak RSS --mode {mode}: {rss[mode]:.1f} MiB")
    ratio = rss["lora"] / rss["full"]
    print(f"LoRA / full peak RSS: {ratio:.3f}")
    fails.check(ratio < 0.5, "LoRA should need well under half of full fine-tuning's memory")


if __name__ == "__main__":
    h.run_driver("memory", run)
