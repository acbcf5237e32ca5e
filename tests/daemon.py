"""daemon.py: `lorad serve` under real mpirun ranks, driven by the real client commands.

Cases (--case):
  e2e      2 ranks. Three jobs on one base: the second is cancelled while it runs (it
           ends CANCELLED with a checkpoint), the first and third SUCCEED; the first's
           adapter and metrics equal a plain `mpirun lorad train` of the same flags; the
           third ran on the resident base (no reload: one base load in all). A job on
           garbage data FAILS with the error and the daemon runs the next job. logs and
           status answer; after a shutdown, a restarted daemon lists the same records.
  kill     kill -9 of the whole daemon (mpirun and ranks) while a job checkpoints every
           step; the restarted daemon queues it again, resumes it from its checkpoint,
           and it ends with the adapter bytes of an uninterrupted run.
  signal   SIGTERM to mpirun while a job runs: the job checkpoints, the daemon exits, and
           the record says QUEUED; the next daemon finishes the job.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_ref as ref  # noqa: E402

CFG = ref.GPT2Config(vocab_size=61, n_positions=32, n_embd=32, n_head=4, n_layer=2)
T, G = 16, 4
TIMING = {"tokens_per_s", "elapsed_s", "comm_s"}


class Daemon:
    """One `mpirun -np RANKS lorad serve` on a state directory, and its clients."""

    def __init__(self, lorad, state, ranks=2, extra=()):
        self.lorad, self.state = lorad, state
        self.sock = os.path.join(state, "lorad.sock")
        self.log = open(os.path.join(os.path.dirname(state), "serve.log"), "a")
        cmd = ["mpirun", "--oversubscribe", "-np", str(ranks), lorad, "serve", "--state", state] + list(extra)
        print("+ " + " ".join(cmd), flush=True)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, start_new_session=True,
                                     env=dict(os.environ, **ref.MPI_ENV))
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            if os.path.exists(self.sock) and self.client("status").returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the daemon did not come up (exit {self.proc.poll()})")

    def client(self, *args):
        cmd = [self.lorad] + [str(a) for a in args] + ["--socket", self.sock]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def json(self, *args):
        p = self.client(*args, "--json")
        if p.returncode != 0:
            raise RuntimeError(f"lorad {' '.join(map(str, args))} failed: {p.stderr.strip()}")
        return json.loads(p.stdout)

    def submit(self, flags):
        p = self.client("submit", *flags)
        if p.returncode != 0:
            raise RuntimeError(f"submit failed: {p.stderr.strip()}")
        return int(p.stdout.strip())

    def wait(self, job, pred, timeout=120):
        """Polls job's record until PRED holds; returns the record."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            rec = self.json("status", job)
            if pred(rec):
                return rec
            time.sleep(0.05)
        raise RuntimeError(f"job {job} never got there: {rec}")

    def end(self, timeout=60):
        """Waits for the daemon to exit; returns its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def kill9(self):
        """kill -9 of mpirun and every rank at once, as when the machine fails (the ranks
        sit in process groups of their own, and outlive mpirun alone)."""
        for pid in [self.proc.pid] + descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


ENDED = ("succeeded", "failed", "cancelled")


def descendants(pid):
    """Every process below PID, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def inputs(work, seed=1):
    rng = np.random.default_rng(seed)
    model = os.path.join(work, "model")
    ref.write_model_dir(model, CFG, ref.random_gpt2_weights(CFG, rng))
    data = os.path.join(work, "train.bin")
    ref.write_bin(data, rng.integers(0, CFG.vocab_size, 30 * T + 1))
    return model, data


def flags(model, data, steps, extra=()):
    return ["--model", model, "--data", data, "--steps", steps, "--batch", G, "--micro-batch", 2, "--seq", T,
            "--lr", 0.01, "--targets", "q,v", "--rank", 4, "--dropout", 0.1, "--seed", 3, "--threads", 1,
            "--log-every", 1] + list(extra)


