"""run.py: lorad's benchmark, in one run (bench/README.md says what each number means).

    /usr/bin/python3 bench/run.py [--smoke] [--lorad build/lorad] [--sgemm build/bench/sgemm_peak]
                                  [--workdir DIR] [--results FILE] [--no-profile]

Side by side, one after the other (never two at once: the machine's cores are the
subject): OpenBLAS sgemm at the model's shapes (the peak MFU is measured against); lorad's
LoRA step; the same step in PyTorch; lorad --mode full; lorad on 2 ranks (the all-reduce's
share of the step); checkpoint save, checkpoint load and model load; peak RSS of each
process (os.wait4); optionally a perf profile of lorad's LoRA step. It prints a table and
writes it to bench/RESULTS.md (with --smoke: a tiny model, every part in a few seconds,
the table written under the work directory, and a non-zero exit if any part produced no
number; timings are never asserted).

The parent stays small on purpose (no numpy, no torch here): a child's ru_maxrss starts at
its parent's resident size, so a big parent would inflate every RSS measured.
"""
import argparse
import array
import datetime
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIGS = {
    # GPT-2 124M's shape; the measured steps are few because a PyTorch step takes seconds.
    "full": dict(layers=12, dim=768, heads=12, vocab=50257, positions=1024, batch=4, seq=256, rank=8, alpha=8.0,
                 targets="q,v", threads=2, warmup=1, lora_steps=5, full_steps=3, torch_steps=3, mpi_steps=3,
                 sgemm_min_time=0.5),
    "smoke": dict(layers=2, dim=64, heads=2, vocab=256, positions=64, batch=2, seq=32, rank=8, alpha=8.0,
                  targets="q,v", threads=2, warmup=1, lora_steps=2, full_steps=1, torch_steps=1, mpi_steps=1,
                  sgemm_min_time=0.005),
}

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- processes

def cpu_busy_s():
    """Seconds of CPU time the whole machine has spent busy since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    guest = sum(v[8:10]) if len(v) > 9 else 0  # already counted in user and nice
    return (sum(v) - idle - guest) / os.sysconf("SC_CLK_TCK")


def wait_idle(max_wait_s, threshold=0.10):
    """Waits (up to MAX_WAIT_S) until other processes use under THRESHOLD of the
    machine's cores over a 2 s sample: the benchmark needs the cores to itself."""
    cores, waited = os.cpu_count() or 1, 0.0
    while True:
        b0, t0 = cpu_busy_s(), time.monotonic()
        time.sleep(2.0)
        frac = (cpu_busy_s() - b0) / ((time.monotonic() - t0) * cores)
        if not math.isfinite(frac) or frac < threshold:
            return
        if waited >= max_wait_s:
            log(f"the machine stays busy ({100 * frac:.0f} % of its cores used by others); measuring anyway")
            return
        if waited == 0:
            log(f"waiting for the machine to be idle ({100 * frac:.0f} % of its cores busy with other work)")
        waited += 2.0


class Run:
    """One finished child: exit code, wall time, peak RSS (MiB, from wait4), its stderr
    lines with the monotonic time each arrived, and the share of the machine's cores that
    other processes used meanwhile (busy CPU from /proc/stat minus the child's own)."""

    def __init__(self, cmd, rc, t0, t1, usage, busy_s, lines, stdout):
        self.cmd, self.rc, self.t0, self.wall_s = cmd, rc, t0, t1 - t0
        self.rss_mib = usage.ru_maxrss / 1024.0
        self.lines, self.stdout = lines, stdout
        own = usage.ru_utime + usage.ru_stime
        self.other_cpu = max(0.0, (busy_s - own) / (self.wall_s * (os.cpu_count() or 1)))

    def first(self, pattern):
        """Seconds from spawn to the first stderr line matching PATTERN (None if none)."""
        for t, line in self.lines:
            if re.search(pattern, line):
                return t - self.t0
        return None


