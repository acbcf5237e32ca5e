"""rundir.py: an output directory is never clobbered (issue #13).

Real binary, real files. Every refusal must exit 2 with one stderr line naming --out and
the flags that decide, and leave the directory exactly as it was: the same entries, the
same bytes (sha256), the same symlink targets, no new file. --overwrite must remove the
old run's files, and only lorad's (a user's files there stay), before the new run
writes: the result equals a run into a new directory.
Cases:
  mixed        the issue's case: --steps 6 --ckpt-every 3, then --steps 2 --keep 1 without
               --resume is refused; with --overwrite the directory holds the new run only
  resume_auto  --resume auto: continues from a checkpoint; starts afresh over an interrupted
               run's logs; refuses a finished adapter without a checkpoint; --overwrite
               with --resume PATH is refused; a directory of user files only is used
  merge        merge refuses a merged model; --overwrite replaces shards by one file
  export       export refuses an export; --overwrite writes the other checkpoint's
  prep         prep refuses an existing file; --overwrite replaces it
  daemon       lorad serve: a job directory holding an unrecorded run refuses the submit,
               --overwrite removes it and the job runs fresh
Usage: rundir.py --lorad PATH --workdir DIR --case NAME
"""

import hashlib
import os
import shutil
import sys
from typing import Dict, List

import numpy as np

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import errors  # noqa: E402
import harness as h  # noqa: E402

CFG = errors.CFG
T = 8