def straight(fails, lorad, work, fl, name="straight"):
    """The same job by `mpirun -np 2 lorad train`: its output directory."""
    out = os.path.join(work, name)
    p = ref.run_lorad_mpi(lorad, 2, ["train"] + [str(a) for a in fl] + ["--out", out])
    fails.check(p.returncode == 0, f"lorad train exited {p.returncode}: {p.stderr[-400:]}")
    return out


def adapter(out):
    with open(os.path.join(out, "adapter", "adapter_model.safetensors"), "rb") as f:
        return f.read()


def rows(out):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in ref.read_metrics(os.path.join(out, "metrics.jsonl"))]


def case_e2e(fails, lorad, work):
    model, data = inputs(work)
    garbage = os.path.join(work, "garbage.bin")
    with open(garbage, "wb") as f:
        f.write(b"not a token file" * 8)
    state = os.path.join(work, "state")
    d = Daemon(lorad, state)
    try:
        j1 = d.submit(flags(model, data, 8))
        j2 = d.submit(flags(model, data, 100000, ["--ckpt-every", 50]))
        j3 = d.submit(flags(model, data, 6, ["--targets", "c_attn"]))
        j4 = d.submit(flags(model, garbage, 5))
        j5 = d.submit(flags(model, data, 3))
        fails.check([j1, j2, j3, j4, j5] == [1, 2, 3, 4, 5], f"job ids {[j1, j2, j3, j4, j5]}")
        queued = d.json("status", j3)
        fails.check(queued["state"] == "queued", f"job 3 while job 2 runs: {queued['state']}")
        d.wait(j2, lambda r: r["state"] == "running" and r["step"] >= 3)
        cancel = d.client("cancel", j2)
        fails.check(cancel.returncode == 0, f"cancel: {cancel.stderr.strip()}")
        recs = {j: d.wait(j, lambda r: r["state"] in ENDED) for j in (j1, j2, j3, j4, j5)}
        want = {j1: "succeeded", j2: "cancelled", j3: "succeeded", j4: "failed", j5: "succeeded"}
        for j, s in want.items():
            fails.check(recs[j]["state"] == s, f"job {j} ended {recs[j]['state']}, expected {s}: {recs[j]['error']}")
        fails.check("garbage.bin" in recs[j4]["error"], f"job 4's error does not name its data: {recs[j4]['error']!r}")
        out2 = recs[j2]["spec"]["out"]
        fails.check(os.path.exists(os.path.join(out2, "checkpoints", "latest")), "the cancelled job left no checkpoint")
        fails.check(not os.path.exists(os.path.join(out2, "adapter")), "the cancelled job wrote a final adapter")
        fails.check(recs[j2]["step"] < 100000, "the cancelled job ran to its end")
        logs = d.client("logs", j2)
        fails.check("stopped at step" in logs.stdout and "checkpoint" in logs.stdout,
                    f"logs of the cancelled job: {logs.stdout[-300:]!r}")
        logs4 = d.client("logs", j4)
        fails.check("garbage.bin" in logs4.stdout, f"the failed job's log lacks its error: {logs4.stdout!r}")
        # one base load served every job: job 1 loaded it, the others found it resident
        status = d.json("status")
        fails.check(status["base_loads"] == 1, f"base loads {status['base_loads']}, expected 1")
        for j in (j2, j3, j5):
            fails.check(recs[j]["base_reused"], f"job {j} reloaded the base model")
        fails.check(not recs[j1]["base_reused"], "job 1 claims a resident base before any was loaded")
        print(f"start latency: job 1 (loads the base) {recs[j1]['start_latency_s']:.4f} s, "
              f"job 3 (resident base) {recs[j3]['start_latency_s']:.4f} s", flush=True)
        out1 = recs[j1]["spec"]["out"]
        plain = straight(fails, lorad, work, flags(model, data, 8))
        fails.check(adapter(out1) == adapter(plain), "the daemon's adapter differs from lorad train's")
        fails.check(rows(out1) == rows(plain), "the daemon's metrics differ from lorad train's")
        before = d.json("list")
        fails.check(d.client("shutdown").returncode == 0, "shutdown failed")
        fails.check(d.end() == 0, "the daemon did not exit 0 after shutdown")
    finally:
        if d.proc.poll() is None:
            d.kill9()
    d = Daemon(lorad, state)
    try:
        after = d.json("list")
        fails.check(after == before, f"records after a restart differ:\n{before}\n{after}")
        fails.check(d.submit(flags(model, data, 2)) == 6, "ids did not continue after a restart")
        d.client("shutdown")
        fails.check(d.end() == 0, "the restarted daemon did not exit 0 after shutdown")
    finally:
        if d.proc.poll() is None:
            d.kill9()