def run(cmd, env=None, check=True, quiet=False):
    cmd = [str(c) for c in cmd]
    if not quiet:
        log("+ " + " ".join(cmd))
    lines, out = [], []
    b0 = cpu_busy_s()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, **(env or {})))

    def read_err():
        for raw in iter(proc.stderr.readline, b""):
            lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    def read_out():
        out.append(proc.stdout.read().decode(errors="replace"))

    readers = [threading.Thread(target=read_err), threading.Thread(target=read_out)]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    t1 = time.monotonic()
    busy = cpu_busy_s() - b0
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    res = Run(cmd, proc.returncode, t0, t1, usage, busy, lines, "".join(out))
    if check and res.rc != 0:
        tail = "\n".join(line for _, line in lines[-8:])
        raise BenchError(f"{os.path.basename(cmd[0])} exited {res.rc}:\n{tail}")
    return res


def evict_page_cache(path):
    """Drops PATH's pages from the page cache (no root needed), so the next reader reads
    the disk: a cold start."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- inputs

def model_dir(work, c, lorad):
    """lorad init-model's random GPT-2 of the config's shape, made once and reused."""
    d = os.path.join(work, "model-L{layers}-d{dim}-h{heads}-v{vocab}-p{positions}".format(**c))
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        run([lorad, "init-model", "--out", tmp, "--layers", c["layers"], "--dim", c["dim"], "--heads", c["heads"],
             "--vocab", c["vocab"], "--positions", c["positions"]])
        os.replace(tmp, d)
    return d


def data_file(work, c):
    """Random tokens in an llm.c .bin (uint16), enough for every run's steps."""
    steps = c["warmup"] + max(c["lora_steps"], c["full_steps"], c["torch_steps"], c["mpi_steps"]) + 4
    n = max(c["batch"] * c["seq"] * steps + 1, 65536)
    path = os.path.join(work, f"tokens-v{c['vocab']}-n{n}.bin")
    if not os.path.exists(path):
        rng = random.Random(1234)
        tokens = array.array("H", (rng.randrange(c["vocab"]) for _ in range(n)))
        header = array.array("i", [0] * 256)
        header[0], header[1], header[2] = 20240520, 1, n
        with open(path + ".tmp", "wb") as f:
            f.write(header.tobytes() + tokens.tobytes())
        os.replace(path + ".tmp", path)
    return path


# ---------------------------------------------------------------------------- FLOPs

def model_counts(c):
    C, L, V, F = c["dim"], c["layers"], c["vocab"], 4 * c["dim"]
    n_ad = len([t for t in c["targets"].split(",") if t in ("q", "k", "v")])
    matmul = L * (3 * C * C + C * C + 2 * C * F) + V * C
    params = V * C + c["positions"] * C + L * (3 * C * C + 3 * C + C * C + C + 2 * C * F + F + C + 4 * C) + 2 * C
    lora = L * n_ad * c["rank"] * (C + C)
    return dict(matmul_params=matmul, params=params, lora_params=lora, adapters=L * n_ad)


def step_flops(c):
    """Model FLOPs of one training step (bench/README.md, "FLOPs"): products only."""
    N, B, T, C, L = c["batch"] * c["seq"], c["batch"], c["seq"], c["dim"], c["layers"]
    k = model_counts(c)
    mm_fwd = 2.0 * N * k["matmul_params"]
    attn_fwd = 2.0 * L * B * T * (T + 1) * C  # causal: Q.K^T and att.V over t2 <= t
    lora_fwd = 2.0 * N * k["lora_params"]
    lora = mm_fwd + attn_fwd + lora_fwd + (mm_fwd + 2 * attn_fwd + 2 * lora_fwd)
    full = mm_fwd + attn_fwd + (2 * mm_fwd + 2 * attn_fwd)
    return dict(forward=mm_fwd + attn_fwd + lora_fwd, lora=lora, full=full)


