"""ckpt_resume.py: checkpoints, resume, preemption signals and crash safety.

Cases (--case):
  exact_llama        exact_1 and elastic 1 -> 2 ranks on a Llama-family model (GQA, biases)
  exact_1, exact_2   stop after k steps (LORAD_FAULT ...:stop raises SIGUSR1 in the step),
                     resume with --resume auto for the rest: every metrics row but timings
                     and the final adapter bytes equal an uninterrupted run (1 and 2 ranks)
  elastic            saved with 2 ranks, resumed on 1 and on 3: losses within 1e-5 relative
  refuse             another base model (fingerprint), another --rank, another --targets,
                     an added --rank-pattern or --alpha-pattern, an unreadable --resume PATH:
                     each a one-line error naming it; a run saved with patterns resumes
                     with the same ones only (others or none are refused, naming the flag)
  corrupt            newest checkpoint truncated, the next one with flipped bytes:
                     --resume auto falls back to the newest valid one and says so
  signals            SIGUSR1, SIGTERM and SIGINT to mpirun and SIGTERM to one rank of a
                     running 2-rank job: a checkpoint within 3 steps of the signal, a
                     non-zero exit (75 from the ranks), and the resumed run ends with the
                     uninterrupted run's adapter
  kill9              at least 20 kill -9 of the job at random moments (checkpointing every
                     step), each followed by --resume auto: every checkpoint present is valid
                     or reported invalid, and the final adapter equals an uninterrupted run's;
                     it prints how many kills it made and checkpoints it verified
The signals and kill9 cases pace the interrupted runs (LORAD_FAULT ...:slow:MS: every step
lasts at least MS) so that the signal or the kill finds the job running, however fast the
machine; pacing changes no number.
  cadence            --ckpt-every-seconds alone saves after every step when due, and
                     --keep 2 leaves the two newest files
  inspect_export     `lorad inspect` shows the layout, `lorad export` equals the run's own
                     adapter, and h5ls shows the groups
"""
import glob
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import torch_gpt2 as gpt2  # noqa: E402
import torch_llama  # noqa: E402

CFG = gpt2.GPT2Config(vocab_size=61, n_positions=32, n_embd=32, n_head=4, n_layer=2)
LLAMA = torch_llama.LlamaConfig(model_type="llama", vocab_size=61, hidden_size=32, intermediate_size=48,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                attention_bias=True, max_position_embeddings=32)
T, G = 16, 4
REQUEUE = 75


class Run:
    """Builds the inputs once and runs lorad on them, alone or under mpirun."""

    def __init__(self, lorad, work, seed=1, llama=False):
        self.lorad, self.work = lorad, work
        rng = np.random.default_rng(seed)
        self.model = os.path.join(work, "model")
        if llama:
            torch_llama.write_model_dir(self.model, LLAMA, torch_llama.random_llama_weights(LLAMA, rng))
        else:
            gpt2.write_model_dir(self.model, CFG, gpt2.random_gpt2_weights(CFG, rng))
        self.targets = "q_proj,v_proj,down_proj" if llama else "q,v,mlp.c_fc"
        self.data = os.path.join(work, "train.bin")
        h.write_bin(self.data, rng.integers(0, CFG.vocab_size, 30 * T + 1))

    def args(self, out, steps, extra=()):
        return ["train", "--model", self.model, "--data", self.data, "--out", out, "--steps", steps,
                "--batch", G, "--micro-batch", 2, "--seq", T, "--lr", 0.01, "--schedule", "cosine",
                "--warmup", 2, "--targets", self.targets, "--rank", 4, "--alpha", 8, "--dropout", 0.1,
                "--seed", 3, "--threads", 1, "--log-every", 1] + [str(a) for a in extra]

    def cmd(self, ranks, args):
        base = [self.lorad] + [str(a) for a in args]
        return base if ranks == 0 else ["mpirun", "--oversubscribe", "-np", str(ranks)] + base

    def env(self, ranks, extra=None):
        return h.mpi_env(extra) if ranks else dict(os.environ, **(extra or {}))

    def run(self, ranks, args, env=None, timeout=300):
        """RANKS = 0: one process without mpirun."""
        cmd = self.cmd(ranks, args)
        print("+ " + " ".join(cmd), flush=True)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(ranks, env))

    def popen(self, ranks, args, env=None):
        cmd = self.cmd(ranks, args)
        print("+ " + " ".join(cmd), flush=True)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(ranks, env), start_new_session=True)