def case_kill(fails, lorad, work):
    model, data = inputs(work)
    fl = flags(model, data, 150, ["--ckpt-every", 1, "--keep", 2])
    state = os.path.join(work, "state")
    d = Daemon(lorad, state)
    try:
        j = d.submit(fl)
        d.wait(j, lambda r: r["step"] >= 20)
    finally:
        d.kill9()
    d = Daemon(lorad, state)
    try:
        rec = d.wait(j, lambda r: r["state"] in ENDED, timeout=300)
        fails.check(rec["state"] == "succeeded", f"the resumed job ended {rec['state']}: {rec['error']}")
        fails.check(rec["attempts"] == 2, f"attempts {rec['attempts']}, expected 2")
        logs = d.client("logs", j).stdout
        fails.check("resuming from" in logs or "resuming" in open(os.path.join(work, "serve.log")).read(),
                    "the second attempt did not resume from a checkpoint")
        d.client("shutdown")
        d.end()
    finally:
        if d.proc.poll() is None:
            d.kill9()
    plain = straight(fails, lorad, work, fl)
    fails.check(adapter(rec["spec"]["out"]) == adapter(plain), "the resumed job's adapter differs from an uninterrupted run")


def case_signal(fails, lorad, work):
    model, data = inputs(work)
    fl = flags(model, data, 400, ["--ckpt-every", 100])
    state = os.path.join(work, "state")
    d = Daemon(lorad, state)
    try:
        j = d.submit(fl)
        d.wait(j, lambda r: r["step"] >= 5)
        os.kill(d.proc.pid, signal.SIGTERM)
        print(f"mpirun exited {d.end()} on SIGTERM", flush=True)
    finally:
        if d.proc.poll() is None:
            d.kill9()
    with open(os.path.join(state, "jobs", str(j), "train.log")) as f:
        log = f.read()
    fails.check("stopped at step" in log, f"the job did not stop with a checkpoint: {log[-300:]!r}")
    with open(os.path.join(work, "serve.log"), errors="replace") as f:
        fails.check("daemon stopped on SIGTERM" in f.read(), "the daemon did not say it stopped on SIGTERM")
    with open(os.path.join(state, "jobs", str(j), "job.pb"), "rb") as f:
        fails.check(f.read(), "no job record")
    d = Daemon(lorad, state)
    try:
        rec = d.wait(j, lambda r: r["state"] in ENDED, timeout=300)
        fails.check(rec["state"] == "succeeded" and rec["attempts"] == 2, f"after restart: {rec}")
        d.client("shutdown")
        d.end()
    finally:
        if d.proc.poll() is None:
            d.kill9()
    plain = straight(fails, lorad, work, fl)
    fails.check(adapter(rec["spec"]["out"]) == adapter(plain), "the stopped and resumed job's adapter differs")


if __name__ == "__main__":
    ref.run_driver("daemon", {"e2e": case_e2e, "kill": case_kill, "signal": case_signal})