def gemm_time_estimate(c, rates):
    """Seconds the step's sgemm calls take at sgemm_peak's measured (mean) rate of each
    shape: the step's time if everything but the products were free."""
    C, F, V, L, N, r = c["dim"], 4 * c["dim"], c["vocab"], c["layers"], c["batch"] * c["seq"], c["rank"]
    k = model_counts(c)

    def t(name, m, n, kk):
        return 2.0 * m * n * kk / (rates[name] * 1e9)

    fwd = L * (t("fwd c_attn", N, 3 * C, C) + t("fwd attn.c_proj", N, C, C) + t("fwd mlp.c_fc", N, F, C)
               + t("fwd mlp.c_proj", N, C, F)) + t("fwd lm_head", N, V, C)
    dx = L * (t("dx c_attn", N, C, 3 * C) + t("dx attn.c_proj", N, C, C) + t("dx mlp.c_fc", N, C, F)
              + t("dx mlp.c_proj", N, F, C)) + t("dx lm_head", N, C, V)
    dw = L * (t("dw c_attn (full)", C, 3 * C, N) + t("dw attn.c_proj (full)", C, C, N)
              + t("dw mlp.c_fc (full)", C, F, N) + t("dw mlp.c_proj (full)", F, C, N)) + t("dw lm_head (full)", V, C, N)
    # per adapter: 2 thin products forward, 4 backward
    thin = k["adapters"] * (3 * t("lora x.A^T", N, r, C) + 3 * t("lora u.B^T", N, C, r))
    return dict(lora=fwd + dx + thin, full=fwd + dx + dw)


# ---------------------------------------------------------------------------- parts

