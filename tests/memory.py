"""memory.py: shows that LoRA's frozen weights cost no gradient or optimizer memory.

Builds a 17M-parameter GPT-2 with `lorad init-model`, trains it for two steps with LoRA
and with --mode full, and compares the peak resident memory of the two processes
(from wait4's rusage). Full fine-tuning holds weights, gradients and both AdamW moments
for every parameter; LoRA holds only the mapped weights and the tiny adapter block, so
its peak must be well under half of full mode's. Exits non-zero otherwise.
"""
# Standalone on purpose: gpt2_ref (and its run_driver) imports torch, and a parent that
# big inflates the children's ru_maxrss (Linux carries the pre-exec high-water mark).
import argparse
import os
import subprocess
import sys

import numpy as np


def peak_rss_mib(cmd):
    """Runs CMD and returns (exit code, peak RSS in MiB, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024.0, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorad", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    model = os.path.join(a.workdir, "model")
    subprocess.run([a.lorad, "init-model", "--out", model, "--layers", "4", "--dim", "512", "--heads", "8",
                    "--vocab", "8192", "--positions", "64"], check=True)
    tokens = np.random.default_rng(0).integers(0, 8192, 4096).astype(np.uint16)
    header = np.zeros(256, np.int32)
    header[:3] = [20240520, 1, len(tokens)]
    data = os.path.join(a.workdir, "data.bin")
    with open(data, "wb") as f:
        f.write(header.tobytes() + tokens.tobytes())
    common = ["train", "--model", model, "--data", data, "--steps", "2", "--batch", "2", "--seq", "64",
              "--threads", "1"]
    rss = {}
    for mode in ("lora", "full"):
        out = os.path.join(a.workdir, "out_" + mode)
        rc, rss[mode], err = peak_rss_mib([a.lorad] + common + ["--mode", mode, "--out", out])
        if rc != 0:
            print(f"FAIL: lorad --mode {mode} exited {rc}: {err.strip()}")
            return 1
        print(f"peak RSS --mode {mode}: {rss[mode]:.1f} MiB")
    ratio = rss["lora"] / rss["full"]
    print(f"LoRA / full peak RSS: {ratio:.3f}")
    if ratio >= 0.5:
        print("FAIL: LoRA should need well under half of full fine-tuning's memory")
        return 1
    print("memory: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