def snapshot(d: str) -> Dict[str, str]:
    """Relative path -> 'dir', 'link:TARGET' or 'file:SHA256' for everything under D."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, d)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                with open(p, "rb") as f:
                    out[rel] = "file:" + hashlib.sha256(f.read()).hexdigest()
    return out


class Run:
    def __init__(self, lorad: str, work: str):
        self.lorad, self.work = lorad, work
        errors.LORAD = lorad
        self.inp = errors.Inputs(work)

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    def train_args(self, out: str, steps: int, *extra) -> List[str]:
        return [str(a) for a in ["train", "--model", self.inp.model, "--data", self.inp.data, "--out", out,
                                 "--steps", steps, "--batch", 2, "--seq", T, "--threads", 1, "--targets", "c_attn",
                                 "--rank", 2, "--lr", 1e-2, "--schedule", "constant", "--shuffle", "off",
                                 "--log-every", 1] + list(extra)]

    def lorad_ok(self, fails: h.Failures, args: List[str], what: str) -> bool:
        p = h.run_lorad(self.lorad, args)
        return fails.check(p.returncode == 0, f"{what}: exit {p.returncode}: {p.stderr.strip()[:800]}")

    def refused(self, fails: h.Failures, args: List[str], d: str, names: List[str], what: str) -> None:
        """ARGS fail as a user error naming NAMES and leave D as it was."""
        before = snapshot(d)
        p = h.run_lorad(self.lorad, args)
        errors.judge(fails, self.work, errors.Case(what, args, names, None), p)
        after = snapshot(d)
        if before != after:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            fails.add(f"{what}: the refusal changed {d}: {changed}")


def user_files(d: str) -> Dict[str, bytes]:
    """Files a user keeps beside a run (in OUT and in lorad's own subdirectories)."""
    files = {"notes.txt": b"my notes\n", "checkpoints/README": b"mine\n", "adapter/eval.json": b"{}\n"}
    for rel, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
        with open(os.path.join(d, rel), "wb") as f:
            f.write(data)
    return files


def check_user_files(fails: h.Failures, d: str, files: Dict[str, bytes], what: str) -> None:
    for rel, data in files.items():
        p = os.path.join(d, rel)
        fails.check(os.path.isfile(p) and h.file_bytes(p) == data, f"{what}: the user's {rel} did not survive")


def steps_of(d: str) -> List[int]:
    return [r["step"] for r in h.read_metrics(os.path.join(d, "metrics.jsonl"))]


def case_mixed(fails: h.Failures, lorad: str, work: str) -> None:
    r = Run(lorad, work)
    run, fresh = r.path("run"), r.path("fresh")
    if not r.lorad_ok(fails, r.train_args(run, 6, "--ckpt-every", 3, "--keep", 0), "the first run"):
        return
    mine = user_files(run)
    second = r.train_args(run, 2, "--keep", 1)
    r.refused(fails, second, run, ["--out", "--resume", "--overwrite"], "a second run without --resume")
    if not r.lorad_ok(fails, second + ["--overwrite"], "the second run with --overwrite"):
        return
    r.lorad_ok(fails, r.train_args(fresh, 2, "--keep", 1), "the same run into a new directory")
    fails.check(steps_of(run) == [1, 2], f"metrics steps {steps_of(run)}, want [1, 2]")
    ckpts = sorted(os.listdir(os.path.join(run, "checkpoints")))
    fails.check(ckpts == ["README", "latest", "step-00000002.h5"], f"checkpoints/ holds {ckpts}")
    fails.check(os.readlink(os.path.join(run, "checkpoints", "latest")) == "step-00000002.h5", "latest's target")
    ad = os.path.join("adapter", "adapter_model.safetensors")
    fails.check(h.file_bytes(os.path.join(run, ad)) == h.file_bytes(os.path.join(fresh, ad)),
                "the overwritten run's adapter differs from a fresh run's")
    check_user_files(fails, run, mine, "--overwrite")
    want = set(snapshot(fresh)) | {"notes.txt", "checkpoints/README", "adapter/eval.json"}
    fails.check(set(snapshot(run)) == want, f"entries {sorted(snapshot(run))}, want {sorted(want)}")


def case_resume_auto(fails: h.Failures, lorad: str, work: str) -> None:
    r = Run(lorad, work)
    run = r.path("run")
    if not r.lorad_ok(fails, r.train_args(run, 2, "--ckpt-every", 1), "the first run"):
        return
    # a checkpoint: continued, the earlier rows kept
    if r.lorad_ok(fails, r.train_args(run, 3, "--resume", "auto"), "--resume auto with a checkpoint"):
        fails.check(steps_of(run) == [1, 2, 3], f"after the resume, steps {steps_of(run)}")
    ckpt = os.path.join(run, "checkpoints", "step-00000002.h5")
    r.refused(fails, r.train_args(run, 3, "--resume", ckpt, "--overwrite"), run, ["--overwrite", "--resume"],
              "--overwrite with --resume PATH")
    # a finished run's adapter without a checkpoint: refused, also with --resume auto
    finished = r.path("finished")
    shutil.copytree(run, finished, symlinks=True)
    shutil.rmtree(os.path.join(finished, "checkpoints"))
    r.refused(fails, r.train_args(finished, 2, "--resume", "auto"), finished, ["--out", "--overwrite"],
              "--resume auto over a finished adapter without a checkpoint")
    # an interrupted run's logs only (stopped before its first checkpoint): started afresh
    stopped = r.path("stopped")
    os.makedirs(stopped)
    for name in ("metrics.jsonl", "train.log"):
        shutil.copy(os.path.join(run, name), stopped)
    mine = user_files(stopped)
    if r.lorad_ok(fails, r.train_args(stopped, 2, "--resume", "auto"), "--resume auto over logs only"):
        fails.check(steps_of(stopped) == [1, 2], f"after starting afresh, steps {steps_of(stopped)}")
        check_user_files(fails, stopped, mine, "--resume auto over logs only")
    # user files only: not a run, used as it is
    own = r.path("own")
    mine = user_files(own)
    if r.lorad_ok(fails, r.train_args(own, 1), "a directory of user files only"):
        check_user_files(fails, own, mine, "a directory of user files only")


def case_merge(fails: h.Failures, lorad: str, work: str) -> None:
    r = Run(lorad, work)
    ad, out = r.inp.adapter(), r.path("merged")
    base = ["merge", "--model", r.inp.model, "--adapter", ad, "--out", out]
    if not r.lorad_ok(fails, base + ["--max-shard-mb", "0.005"], "the sharded merge"):
        return
    shards = [n for n in os.listdir(out) if n.startswith("model-")]
    fails.check(len(shards) > 1, f"the sharded merge wrote {sorted(os.listdir(out))}")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("my model card\n")
    r.refused(fails, base, out, ["--out", "--overwrite"], "a second merge")
    single = r.path("single")
    if r.lorad_ok(fails, base + ["--overwrite"], "merge --overwrite") and \
            r.lorad_ok(fails, ["merge", "--model", r.inp.model, "--adapter", ad, "--out", single], "a fresh merge"):
        fails.check(sorted(os.listdir(out)) == sorted(os.listdir(single) + ["README.md"]),
                    f"after --overwrite {sorted(os.listdir(out))}, a fresh merge {sorted(os.listdir(single))}")
        for name in os.listdir(single):
            fails.check(h.file_bytes(os.path.join(out, name)) == h.file_bytes(os.path.join(single, name)),
                        f"{name} differs from a fresh merge's")


def case_export(fails: h.Failures, lorad: str, work: str) -> None:
    r = Run(lorad, work)
    run = r.path("run")
    if not r.lorad_ok(fails, r.train_args(run, 2, "--ckpt-every", 1, "--keep", 0), "the run"):
        return
    ck = [os.path.join(run, "checkpoints", f"step-0000000{s}.h5") for s in (1, 2)]
    out, fresh = r.path("exported"), r.path("fresh")
    if not r.lorad_ok(fails, ["export", ck[0], "--out", out], "the first export"):
        return
    r.refused(fails, ["export", ck[1], "--out", out], out, ["--out", "--overwrite"], "a second export")
    if r.lorad_ok(fails, ["export", ck[1], "--out", out, "--overwrite"], "export --overwrite") and \
            r.lorad_ok(fails, ["export", ck[1], "--out", fresh], "a fresh export"):
        fails.check(snapshot(out) == snapshot(fresh), "export --overwrite differs from a fresh export")


def case_prep(fails: h.Failures, lorad: str, work: str) -> None:
    r = Run(lorad, work)
    out = r.path("d.h5")
    if not r.lorad_ok(fails, ["prep", "--text", r.inp.text, "--out", out], "the first prep"):
        return
    other = r.path("other.txt")
    with open(other, "w") as f:
        f.write("other text, longer than the first\n")
    r.refused(fails, ["prep", "--text", other, "--out", out], r.work, ["--out", "--overwrite"], "a second prep")
    fresh = r.path("fresh.h5")
    if r.lorad_ok(fails, ["prep", "--text", other, "--out", out, "--overwrite"], "prep --overwrite") and \
            r.lorad_ok(fails, ["prep", "--text", other, "--out", fresh], "a fresh prep"):
        import h5py
        with h5py.File(out, "r") as a, h5py.File(fresh, "r") as b:
            fails.check(np.array_equal(a["tokens"][:], b["tokens"][:]), "prep --overwrite holds other tokens")


def case_daemon(fails: h.Failures, lorad: str, work: str) -> None:
    r = Run(lorad, work)
    old = r.path("old")
    if not r.lorad_ok(fails, r.train_args(old, 3), "the run whose files the daemon finds"):
        return
    # jobs/1 holds a run but its job.pb is damaged: the daemon has no record of job 1
    job_dir = os.path.join(work, "state", "jobs", "1")
    shutil.copytree(old, job_dir, symlinks=True)
    with open(os.path.join(job_dir, "job.pb"), "wb") as f:
        f.write(b"not a job record")
    mine = user_files(job_dir)
    d = errors.Daemon(work)
    try:
        submit = ["submit", "--model", r.inp.model, "--data", r.inp.data, "--steps", 2, "--batch", 2, "--seq", T,
                  "--threads", 1, "--targets", "c_attn", "--rank", 2, "--socket", d.sock]
        r.refused(fails, [str(a) for a in submit], job_dir, ["--out", "--overwrite"], "a submit into a used job dir")
        p = d.client(*submit[:-2], "--overwrite")
        if fails.check(p.returncode == 0, f"submit --overwrite: {p.stderr.strip()}"):
            job = p.stdout.strip()
            rec = d.wait(job)
            fails.check(job == "1" and str(rec.get("state")).lower() == "succeeded", f"job {job}: {rec}")
            fails.check(steps_of(job_dir) == [1, 2], f"the job's metrics steps {steps_of(job_dir)}")
            ckpts = sorted(os.listdir(os.path.join(job_dir, "checkpoints")))
            fails.check(ckpts == ["README", "latest", "step-00000002.h5"], f"the job's checkpoints/ {ckpts}")
            check_user_files(fails, job_dir, mine, "submit --overwrite")
    finally:
        d.stop()


if __name__ == "__main__":
    h.run_driver("rundir", {"mixed": case_mixed, "resume_auto": case_resume_auto, "merge": case_merge,
                            "export": case_export, "prep": case_prep, "daemon": case_daemon})