def part_machine(args):
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 ** 2:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def git(*a):
        p = subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # the harness itself (bench/) is not what is measured
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench"):
        commit += " (with uncommitted changes outside bench/)"
    return dict(cpu=cpu, cores=os.cpu_count(), mem=mem, kernel=platform.release(), commit=commit,
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def part_sgemm(args, c, model=None, data=None):
    res = run([args.sgemm, "--threads", c["threads"], "--tokens", c["batch"] * c["seq"], "--dim", c["dim"],
               "--vocab", c["vocab"], "--rank", c["rank"], "--min-time", c["sgemm_min_time"]])
    shapes = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    blas = next((line for _, line in res.lines if "OpenBLAS" in line), "")
    big = [s for s in shapes if not s["name"].startswith("lora")]
    return dict(shapes=shapes, peak=max(s["gflops_best"] for s in big), blas=blas.replace("sgemm_peak: ", ""),
                other_cpu=res.other_cpu, rates={s["name"]: s["gflops_mean"] for s in shapes})


def train_args(c, model, data, out, steps, threads):
    return ["train", "--model", model, "--data", data, "--out", out, "--targets", c["targets"], "--rank", c["rank"],
            "--alpha", c["alpha"], "--steps", steps, "--batch", c["batch"], "--seq", c["seq"], "--threads", threads,
            "--log-every", 1, "--shuffle", "off"]


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        r["step_s"] = r["tokens"] / r["tokens_per_s"] if r["tokens_per_s"] else float("nan")
    return rows


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def step_stats(rows, warmup, tokens):
    meas = [r for r in rows if r["step"] > warmup]
    st = mean(r["step_s"] for r in meas)
    return dict(step_s=st, step_min=min(r["step_s"] for r in meas), step_max=max(r["step_s"] for r in meas),
                tokens_per_s=tokens / st, n=len(meas), loss1=rows[0]["loss"])


def ckpt_saves(res):
    """Seconds between each 'step k' stderr line and the 'checkpoint' line that follows."""
    saves, last_step = [], None
    for t, line in res.lines:
        if re.match(r"step \d+/", line):
            last_step = t
        elif "lorad: checkpoint " in line and last_step is not None:
            saves.append(t - last_step)
            last_step = None
    return saves


def file_mb(path):
    return os.path.getsize(os.path.realpath(path)) / 1e6


def part_lora(args, c, model, data):
    """LoRA steps with a checkpoint after each; one more step resumed from the last of
    them; `lorad inspect` of it; then one step with the model file cold in the page cache."""
    out = os.path.join(args.workdir, "out-lora")
    shutil.rmtree(out, ignore_errors=True)
    steps = c["warmup"] + c["lora_steps"]
    res = run([args.lorad] + train_args(c, model, data, out, steps, c["threads"]) + ["--ckpt-every", 1])
    rows = read_metrics(out)
    r = step_stats(rows, c["warmup"], c["batch"] * c["seq"])
    saves = ckpt_saves(res)
    ckpt = os.path.join(out, "checkpoints", f"step-{steps:08d}.h5")
    r.update(rss_mib=res.rss_mib, other_cpu=res.other_cpu, setup_s=res.first(r"trainable parameters"),
             ckpt_save_s=mean(saves), ckpt_saves=len(saves), ckpt_mb=file_mb(ckpt),
             warm_extra_s=rows[0]["step_s"] - r["step_s"])
    # resume from the last checkpoint for one more step: setup now includes the restore
    res2 = run([args.lorad] + train_args(c, model, data, out, steps + 1, c["threads"])
               + ["--ckpt-every", 0, "--resume", ckpt])
    r["resume_setup_s"] = res2.first(r"trainable parameters")
    r["inspect_s"] = run([args.lorad, "inspect", ckpt]).wall_s
    # a cold start: the weights must come from the disk
    cold = os.path.join(args.workdir, "out-lora-cold")
    shutil.rmtree(cold, ignore_errors=True)
    evict_page_cache(os.path.join(model, "model.safetensors"))
    res3 = run([args.lorad] + train_args(c, model, data, cold, 1, c["threads"]) + ["--ckpt-every", 0])
    r["cold_setup_s"] = res3.first(r"trainable parameters")
    r["cold_extra_s"] = read_metrics(cold)[0]["step_s"] - r["step_s"]
    return r


def part_full(args, c, model, data):
    out = os.path.join(args.workdir, "out-full")
    shutil.rmtree(out, ignore_errors=True)
    steps = c["warmup"] + c["full_steps"]
    res = run([args.lorad] + train_args(c, model, data, out, steps, c["threads"])
              + ["--mode", "full", "--ckpt-every", 0])
    rows = read_metrics(out)
    r = step_stats(rows, c["warmup"], c["batch"] * c["seq"])
    saves = ckpt_saves(res)
    ckpt = os.path.join(out, "checkpoints", f"step-{steps:08d}.h5")
    t_ck = next((t for t, line in res.lines if "lorad: checkpoint " in line), None)
    t_wr = next((t for t, line in res.lines if "lorad: wrote " in line), None)
    r.update(rss_mib=res.rss_mib, other_cpu=res.other_cpu, setup_s=res.first(r"trainable parameters"),
             ckpt_save_s=mean(saves), ckpt_saves=len(saves), ckpt_mb=file_mb(ckpt),
             export_s=(t_wr - t_ck) if t_ck is not None and t_wr is not None else float("nan"))
    r["inspect_s"] = run([args.lorad, "inspect", ckpt]).wall_s
    shutil.rmtree(os.path.join(out, "model"), ignore_errors=True)  # 500 MB nobody reads
    return r


def part_mpi(args, c, model, data):
    out = os.path.join(args.workdir, "out-mpi2")
    shutil.rmtree(out, ignore_errors=True)
    steps = c["warmup"] + c["mpi_steps"]
    threads = max(1, c["threads"] // 2)
    res = run(["mpirun", "--oversubscribe", "-np", 2, args.lorad]
              + train_args(c, model, data, out, steps, threads) + ["--ckpt-every", 0], env=MPI_ENV)
    rows = read_metrics(out)
    r = step_stats(rows, c["warmup"], c["batch"] * c["seq"])
    meas = [x for x in rows if x["step"] > c["warmup"]]
    r.update(comm_s=mean(x["comm_s"] for x in meas), comm_min_s=min(x["comm_s"] for x in meas),
             allreduce_bytes=meas[-1]["allreduce_bytes"],
             rss_mib=res.rss_mib, other_cpu=res.other_cpu, threads=threads)
    r["comm_frac"] = r["comm_s"] / r["step_s"]
    return r


def part_torch(args, c, model, data):
    steps = c["warmup"] + c["torch_steps"]
    res = run([sys.executable, os.path.join(HERE, "torch_step.py"), "--model", model, "--data", data,
               "--batch", c["batch"], "--seq", c["seq"], "--steps", steps, "--threads", c["threads"],
               "--targets", c["targets"], "--rank", c["rank"], "--alpha", c["alpha"]])
    j = json.loads(res.stdout.strip().splitlines()[-1])
    meas = [s["step_s"] for s in j["steps"][c["warmup"]:]]
    t1 = res.first(r"^torch step 1/")
    st = mean(meas)
    return dict(step_s=st, step_min=min(meas), step_max=max(meas), tokens_per_s=c["batch"] * c["seq"] / st,
                n=len(meas), loss1=j["steps"][0]["loss"], rss_mib=res.rss_mib, other_cpu=res.other_cpu,
                version=j["torch"], load_s=j["load_s"], setup_s=t1 - j["steps"][0]["step_s"] if t1 else None,
                threads=j["threads"], trainable=j["trainable"])


def part_profile(args, c, model, data):
    """perf record of a LoRA run (setup, one warm-up and one measured step); the share of
    the samples by shared object and by function."""
    if not shutil.which("perf"):
        return None
    out = os.path.join(args.workdir, "out-perf")
    shutil.rmtree(out, ignore_errors=True)
    pdata = os.path.join(args.workdir, "perf.data")
    for stale in (pdata, pdata + ".old"):
        if os.path.exists(stale):
            os.remove(stale)
    rec = run(["perf", "record", "-F", 499, "-o", pdata, "--", args.lorad]
              + train_args(c, model, data, out, 2, c["threads"]) + ["--ckpt-every", 0], check=False)
    if rec.rc != 0:
        log("perf record failed; no profile (" + " ".join(line for _, line in rec.lines[-2:]) + ")")
        return None
    rep = run(["perf", "report", "-i", pdata, "--stdio", "--no-children", "--sort", "pid,dso,symbol",
               "--percent-limit", 0.2], check=False, quiet=True)
    rows = []  # (percent of all samples, thread id, object, function)
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\d+):\S*\s+(\S+)\s+\[[.k]\]\s+(.+)$", line)
        if m:
            sym = re.sub(r"(\s+-)+\s*$", "", m.group(4)).strip()
            rows.append((float(m.group(1)), int(m.group(2)), m.group(3), sym))
    tot = run(["perf", "report", "-i", pdata, "--stdio", "--no-children", "--sort", "pid"], check=False, quiet=True)
    threads = {}
    for line in tot.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\d+):", line)
        if m:
            threads[int(m.group(2))] = float(m.group(1))
    if not threads:
        return None
    main_tid = min(threads)  # the main thread's id is the process id, below its threads'
    main = threads[main_tid]
    top = [(100 * p / main, d, f) for p, t, d, f in rows if t == main_tid][:12]
    others = sum(v for t, v in threads.items() if t != main_tid)

    def share(pred):
        return 100 * sum(p for p, t, d, f in rows if t != main_tid and pred(d, f)) / others if others else 0.0

    return dict(rows=top, main_share=main, other_threads=len(threads) - 1, other_cpu=rec.other_cpu,
                others_blas=share(lambda d, f: "openblas" in d and "yield" not in f),
                others_wait=share(lambda d, f: d == "[kernel.kallsyms]" or "sched_yield" in f))