def straight(fails, r, ranks, steps, extra=()):
    out = os.path.join(r.work, f"straight_{ranks}_{steps}")
    h.expect_ok(fails, r.run(ranks, r.args(out, steps, extra)), "the uninterrupted run")
    return out


def stop_then_resume(fails, r, ranks, steps, k, resume_ranks=None, name="split"):
    """Runs STEPS steps stopped after step K, then resumes on RESUME_RANKS ranks."""
    out = os.path.join(r.work, f"{name}_{ranks}")
    p = r.run(ranks, r.args(out, steps), env={"LORAD_FAULT": f"rank:0:step:{k}:stop"})
    fails.check(p.returncode == REQUEUE, f"the stopped run exited {p.returncode}, expected {REQUEUE}: {p.stderr[-400:]}")
    fails.check(f"stopped at step {k}" in p.stderr, "the stopped run did not say where it stopped")
    latest = os.path.join(out, "checkpoints", "latest")
    fails.check(os.path.realpath(latest).endswith(f"step-{k:08d}.h5"), f"latest does not point at step {k}")
    p = r.run(ranks if resume_ranks is None else resume_ranks, r.args(out, steps, ["--resume", "auto"]))
    h.expect_ok(fails, p, "the resumed run")
    fails.check("resuming from" in p.stderr and f"at step {k}" in p.stderr, "the resumed run did not say where it resumed")
    return out


def case_exact(fails, r, ranks):
    steps, k = 12, 5
    base = straight(fails, r, ranks, steps)
    out = stop_then_resume(fails, r, ranks, steps, k)
    a, b = h.metrics_rows(base), h.metrics_rows(out)
    fails.check(len(a) == steps and a == b, f"metrics differ after resume:\n{a}\n{b}")
    fails.check(h.adapter_bytes(base) == h.adapter_bytes(out), "final adapter bytes differ after resume")


def case_elastic(fails, r):
    steps, k = 10, 4
    base = h.metrics_rows(straight(fails, r, 2, steps))
    for n in (1, 3):
        out = stop_then_resume(fails, r, 2, steps, k, resume_ranks=n, name=f"elastic{n}")
        got = h.metrics_rows(out)
        worst = max(h.rel_err(x["loss"], y["loss"]) for x, y in zip(got, base))
        print(f"2 -> {n} ranks: worst loss rel err {worst:.2e}")
        fails.check(len(got) == steps and worst <= 1e-5, f"2 -> {n} ranks: losses differ by {worst:.2e}")


def one_line_error(fails, p, words, what):
    lines = [l for l in p.stderr.splitlines() if l.startswith("lorad: ") and "resuming" not in l]
    ok = p.returncode == 2 and lines and any(w in lines[-1] for w in words)
    fails.check(ok, f"{what}: expected exit 2 and an error naming {words}, got {p.returncode}: {p.stderr.strip()}")