# ---------------------------------------------------------------------------- report

def fmt(x, spec):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def report(args, c, R):
    m, sg, lo, fu, mp, to = R["machine"], R["sgemm"], R["lora"], R["full"], R["mpi"], R["torch"]
    k, fl, peak = model_counts(c), step_flops(c), sg["peak"]
    gt = gemm_time_estimate(c, sg["rates"])
    tok = c["batch"] * c["seq"]
    cols = [("lorad LoRA", lo, fl["lora"]), (f"PyTorch {to['version']} LoRA", to, fl["lora"]),
            ("lorad full", fu, fl["full"]), (f"lorad LoRA, 2 ranks × {mp['threads']} thread", mp, fl["lora"])]

    def row(label, f):
        return [label] + [f(r, F) for _, r, F in cols]

    step_rows = [
        row("step time (s), mean of measured",
            lambda r, F: f"{fmt(r['step_s'], '.3f')} ({fmt(r['step_min'], '.3f')}–{fmt(r['step_max'], '.3f')})"),
        row("measured steps (after warm-up)", lambda r, F: str(r["n"])),
        row("tokens/s", lambda r, F: fmt(r["tokens_per_s"], ".1f")),
        row("model GFLOP / step", lambda r, F: fmt(F / 1e9, ".4g")),
        row("achieved GFLOP/s", lambda r, F: fmt(F / r["step_s"] / 1e9, ".1f")),
        row(f"MFU (vs sgemm peak {peak:.1f} GFLOP/s)",
            lambda r, F: fmt(100 * F / r["step_s"] / 1e9 / peak, ".1f") + " %"),
        row("peak RSS (MiB)", lambda r, F: fmt(r["rss_mib"], ".0f")),
        row("loss at step 1 (same model, same batch)", lambda r, F: fmt(r["loss1"], ".5f")),
        row("other processes' CPU meanwhile (% of the cores)", lambda r, F: fmt(100 * r["other_cpu"], ".1f") + " %"),
    ]
    ratios = [
        f"- lorad / PyTorch, tokens/s: **{lo['tokens_per_s'] / to['tokens_per_s']:.2f}×**; "
        f"peak RSS: **{lo['rss_mib'] / to['rss_mib']:.2f}×**",
        f"- LoRA / full (lorad), step time: **{lo['step_s'] / fu['step_s']:.2f}**; "
        f"peak RSS: **{lo['rss_mib'] / fu['rss_mib']:.2f}**",
        f"- 2 ranks: all-reduce (`comm_s`) **{100 * mp['comm_frac']:.2f} %** of the step "
        f"({1e3 * mp['comm_s']:.2f} ms of {mp['step_s']:.3f} s, the least {1e3 * mp['comm_min_s']:.2f} ms; "
        f"{mp['allreduce_bytes']:,} bytes per step; comm_s includes waiting for the slower rank); "
        f"tokens/s {mp['tokens_per_s']:.1f} against {lo['tokens_per_s']:.1f} for 1 rank × {c['threads']} threads",
        f"- sgemm share: the step's products at sgemm_peak's measured rate of each shape take "
        f"{gt['lora']:.3f} s of lorad's {lo['step_s']:.3f} s LoRA step (**{100 * gt['lora'] / lo['step_s']:.0f} %**) "
        f"and {gt['full']:.3f} s of the {fu['step_s']:.3f} s full step ({100 * gt['full'] / fu['step_s']:.0f} %); "
        f"the rest is everything else (attention loops, LayerNorm, GELU, softmax/cross-entropy, AdamW, memsets)",
    ]
    sg_rows = [[s["name"], s["trans"], f"{s['M']}×{s['N']}×{s['K']}", fmt(s["gflops_best"], ".1f"),
                fmt(s["gflops_mean"], ".1f")] for s in sg["shapes"]]
    io_rows = [
        ["checkpoint size (MB)", fmt(lo["ckpt_mb"], ".2f"), fmt(fu["ckpt_mb"], ".1f"), "–"],
        ["checkpoint save (s)", f"{fmt(lo['ckpt_save_s'], '.4f')} (mean of {lo['ckpt_saves']})",
         f"{fmt(fu['ckpt_save_s'], '.3f')} (the final one)", "–"],
        ["checkpoint load: `lorad inspect` wall time (s)", fmt(lo["inspect_s"], ".4f"), fmt(fu["inspect_s"], ".3f"),
         "–"],
        ["process start → ready to step (s), model in the page cache", fmt(lo["setup_s"], ".3f"),
         fmt(fu["setup_s"], ".3f"), fmt(to["setup_s"], ".3f")],
        ["the same, resuming from the LoRA checkpoint (s)", fmt(lo["resume_setup_s"], ".3f"), "–", "–"],
        ["the same, model file cold (evicted from the page cache) (s)", fmt(lo["cold_setup_s"], ".3f"), "–", "–"],
        ["first step − mean step: warm / cold page cache (s)",
         f"{fmt(lo['warm_extra_s'], '.3f')} / {fmt(lo['cold_extra_s'], '.3f')}", "–", "–"],
        ["export at the end: model.safetensors (s)", "–", fmt(fu.get("export_s"), ".3f"), "–"],
    ]
    L = []
    L.append("# lorad benchmark results\n")
    L.append(f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['mem']} RAM, Linux {m['kernel']}; {sg['blas']}")
    L.append(f"- **Date**: {m['date']}; **commit** {m['commit']}")
    L.append(f"- **Command**: `{R['command']}`" + (" (smoke: a tiny model, numbers meaningless)" if args.smoke else ""))
    L.append(f"- **Model**: GPT-2 shape, {c['layers']} layers, d={c['dim']}, {c['heads']} heads, vocab {c['vocab']}, "
             f"{c['positions']} positions: {k['params'] / 1e6:.2f} M parameters ({k['matmul_params'] / 1e6:.2f} M in "
             f"products, LM head tied), random weights from `lorad init-model`, F32")
    L.append(f"- **Step**: batch {c['batch']} × seq {c['seq']} = {tok} tokens; "
             f"LoRA r={c['rank']} α={c['alpha']:g} on "
             f"{c['targets']} ({k['lora_params']:,} trainable parameters); AdamW, clip 1; {c['threads']} threads "
             f"(OpenBLAS and OpenMP); {c['warmup']} warm-up step not counted")
    L.append("\n## Training step\n")
    L.append(table(["", *[n for n, _, _ in cols]], step_rows))
    L.append("")
    L.extend(ratios)
    L.append(f"\n## sgemm (OpenBLAS cblas_sgemm, {c['threads']} threads, row-major as lorad calls it)\n")
    L.append(table(["product", "op", "M×N×K", "best GFLOP/s", "mean GFLOP/s"], sg_rows))
    L.append(f"\nPeak (the best of the model-sized shapes, thin LoRA products excluded): **{peak:.1f} GFLOP/s**; "
             f"other processes used {100 * sg['other_cpu']:.1f} % of the cores meanwhile.")
    L.append("\n## Checkpoints and loading (lorad)\n")
    L.append(table(["", "lorad LoRA", "lorad full", "PyTorch LoRA"], io_rows))
    pr = R.get("profile")
    if pr:
        L.append("\n## Where lorad's LoRA step goes (perf record of setup + 2 steps)\n")
        L.append(f"The main thread runs the whole time ({pr['main_share']:.0f} % of all samples), so its profile is "
                 f"the run's wall time; the share of its samples by function:\n")
        L.append(table(["main thread", "object", "function"], [[f"{p:.1f} %", d, f"`{f}`"] for p, d, f in pr["rows"]]))
        L.append(f"\nThe other {pr['other_threads']} thread(s) (OpenBLAS's workers) spend {pr['others_blas']:.0f} % of "
                 f"their samples in OpenBLAS and {pr['others_wait']:.0f} % yielding the CPU while they wait "
                 f"(`sched_yield` and the scheduler): the time the main thread runs single-threaded code.")
    L.append("\nbench/README.md explains how each number is measured and the FLOP formulas.")
    return "\n".join(L) + "\n"


def numbers_missing(R):
    """The smoke check: every part must have produced a finite number (never a timing)."""
    need = {"sgemm": ["peak"], "lora": ["step_s", "tokens_per_s", "rss_mib", "setup_s", "ckpt_save_s", "inspect_s",
                                        "resume_setup_s", "cold_setup_s", "cold_extra_s", "ckpt_mb"],
            "torch": ["step_s", "tokens_per_s", "rss_mib", "setup_s"],
            "full": ["step_s", "rss_mib", "ckpt_save_s", "inspect_s"],
            "mpi": ["step_s", "comm_s", "comm_frac", "allreduce_bytes"]}
    bad = []
    for part, keys in need.items():
        for key in keys:
            v = R.get(part, {}).get(key)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                bad.append(f"{part}.{key} = {v!r}")
    return bad


def measure(args, what, fn):
    """Runs one part when the machine is idle; again (up to --retries times) when other
    processes took more than 10 % of the cores while it ran, keeping the quietest run."""
    best = None
    for attempt in range(1 + (args.retries if args.max_wait > 0 else 0)):
        log(what if attempt == 0 else f"{what}, again: others used {100 * best['other_cpu']:.0f} % of the cores")
        if args.max_wait > 0:
            wait_idle(args.max_wait)
        r = fn()
        if not r or "other_cpu" not in r:
            return r
        if best is None or r["other_cpu"] < best["other_cpu"]:
            best = r
        if best["other_cpu"] <= 0.10:
            break
    return best