def case_refuse(fails, r):
    out = os.path.join(r.work, "saved")
    h.expect_ok(fails, r.run(0, r.args(out, 3)), "the run that saves")
    other = Run(r.lorad, os.path.join(r.work, "other"), seed=2)
    p = r.run(0, ["train", "--model", other.model] + r.args(out, 6, ["--resume", "auto"])[3:])
    one_line_error(fails, p, ["base model", "fingerprint"], "another base model")
    p = r.run(0, r.args(out, 6, ["--resume", "auto", "--rank", 8]))
    one_line_error(fails, p, ["--rank"], "another rank")
    p = r.run(0, r.args(out, 6, ["--resume", "auto", "--targets", "c_attn"]))
    one_line_error(fails, p, ["--targets"], "other targets")
    p = r.run(0, r.args(out, 6, ["--resume", "auto", "--rank-pattern", "mlp.c_fc=2"]))
    one_line_error(fails, p, ["--rank-pattern"], "an added --rank-pattern")
    p = r.run(0, r.args(out, 6, ["--resume", "auto", "--alpha-pattern", "c_fc=4"]))
    one_line_error(fails, p, ["--alpha-pattern"], "an added --alpha-pattern")
    # saved with patterns: the same ones resume, others or none do not
    pat = ["--rank-pattern", "mlp.c_fc=2", "--alpha-pattern", "c_fc=4"]
    out_p = os.path.join(r.work, "saved_patterns")
    h.expect_ok(fails, r.run(0, r.args(out_p, 3, pat)), "the run with patterns that saves")
    p = r.run(0, r.args(out_p, 6, ["--resume", "auto"]))
    one_line_error(fails, p, ["--rank-pattern"], "a resume without the saved patterns")
    p = r.run(0, r.args(out_p, 6, ["--resume", "auto", "--rank-pattern", "mlp.c_fc=3", pat[2], pat[3]]))
    one_line_error(fails, p, ["--rank-pattern"], "a resume with another --rank-pattern")
    p = r.run(0, r.args(out_p, 6, ["--resume", "auto", pat[0], pat[1], "--alpha-pattern", "c_fc=5"]))
    one_line_error(fails, p, ["--alpha-pattern"], "a resume with another --alpha-pattern")
    p = r.run(0, r.args(out_p, 6, ["--resume", "auto"] + pat))
    if h.expect_ok(fails, p, "a resume with the saved patterns"):
        fails.check("at step 3" in p.stderr, f"the resume with the saved patterns did not resume at step 3: "
                    f"{p.stderr[-400:]}")
    bogus = os.path.join(r.work, "bogus.h5")
    with open(bogus, "wb") as f:
        f.write(b"not a checkpoint")
    p = r.run(0, r.args(out, 6, ["--resume", bogus]))
    one_line_error(fails, p, ["bogus.h5"], "an unreadable checkpoint")
    p = r.run(0, r.args(out, 6, ["--resume", "auto", "--lr", 0.02, "--threads", 2, "--ckpt-every", 2]))
    h.expect_ok(fails, p, "a resume that changes only safe flags")