def default_binary(*names):
    for name in names:
        p = os.path.join(ROOT, name)
        if os.path.exists(p):
            return p
    return os.path.join(ROOT, names[0])


def main():
    ap = argparse.ArgumentParser(description="lorad's benchmark (bench/README.md)")
    ap.add_argument("--smoke", action="store_true", help="a tiny model, every part quickly; results to the workdir")
    ap.add_argument("--lorad", help="the lorad binary (default: build-bench/lorad or build/lorad)")
    ap.add_argument("--sgemm", help="the sgemm_peak binary (default: bench/sgemm_peak next to lorad's build)")
    ap.add_argument("--workdir", help="scratch: model, data, runs (default /tmp/lorad-bench[-smoke])")
    ap.add_argument("--results", help="where the table goes (default bench/RESULTS.md, or WORKDIR/RESULTS.md)")
    ap.add_argument("--no-profile", action="store_true", help="skip the perf profile (never run with --smoke)")
    ap.add_argument("--retries", type=int, default=2, help="measure a part again when other processes took "
                    "over 10 %% of the cores meanwhile, up to this many times (default 2)")
    ap.add_argument("--max-wait", type=float, help="seconds to wait, before each part, for the machine to be "
                    "idle (default 600; 0 with --smoke)")
    args = ap.parse_args()
    args.lorad = os.path.abspath(args.lorad or default_binary("build-bench/lorad", "build/lorad"))
    args.sgemm = os.path.abspath(args.sgemm or os.path.join(os.path.dirname(args.lorad), "bench", "sgemm_peak"))
    args.workdir = os.path.abspath(args.workdir or ("/tmp/lorad-bench-smoke" if args.smoke else "/tmp/lorad-bench"))
    args.results = os.path.abspath(args.results or (os.path.join(args.workdir, "RESULTS.md") if args.smoke
                                                    else os.path.join(HERE, "RESULTS.md")))
    for b in (args.lorad, args.sgemm):
        if not os.access(b, os.X_OK):
            sys.exit(f"run.py: {b}: not found (hint: cmake --build BUILD; or pass --lorad / --sgemm)")
    os.makedirs(args.workdir, exist_ok=True)
    c = CONFIGS["smoke" if args.smoke else "full"]
    if args.max_wait is None:
        args.max_wait = 0.0 if args.smoke else 600.0
    argv = " ".join(os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(ROOT) else a for a in sys.argv[1:])
    R = {"command": f"/usr/bin/python3 bench/run.py {argv}".strip(), "config": c}
    t0 = time.monotonic()
    try:
        R["machine"] = part_machine(args)
        model, data = model_dir(args.workdir, c, args.lorad), data_file(args.workdir, c)
        parts = [("sgemm", "sgemm peak", part_sgemm), ("lora", "lorad LoRA", part_lora),
                 ("torch", "PyTorch LoRA", part_torch), ("full", "lorad --mode full", part_full),
                 ("mpi", "lorad LoRA on 2 ranks", part_mpi)]
        if not args.smoke and not args.no_profile:
            parts.append(("profile", "perf profile of lorad LoRA", part_profile))
        for key, what, fn in parts:
            R[key] = measure(args, what, lambda: fn(args, c, model, data))
    except BenchError as e:
        sys.exit(f"run.py: {e}")
    text = report(args, c, R)
    print(text)
    with open(args.results, "w") as f:
        f.write(text)
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    log(f"wrote {args.results} ({time.monotonic() - t0:.0f} s)")
    bad = numbers_missing(R)
    if bad:
        print("run.py: parts without a number: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