def case_corrupt(fails, r):
    out = os.path.join(r.work, "c")
    h.expect_ok(fails, r.run(0, r.args(out, 6, ["--ckpt-every", 2, "--keep", 0])), "the run that saves")
    files = sorted(glob.glob(os.path.join(out, "checkpoints", "step-*.h5")))
    fails.check(len(files) == 3, f"expected checkpoints at steps 2, 4, 6, found {files}")
    newest, middle = files[-1], files[-2]
    os.truncate(newest, os.path.getsize(newest) // 2)
    with open(middle, "r+b") as f:  # flip bytes in the data of the middle checkpoint
        data = bytearray(f.read())
        for at in range(len(data) // 3, len(data) // 3 + 64 * 40, 40):
            data[at] ^= 0xFF
        f.seek(0)
        f.write(data)
    p = r.run(0, r.args(out, 8, ["--resume", "auto"]))
    h.expect_ok(fails, p, "--resume auto past corrupt checkpoints")
    fails.check("skipping invalid checkpoint" in p.stderr, "no message about the invalid checkpoints")
    fails.check("step-00000002.h5 at step 2" in p.stderr, f"did not resume from step 2: {p.stderr[-500:]}")
    p = r.run(0, r.args(os.path.join(r.work, "d"), 8, ["--resume", newest]))
    one_line_error(fails, p, [os.path.basename(newest)], "--resume PATH of a truncated checkpoint")


def paced(ms):
    """LORAD_FAULT for a run whose every step lasts at least MS milliseconds."""
    return {"LORAD_FAULT": f"rank:0:step:1:slow:{ms}"}


def wait_for_step(out, step, proc, timeout=60):
    """Waits until OUT's metrics show STEP steps; the steps then done, or 0 if PROC ended."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        done = h.steps_logged(out)
        if done >= step:
            return done
        time.sleep(0.02)
    return 0


def latest_step(out):
    """The step of the checkpoint OUT/checkpoints/latest names, or None."""
    link = os.path.join(out, "checkpoints", "latest")
    name = os.path.basename(os.readlink(link)) if os.path.islink(link) else ""
    return int(name[5:13]) if name.startswith("step-") else None


def case_signals(fails, r):
    steps, pace_ms = 400, 100
    base = straight(fails, r, 2, steps)
    for how in ("usr1_mpirun", "term_mpirun", "int_mpirun", "term_rank"):
        out = os.path.join(r.work, how)
        proc = r.popen(2, r.args(out, steps), env=paced(pace_ms))
        at = wait_for_step(out, 3, proc)
        if not fails.check(at, f"{how}: the job did not start"):
            proc.kill()
            continue
        if how.endswith("_mpirun"):
            os.kill(proc.pid, {"usr1": signal.SIGUSR1, "term": signal.SIGTERM, "int": signal.SIGINT}[how.split("_")[0]])
        else:
            ranks = subprocess.run(["pgrep", "-f", "-s", str(os.getpgid(proc.pid)), "lorad train"],
                                   capture_output=True, text=True).stdout.split()
            ranks = [int(x) for x in ranks if int(x) != proc.pid]
            fails.check(len(ranks) == 2, f"expected 2 rank processes, found {ranks}")
            os.kill(max(ranks), signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        print(err.strip()[-800:], flush=True)
        fails.check(proc.returncode != 0, f"{how}: mpirun exited 0 after a stop")
        # mpirun given TERM or INT may drop the ranks' last lines: the stop message is
        # checked where mpirun passes it on, the checkpoint (--ckpt-every is longer than
        # the run, so the stop wrote the only one) everywhere
        fails.check(how in ("term_mpirun", "int_mpirun") or "lorad: stopped at step" in err, f"{how}: no stop message")
        stop = latest_step(out)
        # each step lasts at least pace_ms: 3 steps are 0.3 s for the signal to arrive
        fails.check(stop is not None and at <= stop <= at + 3,
                    f"{how}: the stop checkpoint is at step {stop}, the signal came after step {at}")
        p = r.run(2, r.args(out, steps, ["--resume", "auto"]))
        h.expect_ok(fails, p, f"{how}: the resumed run")
        fails.check(h.adapter_bytes(out) == h.adapter_bytes(base), f"{how}: final adapter differs from the uninterrupted run")


def case_kill9(fails, r, kills_wanted=20):
    # Paced at 10 ms a step, a run killed within 0.6 s gets at most 60 steps further: the
    # 20 runs cannot finish the 2500 steps, however fast the machine.
    steps, pace_ms = 2500, 10
    base = straight(fails, r, 0, steps, ["--ckpt-every", 1, "--keep", 2])
    out = os.path.join(r.work, "k")
    rng = random.Random(9)
    kills = valid = invalid = 0
    while kills < kills_wanted:
        proc = r.popen(0, r.args(out, steps, ["--resume", "auto", "--ckpt-every", 1, "--keep", 2]), env=paced(pace_ms))
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is not None:
            fails.check(False, f"the run ended before kill {kills + 1}: {proc.communicate()[1][-400:]}")
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for f in glob.glob(os.path.join(out, "checkpoints", "*")):
            # a half-written temporary file makes libhdf5 itself leak 56 bytes as it fails to
            # open it (not lorad's allocation): LeakSanitizer stays off, ASan's checks on
            p = subprocess.run([r.lorad, "inspect", f], capture_output=True, text=True,
                               env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
            fails.check(p.returncode in (0, 2) and "AddressSanitizer" not in p.stderr,
                        f"inspect {f} after kill -9 exited {p.returncode}: {p.stderr.strip()}")
            if not os.path.islink(f):  # latest names one of the files
                valid += p.returncode == 0
                invalid += p.returncode == 2
    print(f"{kills} kill -9s at random moments; {valid} checkpoints verified valid, "
          f"{invalid} reported invalid (half-written temporaries)", flush=True)
    fails.check(kills >= kills_wanted, f"only {kills} kills")
    p = r.run(0, r.args(out, steps, ["--resume", "auto", "--ckpt-every", 1, "--keep", 2]))
    h.expect_ok(fails, p, "the final resume")
    fails.check(h.adapter_bytes(out) == h.adapter_bytes(base), "the adapter after kill -9s differs from the uninterrupted run")
    fails.check(h.metrics_rows(out) == h.metrics_rows(base), "metrics after kill -9s differ from the uninterrupted run")


def case_cadence(fails, r):
    out = os.path.join(r.work, "cad")
    p = r.run(0, r.args(out, 5, ["--ckpt-every", 0, "--ckpt-every-seconds", 1e-9, "--keep", 2]))
    h.expect_ok(fails, p, "the run")
    fails.check(p.stderr.count("lorad: checkpoint ") == 5, f"expected 5 checkpoints:\n{p.stderr}")
    names = sorted(os.path.basename(f) for f in glob.glob(os.path.join(out, "checkpoints", "step-*.h5")))
    fails.check(names == ["step-00000004.h5", "step-00000005.h5"], f"--keep 2 left {names}")


def case_inspect_export(fails, r):
    out = os.path.join(r.work, "ie")
    h.expect_ok(fails, r.run(0, r.args(out, 4)), "the run")
    ckpt = os.path.join(out, "checkpoints", "latest")
    p = subprocess.run([r.lorad, "inspect", ckpt], capture_output=True, text=True)
    h.expect_ok(fails, p, "inspect")
    for want in ("step         4", "world size   1", "lora_A.weight", "[8, 32]", '"targets"'):
        fails.check(want in p.stdout, f"inspect does not show {want!r}:\n{p.stdout}")
    exp = os.path.join(r.work, "exported")
    p = subprocess.run([r.lorad, "export", ckpt, "--out", exp], capture_output=True, text=True)
    h.expect_ok(fails, p, "export")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        with open(os.path.join(exp, name), "rb") as a, open(os.path.join(out, "adapter", name), "rb") as b:
            fails.check(a.read() == b.read(), f"exported {name} differs from the run's own")
    p = subprocess.run(["h5ls", "-r", ckpt], capture_output=True, text=True)
    for group in ("/adapter", "/optimizer/m", "/optimizer/v", "/rng", "/data", "/job/spec", "/job/json"):
        fails.check(group in p.stdout, f"h5ls does not show {group}:\n{p.stdout}")


def case_exact_llama(fails, r):
    case_exact(fails, r, 0)  # bit-identical resume in one process
    steps, k = 10, 4
    base = h.metrics_rows(straight(fails, r, 0, steps))
    got = h.metrics_rows(stop_then_resume(fails, r, 0, steps, k, resume_ranks=2, name="elastic_llama"))
    worst = max(h.rel_err(x["loss"], y["loss"]) for x, y in zip(got, base))
    print(f"llama 1 -> 2 ranks: worst loss rel err {worst:.2e}")
    fails.check(len(got) == steps and worst <= 1e-5, f"llama 1 -> 2 ranks: losses differ by {worst:.2e}")


def on_inputs(case, *args):
    """CASE(fails, r, *ARGS) as a driver case, r running lorad on inputs built in the work directory."""
    return lambda fails, lorad, work: case(fails, Run(lorad, work), *args)


CASES = {
    "exact_1": on_inputs(case_exact, 0),
    "exact_2": on_inputs(case_exact, 2),
    "exact_llama": lambda fails, lorad, work: case_exact_llama(fails, Run(lorad, work, llama=True)),
    "elastic": on_inputs(case_elastic),
    "refuse": on_inputs(case_refuse),
    "corrupt": on_inputs(case_corrupt),
    "signals": on_inputs(case_signals),
    "kill9": on_inputs(case_kill9),
    "cadence": on_inputs(case_cadence),
    "inspect_export": on_inputs(case_inspect_export),
}


if __name__ == "__main__":
    h.run_driver("ckpt_resume", CASES)
