"""run.py: lorad's benchmark, in one run (bench/README.md says what each number means).

    /usr/bin/python3 bench/run.py [--smoke] [--lorad build/lorad] [--peak build/bench/gemm_peak]
                                  [--workdir DIR] [--results FILE] [--no-profile]

Side by side, one after the other (never two at once: the machine's cores are the
subject): the matrix products at the model's shapes on OpenBLAS, oneDNN f32 and oneDNN
bf16 (the peaks MFU is measured against); lorad's LoRA step in f32 on oneDNN (the
default), on OpenBLAS (--gemm openblas) and with bf16 frozen weights (--base-dtype bf16);
the same step in PyTorch; lorad --mode full; lorad on 2 ranks in f32 and in bf16 (the
all-reduce's share of the step, and the node's memory against 1 rank); checkpoint save,
checkpoint load and model load; peak RSS of each process (os.wait4) and PSS sampled while
it runs; optionally a perf profile of the default LoRA run. It prints a table, headed by
the issue's targets, and writes it to bench/RESULTS.md (with --smoke: a tiny model, every
part in a few seconds, the table written under the work directory, and a non-zero exit if
any part produced no number; timings are never asserted).

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
                 targets="q,v", threads=2, warmup=1, lora_steps=5, variant_steps=3, full_steps=3, torch_steps=3,
                 mpi_steps=3, peak_min_time=0.5, mem_interval=0.1),
    "smoke": dict(layers=2, dim=64, heads=2, vocab=384, positions=64, batch=2, seq=32, rank=8, alpha=8.0,
                  targets="q,v", threads=2, warmup=1, lora_steps=2, variant_steps=1, full_steps=1, torch_steps=1,
                  mpi_steps=1, peak_min_time=0.005, mem_interval=0.01),
}

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}

# The libraries gemm_peak times (its "lib" field) and how the tables name them.
LIBS = {"openblas": "OpenBLAS sgemm", "onednn": "oneDNN f32", "onednn_bf16": "oneDNN bf16"}
# measured by gemm_peak as a lever, not a library lorad runs: no peak, no MFU
PACKED = "onednn_bf16_packed"
HEAD_ROWS = 128  # the LM head's rows per product (MODEL_HEAD_ROWS, worker/model.h)

# The training runs of the step table: part key, column label, the library of the frozen
# weights' products (its peak is the run's MFU denominator), the library of the other
# (f32) products, the FLOPs of its step. Labels with {threads} / {torch} are filled in.
COLUMNS = [
    ("lora", "lorad LoRA f32 (oneDNN)", "onednn", "onednn", "lora"),
    ("lora_openblas", "lorad LoRA f32 (`--gemm openblas`)", "openblas", "openblas", "lora"),
    ("lora_bf16", "lorad LoRA `--base-dtype bf16`", "onednn_bf16", "onednn", "lora"),
    ("torch", "PyTorch {torch} LoRA", "openblas", "openblas", "lora"),
    ("full", "lorad full (oneDNN)", "onednn", "onednn", "full"),
    ("mpi", "lorad LoRA f32, 2 ranks × {threads} thread", "onednn", "onednn", "lora"),
    ("mpi_bf16", "lorad LoRA bf16, 2 ranks × {threads} thread", "onednn_bf16", "onednn", "lora"),
]


class BenchError(Exception):
    pass


# bench/tokenizer.py's section of RESULTS.md lies between these; run.py keeps it.
TOKENIZER_MARKERS = ("<!-- bench/tokenizer.py: begin -->", "<!-- bench/tokenizer.py: end -->")
QUANT_MARKERS = ("<!-- bench/quant.py: begin -->", "<!-- bench/quant.py: end -->")
ADAPTERS_MARKERS = ("<!-- bench/adapters.py: begin -->", "<!-- bench/adapters.py: end -->")


def kept_sections(path):
    """PATH's sections of bench/tokenizer.py, bench/quant.py and bench/adapters.py with
    their markers ("" for each that is missing), to carry over when this run rewrites the
    file."""
    old = open(path).read() if os.path.exists(path) else ""
    kept = ""
    for begin, end in (TOKENIZER_MARKERS, QUANT_MARKERS, ADAPTERS_MARKERS):
        if begin in old and end in old:
            kept += "\n" + old[old.index(begin):old.index(end) + len(end)] + "\n"
    return kept


def section_write(path, markers, section):
    """SECTION between MARKERS (begin, end) in PATH, atomically: replacing the old one, or
    appended. The other benchmarks' sections, which run.py carries over."""
    begin, end = markers
    old = open(path).read() if os.path.exists(path) else "# lorad benchmark results\n"
    text = f"{begin}\n{section.strip(chr(10))}\n{end}\n"
    if begin in old and end in old:
        new = old[:old.index(begin)] + text + old[old.index(end) + len(end):].lstrip("\n")
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + text
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


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


def proc_descendants(pid):
    """Every descendant of PID (/proc/PID/task/*/children, recursively)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            stack += kids
    return out


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def proc_kib(path, *keys):
    """The values of KEYS in a /proc file of `Key:  N kB` lines, as a list (None when the
    process is gone, or a zombie whose memory is already released)."""
    found = {}
    try:
        with open(path) as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in keys:
                    found[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return [found[k] for k in keys] if len(found) == len(keys) else None


PSS_KEYS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


class MemSampler:
    """Samples the memory of a running child every INTERVAL s: the child itself or, given
    RANK_NAME (under mpirun), its descendants of that name. Keeps the peak over samples of
    the sum of their PSS (/proc/PID/smaps_rollup: shared pages split among the processes
    that map them, so the sum is what the node holds for them), the largest VmHWM (peak
    RSS) seen of each, and the CPU time the sampling itself took (in this process)."""

    def __init__(self, pid, interval, rank_name=None):
        self.pid, self.interval, self.rank_name = pid, interval, rank_name
        self.peak_kib, self.hwm_kib, self.samples, self.cpu_s = [0] * len(PSS_KEYS), {}, 0, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop)
        self.thread.start()

    def targets(self):
        if self.rank_name is None:
            return [self.pid]
        return [p for p in proc_descendants(self.pid) if proc_comm(p) == self.rank_name]

    def sample(self):
        pids = self.targets()
        pss = [proc_kib(f"/proc/{p}/smaps_rollup", *PSS_KEYS) for p in pids]
        if pids and None not in pss:
            total = [sum(col) for col in zip(*pss)]  # Pss and its parts, summed over the processes
            if total[0] > self.peak_kib[0]:
                self.peak_kib = total
            self.samples += 1
        for p in pids:
            hwm = proc_kib(f"/proc/{p}/status", "VmHWM")
            if hwm is not None:
                self.hwm_kib[p] = max(self.hwm_kib.get(p, 0), hwm[0])

    def loop(self):
        """Samples every INTERVAL s, or less often when one sample costs over 1/20 of it:
        reading smaps_rollup walks the page tables (~10 ms for a 1 GB process), and the
        sampler must not take much of the cores it measures."""
        t0 = time.thread_time()
        while not self.stop.is_set():
            c0 = time.thread_time()
            self.sample()
            self.stop.wait(max(self.interval, 20 * (time.thread_time() - c0)))
        self.cpu_s = time.thread_time() - t0

    def finish(self):
        self.stop.set()
        self.thread.join()
        anon, file, shmem = (x / 1024.0 for x in self.peak_kib[1:])
        return dict(pss_peak_mib=self.peak_kib[0] / 1024.0 if self.samples else float("nan"),
                    pss_anon_mib=anon, pss_file_mib=file, pss_shmem_mib=shmem,
                    rank_hwm_mib=[self.hwm_kib[p] / 1024.0 for p in sorted(self.hwm_kib)],
                    mem_samples=self.samples, sampler_cpu_s=self.cpu_s)


class Run:
    """One finished child: exit code, wall time, peak RSS (MiB, from wait4), its stderr
    lines with the monotonic time each arrived, the share of the machine's cores that
    other processes used meanwhile (busy CPU from /proc/stat minus the child's own and the
    memory sampler's), and the sampled memory (MemSampler.finish, or {})."""

    def __init__(self, cmd, rc, t0, t1, usage, busy_s, lines, stdout, mem):
        self.cmd, self.rc, self.t0, self.wall_s = cmd, rc, t0, t1 - t0
        self.rss_mib = usage.ru_maxrss / 1024.0
        self.lines, self.stdout, self.mem = lines, stdout, mem
        own = usage.ru_utime + usage.ru_stime + mem.get("sampler_cpu_s", 0.0)
        self.other_cpu = max(0.0, (busy_s - own) / (self.wall_s * (os.cpu_count() or 1)))

    def first(self, pattern):
        """Seconds from spawn to the first stderr line matching PATTERN (None if none)."""
        for t, line in self.lines:
            if re.search(pattern, line):
                return t - self.t0
        return None


def run(cmd, env=None, check=True, quiet=False, sample=None):
    """Runs CMD to its end; SAMPLE = (interval, rank name or None) samples its memory."""
    cmd = [str(c) for c in cmd]
    if not quiet:
        log("+ " + " ".join(cmd))
    lines, out = [], []
    b0 = cpu_busy_s()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, **(env or {})))
    sampler = MemSampler(proc.pid, *sample) if sample else None

    def read_err():
        for raw in iter(proc.stderr.readline, b""):
            lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    def read_out():
        out.append(proc.stdout.read().decode(errors="replace"))

    readers = [threading.Thread(target=read_err), threading.Thread(target=read_out)]
    for r in readers:
        r.start()
    # the sampler must see the ranks before they are reaped: wait without reaping first
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    mem = sampler.finish() if sampler else {}
    _, status, usage = os.wait4(proc.pid, 0)
    t1 = time.monotonic()
    busy = cpu_busy_s() - b0
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    res = Run(cmd, proc.returncode, t0, t1, usage, busy, lines, "".join(out), mem)
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


def linear_maps(c):
    """Each layer's frozen linear maps: (name, out, in)."""
    C, F = c["dim"], 4 * c["dim"]
    return [("c_attn", 3 * C, C), ("attn.c_proj", C, C), ("mlp.c_fc", F, C), ("mlp.c_proj", C, F)]


LORA_PRODUCTS = {  # (op, the side that is the rank): the thin product of an adapter
    ("NT", "n"): "lora x.A^T", ("NT", "k"): "lora u.B^T", ("TN", "n"): "lora dB (out×r)",
    ("NN", "n"): "lora du (N×r)", ("TN", "m"): "lora dA (r×in)", ("NN", "k"): "lora dx += du.A"}


def product_name(c, row):
    """The name gemm_peak gives the product of a `--profile` row (op, m, n, k); the thin
    LoRA products are told apart by which side is the rank."""
    C, V, r, op, n, k = c["dim"], c["vocab"], c["rank"], row["op"], row["n"], row["k"]
    side = next((x for x in ("n", "k", "m") if row[x] == r), None)
    if (op, side) in LORA_PRODUCTS:
        return LORA_PRODUCTS[op, side]
    for name, out, inp in linear_maps(c) + [("lm_head", V, C)]:
        nt_fwd = op == ("NT" if name == "lm_head" else "NN")  # the tied head multiplies by wte^T
        if (n, k) == (out, inp) and nt_fwd:
            return "fwd " + name
        if (n, k) == (inp, out) and not nt_fwd and op[0] == "N":
            return "dx " + name
    return None


def product_seconds(c, rates, frozen_lib, f32_lib, mode):
    """Seconds a step's products take at gemm_peak's measured (mean) rate of each shape,
    the frozen weights' products (forward, input gradient) on FROZEN_LIB, the others
    (weight gradients, the thin LoRA products) on F32_LIB: the step's time if everything
    but the products were free."""
    C, V, L, N, r = c["dim"], c["vocab"], c["layers"], c["batch"] * c["seq"], c["rank"]
    fz, f32 = rates[frozen_lib], rates[f32_lib]

    def t(rate, name, m, n, kk):
        return 2.0 * m * n * kk / (rate[name] * 1e9)

    maps = linear_maps(c)
    fwd = L * sum(t(fz, "fwd " + m, N, o, i) for m, o, i in maps) + t(fz, "fwd lm_head", N, V, C)
    dx = L * sum(t(fz, "dx " + m, N, i, o) for m, o, i in maps) + t(fz, "dx lm_head", N, C, V)
    if mode == "full":
        dw = L * sum(t(f32, f"dw {m} (full)", i, o, N) for m, o, i in maps) + t(f32, "dw lm_head (full)", V, C, N)
        return fwd + dx + dw
    # per adapter: 2 thin products forward, 4 backward
    thin = model_counts(c)["adapters"] * (3 * t(f32, "lora x.A^T", N, r, C) + 3 * t(f32, "lora u.B^T", N, C, r))
    return fwd + dx + thin


# ---------------------------------------------------------------------------- parts

# OpenBLAS 0.3.21 does not know CPUs newer than it (Sapphire Rapids among them) and falls
# back to its generic Prescott kernels; on a CPU with AVX-512 the benchmark then sets the
# core itself for every process it starts that runs OpenBLAS (PyTorch, gemm_peak, lorad
# --gemm openblas), so that the baseline is what a tuned user would get.
OPENBLAS_GENERIC = ("prescott", "nehalem", "katmai", "core2", "generic")
OPENBLAS_TUNED = "SkylakeX"


def openblas_detected():
    """The core OpenBLAS picks in this environment (its corename), or '?'."""
    code = ("import ctypes; l = ctypes.CDLL('libopenblas.so.0'); l.openblas_get_corename.restype = ctypes.c_char_p; "
            "print(l.openblas_get_corename().decode())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return p.stdout.strip() or "?"


def openblas_tune():
    """Sets OPENBLAS_CORETYPE where OpenBLAS would run generic kernels on an AVX-512 CPU;
    returns (the core it detects on its own, the core set or None)."""
    auto = openblas_detected()
    with open("/proc/cpuinfo") as f:
        avx512 = " avx512f " in f.read()
    if "OPENBLAS_CORETYPE" in os.environ or auto.lower() not in OPENBLAS_GENERIC or not avx512:
        return auto, None
    os.environ["OPENBLAS_CORETYPE"] = OPENBLAS_TUNED
    return auto, OPENBLAS_TUNED


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
    sources = git("ls-files", "--", *LORAD_SOURCES).splitlines()
    return dict(cpu=cpu, cores=os.cpu_count(), mem=mem, kernel=platform.release(), commit=commit,
                load=os.getloadavg(), date=utc(time.time()), built=os.path.getmtime(args.lorad),
                newer=sources_newer(sources, os.path.getmtime(args.lorad)))


# What the lorad binary is built from: a file here newer than the binary may not be in it.
LORAD_SOURCES = ["worker", "coordinator", "storage", "daemon", "proto", "CMakeLists.txt"]


def utc(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def sources_newer(paths, t):
    """The paths (relative to the repository) of the files modified after T, newest first."""
    stamped = [(os.path.getmtime(os.path.join(ROOT, p)), p) for p in paths if os.path.exists(os.path.join(ROOT, p))]
    return [p for m, p in sorted(stamped, reverse=True) if m > t]


def build_note(m):
    """RESULTS.md's warning when the measured binary is older than the sources of the commit."""
    if not m.get("newer"):
        return f"lorad built {utc(m['built'])}, after its last source change"
    return (f"**the lorad binary measured (built {utc(m['built'])}) is older than {len(m['newer'])} of its source "
            f"files ({', '.join(m['newer'][:3])}{', …' if len(m['newer']) > 3 else ''}): these numbers may not be "
            f"the commit's; rebuild and run again**")


def part_peak(args, c, model=None, data=None):
    """gemm_peak: every shape on every library; the peak of each library is its best rate
    over the model-sized shapes (the thin LoRA products excluded)."""
    res = run([args.peak, "--threads", c["threads"], "--tokens", c["batch"] * c["seq"], "--dim", c["dim"],
               "--vocab", c["vocab"], "--rank", c["rank"], "--head-rows", min(HEAD_ROWS, c["batch"] * c["seq"]), "--min-time", c["peak_min_time"]])
    shapes = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    by_lib = {lib: [s for s in shapes if s["lib"] == lib] for lib in LIBS}
    peaks = {lib: max((s["gflops_best"] for s in ss if not s["name"].startswith("lora")), default=float("nan"))
             for lib, ss in by_lib.items()}
    libs = next((line for _, line in res.lines if line.startswith("gemm_peak: ")), "")
    return dict(shapes=shapes, peaks=peaks, rates={lib: {s["name"]: s["gflops_mean"] for s in ss}
                                                   for lib, ss in by_lib.items()},
                libs=libs.replace("gemm_peak: ", ""), other_cpu=res.other_cpu)


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
    """Mean, least and most step time over the steps after WARMUP (NaN when none)."""
    meas = [r["step_s"] for r in rows if r["step"] > warmup]
    st = mean(meas)
    return dict(step_s=st, step_min=min(meas, default=float("nan")), step_max=max(meas, default=float("nan")),
                tokens_per_s=tokens / st, n=len(meas), loss1=rows[0]["loss"], first_step_s=rows[0]["step_s"])


def comm_stats(rows, warmup, step_s):
    """Rank 0's all-reduce time (comm_s, after the ranks met at a barrier) over the measured
    steps and its share of the step, and its wait at that barrier (wait_s)."""
    meas = [r for r in rows if r["step"] > warmup] or rows
    comm = mean(r.get("comm_s", 0.0) for r in meas)
    return dict(comm_s=comm, comm_min_s=min(r.get("comm_s", 0.0) for r in meas), comm_frac=comm / step_s,
                wait_s=mean(r.get("wait_s", 0.0) for r in meas),
                allreduce_bytes=meas[-1].get("allreduce_bytes", 0))


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


def lorad_train(args, c, model, data, name, steps, flags=(), ranks=1, ckpt_every=0):
    """Runs one lorad training variant: the shared LoRA flags plus FLAGS, in WORKDIR/out-NAME,
    on RANKS ranks (under mpirun when more than 1) that share the config's threads, with its
    memory sampled. Returns the step, all-reduce and memory numbers, and the Run."""
    out = os.path.join(args.workdir, "out-" + name)
    shutil.rmtree(out, ignore_errors=True)
    threads = max(1, c["threads"] // ranks)
    # one process times its products per shape (two clock reads per product)
    cmd = ([args.lorad] + train_args(c, model, data, out, steps, threads) + ["--ckpt-every", ckpt_every]
           + (["--profile"] if ranks == 1 else []) + list(flags))
    env, rank_name = None, None
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", ranks] + cmd
        env, rank_name = MPI_ENV, os.path.basename(args.lorad)[:15]  # comm is at most 15 characters
    # a sample costs ~13 ms of CPU: beside single-threaded ranks, whose waits for each other
    # the all-reduce times show, sample five times less often
    res = run(cmd, env=env, sample=(c["mem_interval"] * (5 if ranks > 1 else 1), rank_name))
    rows = read_metrics(out)
    r = step_stats(rows, c["warmup"], c["batch"] * c["seq"])
    r.update(comm_stats(rows, c["warmup"], r["step_s"]))
    r.update(res.mem, ranks=ranks, threads=threads, out=out, other_cpu=res.other_cpu,
             setup_s=res.first(r"trainable parameters"))
    # one process: wait4's exact peak; ranks: the largest VmHWM sampled of each
    r["rank_rss_mib"] = res.mem["rank_hwm_mib"] if ranks > 1 else [res.rss_mib]
    r["rss_mib"] = max(r["rank_rss_mib"], default=float("nan"))
    prof = os.path.join(out, "profile.jsonl")
    if os.path.exists(prof):
        with open(prof) as f:
            r["products"] = [json.loads(line) for line in f if line.strip()]
    return r, res


def part_lora(args, c, model, data):
    """The default LoRA run (f32 on oneDNN) with a checkpoint after each step; one more
    step resumed from the last of them; `lorad inspect` of it; then one step with the model
    file cold in the page cache."""
    steps = c["warmup"] + c["lora_steps"]
    r, res = lorad_train(args, c, model, data, "lora", steps, ckpt_every=1)
    saves = ckpt_saves(res)
    ckpt = os.path.join(r["out"], "checkpoints", f"step-{steps:08d}.h5")
    r.update(ckpt_save_s=mean(saves), ckpt_saves=len(saves), ckpt_mb=file_mb(ckpt),
             warm_extra_s=r["first_step_s"] - r["step_s"])
    # resume from the last checkpoint for one more step: setup now includes the restore
    resumed, _ = lorad_train(args, c, model, data, "lora-resume", steps + 1, ["--resume", ckpt])
    r["resume_setup_s"] = resumed["setup_s"]
    r["inspect_s"] = run([args.lorad, "inspect", ckpt]).wall_s
    # a cold start: the weights must come from the disk
    evict_page_cache(os.path.join(model, "model.safetensors"))
    cold, _ = lorad_train(args, c, model, data, "lora-cold", 1)
    r["cold_setup_s"] = cold["setup_s"]
    r["cold_extra_s"] = cold["first_step_s"] - r["step_s"]
    return r


def part_full(args, c, model, data):
    """--mode full, checkpoint and export at the end only."""
    steps = c["warmup"] + c["full_steps"]
    r, res = lorad_train(args, c, model, data, "full", steps, ["--mode", "full"])
    saves = ckpt_saves(res)
    ckpt = os.path.join(r["out"], "checkpoints", f"step-{steps:08d}.h5")
    t_ck = next((t for t, line in res.lines if "lorad: checkpoint " in line), None)
    t_wr = next((t for t, line in res.lines if "lorad: wrote " in line), None)
    r.update(ckpt_save_s=mean(saves), ckpt_saves=len(saves), ckpt_mb=file_mb(ckpt),
             export_s=(t_wr - t_ck) if t_ck is not None and t_wr is not None else float("nan"))
    r["inspect_s"] = run([args.lorad, "inspect", ckpt]).wall_s
    shutil.rmtree(os.path.join(r["out"], "model"), ignore_errors=True)  # 500 MB nobody reads
    return r


def part_variant(name, steps_key, flags=(), ranks=1):
    """A part that runs one more lorad variant (FLAGS, RANKS) and keeps its numbers."""
    def part(args, c, model, data):
        return lorad_train(args, c, model, data, name, c["warmup"] + c[steps_key], flags, ranks)[0]
    return part


def part_torch(args, c, model, data):
    steps = c["warmup"] + c["torch_steps"]
    res = run([sys.executable, os.path.join(HERE, "torch_step.py"), "--model", model, "--data", data,
               "--batch", c["batch"], "--seq", c["seq"], "--steps", steps, "--threads", c["threads"],
               "--targets", c["targets"], "--rank", c["rank"], "--alpha", c["alpha"]],
              sample=(c["mem_interval"], None))
    j = json.loads(res.stdout.strip().splitlines()[-1])
    meas = [s["step_s"] for s in j["steps"][c["warmup"]:]]
    t1 = res.first(r"^torch step 1/")
    st = mean(meas)
    return dict(step_s=st, step_min=min(meas), step_max=max(meas), tokens_per_s=c["batch"] * c["seq"] / st,
                n=len(meas), loss1=j["steps"][0]["loss"], rss_mib=res.rss_mib, rank_rss_mib=[res.rss_mib],
                other_cpu=res.other_cpu, version=j["torch"], load_s=j["load_s"], ranks=1, threads=j["threads"],
                setup_s=t1 - j["steps"][0]["step_s"] if t1 else None, trainable=j["trainable"], **res.mem)


def perf_samples(pdata, sort, limit):
    """(percent of all samples, thread id, object, function) rows of `perf report`, those
    of at least LIMIT percent. oneDNN's generated kernels show as the object `[JIT] tid N`."""
    rep = run(["perf", "report", "-i", pdata, "--stdio", "--no-children", "--sort", sort, "--percent-limit", limit],
              check=False, quiet=True)
    rows = []
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\d+):\S*\s+(.+?)(?:\s+\[[.k]\]\s+(.+))?$", line.rstrip())
        if m:
            obj = re.sub(r"^\[JIT\] tid \d+$", "[JIT] (oneDNN's kernels)", m.group(3).strip())
            sym = re.sub(r"(\s+-)+\s*$", "", m.group(4) or "").strip()
            rows.append((float(m.group(1)), int(m.group(2)), obj, sym))
    return rows


def profile_summary(pdata):
    """The main thread's samples by function and the other threads' by object."""
    objs = perf_samples(pdata, "pid,dso", 0)
    threads = {}
    for p, t, _, _ in objs:
        threads[t] = threads.get(t, 0.0) + p
    if not threads:
        return None
    main_tid = min(threads)  # the main thread's id is the process id, below its threads'
    main, others = threads[main_tid], sum(v for t, v in threads.items() if t != main_tid)
    # JIT code has no symbols, its samples spread over many addresses: one row for it all
    jit = [(p, t, d, "(generated code)") for p, t, d, _ in objs if d.startswith("[JIT]")]
    rows = [r for r in perf_samples(pdata, "pid,dso,symbol", 0.2) if not r[2].startswith("[JIT]")] + jit
    top = sorted(((100 * p / main, d, f) for p, t, d, f in rows if t == main_tid), reverse=True)[:12]
    by_obj = {}
    for p, t, d, _ in objs:
        if t != main_tid:
            by_obj[d] = by_obj.get(d, 0.0) + p
    other_objs = sorted(((100 * p / others, d) for d, p in by_obj.items()), reverse=True)[:6] if others else []
    return dict(rows=top, main_share=main, other_threads=len(threads) - 1, other_objs=other_objs)


def part_profile(args, c, model, data):
    """perf record of the default LoRA run (setup, one warm-up and one measured step)."""
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
    summary = profile_summary(pdata)
    return dict(summary, other_cpu=rec.other_cpu) if summary else None


# ---------------------------------------------------------------------------- report

def fmt(x, spec):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def mfu(r, flops, peak):
    return flops / r["step_s"] / 1e9 / peak


def columns(R, c):
    """The step table's columns that ran: (label, run, frozen lib, f32 lib, FLOPs)."""
    fl = step_flops(c)
    out = []
    for key, label, lib, f32_lib, fkey in COLUMNS:
        r = R.get(key)
        if r:
            name = label.format(torch=r.get("version", ""), threads=r.get("threads", ""))
            out.append((name, r, lib, f32_lib, fl[fkey], key))
    return out


def report_targets(R, c):
    """The issue's targets: what was measured, and whether it meets each (never asserted)."""
    P, fl = R["peak"]["peaks"], step_flops(c)
    lo, ob, bf, to, fu, mp, mb = (R[k] for k in ("lora", "lora_openblas", "lora_bf16", "torch", "full", "mpi",
                                                 "mpi_bf16"))
    x, pct = "{:.2f}×", "{:.1%}"
    rows = [  # target, measured, bound (negative: an upper bound), format, detail, the runs it compares
        ("LoRA tokens/s ≥ 1.5× PyTorch's (f32)", lo["tokens_per_s"] / to["tokens_per_s"], 1.5, x,
         f"{lo['tokens_per_s']:.1f} vs {to['tokens_per_s']:.1f} tokens/s", (lo, to)),
        ("LoRA tokens/s ≥ 2.5× PyTorch's (`--base-dtype bf16`)", bf["tokens_per_s"] / to["tokens_per_s"], 2.5, x,
         f"{bf['tokens_per_s']:.1f} vs {to['tokens_per_s']:.1f} tokens/s", (bf, to)),
        ("MFU ≥ 60 % of the oneDNN f32 peak (f32, oneDNN)", mfu(lo, fl["lora"], P["onednn"]), 0.60, pct,
         f"--gemm openblas: {mfu(ob, fl['lora'], P['openblas']):.1%} of the OpenBLAS peak", (lo, R["peak"])),
        ("MFU ≥ 60 % of the oneDNN bf16 peak (bf16)", mfu(bf, fl["lora"], P["onednn_bf16"]), 0.60, pct,
         f"peak {P['onednn_bf16']:.1f} GFLOP/s", (bf, R["peak"])),
        ("peak RSS ≤ 0.5× PyTorch's (f32)", lo["rss_mib"] / to["rss_mib"], -0.5, x,
         f"{lo['rss_mib']:.0f} vs {to['rss_mib']:.0f} MiB", (lo, to)),
        ("peak RSS ≤ 0.3× PyTorch's (bf16)", bf["rss_mib"] / to["rss_mib"], -0.3, x,
         f"{bf['rss_mib']:.0f} vs {to['rss_mib']:.0f} MiB", (bf, to)),
        ("lorad LoRA step ≤ 0.70× lorad full step", lo["step_s"] / fu["step_s"], -0.70, x,
         f"{lo['step_s']:.3f} vs {fu['step_s']:.3f} s", (lo, fu)),
        # comm_s is the reduction alone (lorad meets at a barrier first); wait_s, the time a
        # rank waits there for the other, is load imbalance, not communication
        ("all-reduce ≤ 2 % of the step, 2 ranks", mp["comm_frac"], -0.02, "{:.2%}",
         f"f32; bf16: {mb['comm_frac']:.2%}; waiting for the other rank before it: {mp['wait_s'] / mp['step_s']:.2%}, "
         f"{mb['wait_s'] / mb['step_s']:.2%}", (mp, mb)),
    ]

    def met(v, bound):
        ok = v <= -bound if bound < 0 else v >= bound
        return "**met**" if ok else "**not met**"

    def others(runs):  # the most CPU other processes took during any of the runs compared
        return f"{100 * max(r['other_cpu'] for r in runs):.0f} %"

    return table(["target", "measured", "", "detail", "others' CPU (most of the runs compared)"],
                 [[name, f.format(v), met(v, b), note, others(runs)] for name, v, b, f, note, runs in rows])


def report_step(R, c):
    """The training-step table (one column per run) and the ratios below it."""
    P, rates = R["peak"]["peaks"], R["peak"]["rates"]
    cols = columns(R, c)

    def row(label, f):
        return [label] + [f(*col) for col in cols]

    def products(name, r, lib, f32_lib, F, key):
        if r["ranks"] > 1:  # each rank runs half the tokens on 1 thread: the 2-thread rates do not apply
            return "–"
        t = product_seconds(c, rates, lib, f32_lib, "full" if key == "full" else "lora")
        return f"{t:.3f} ({100 * t / r['step_s']:.0f} %)"

    rows = [
        row("step time (s), mean of measured",
            lambda n, r, *_: f"{fmt(r['step_s'], '.3f')} ({fmt(r['step_min'], '.3f')}–{fmt(r['step_max'], '.3f')})"),
        row("measured steps (after warm-up)", lambda n, r, *_: str(r["n"])),
        row("tokens/s", lambda n, r, *_: fmt(r["tokens_per_s"], ".1f")),
        row("model GFLOP / step", lambda n, r, l, f, F, k: fmt(F / 1e9, ".4g")),
        row("achieved GFLOP/s", lambda n, r, l, f, F, k: fmt(F / r["step_s"] / 1e9, ".1f")),
        row("frozen products on (its peak, GFLOP/s)", lambda n, r, l, *_: f"{LIBS[l]} ({fmt(P[l], '.1f')})"),
        row("**MFU** (vs that peak)", lambda n, r, l, f, F, k: f"**{fmt(100 * mfu(r, F, P[l]), '.1f')} %**"),
        row("products alone at their measured rates (s; share of the step)", products),
        row("peak RSS (MiB; the largest rank)", lambda n, r, *_: fmt(r["rss_mib"], ".0f")),
        row("loss at step 1 (same model, same batch)", lambda n, r, *_: fmt(r["loss1"], ".5f")),
        row("all-reduce (`comm_s`) share of the step",
            lambda n, r, *_: fmt(100 * r["comm_frac"], ".2f") + " %" if r["ranks"] > 1 else "–"),
        row("other processes' CPU meanwhile (% of the cores)",
            lambda n, r, *_: fmt(100 * r["other_cpu"], ".1f") + " %"),
    ]
    lo, ob, bf, to, fu, mp = (R[k] for k in ("lora", "lora_openblas", "lora_bf16", "torch", "full", "mpi"))
    notes = [
        f"- lorad / PyTorch, tokens/s: f32 **{lo['tokens_per_s'] / to['tokens_per_s']:.2f}×**, "
        f"`--gemm openblas` {ob['tokens_per_s'] / to['tokens_per_s']:.2f}×, "
        f"bf16 **{bf['tokens_per_s'] / to['tokens_per_s']:.2f}×**; "
        f"peak RSS: f32 **{lo['rss_mib'] / to['rss_mib']:.2f}×**, bf16 **{bf['rss_mib'] / to['rss_mib']:.2f}×**",
        f"- oneDNN / OpenBLAS (lorad f32), step time: {lo['step_s'] / ob['step_s']:.2f}; "
        f"bf16 / f32 (lorad, oneDNN): {bf['step_s'] / lo['step_s']:.2f}",
        f"- LoRA / full (lorad), step time: **{lo['step_s'] / fu['step_s']:.2f}**; "
        f"peak RSS: **{lo['rss_mib'] / fu['rss_mib']:.2f}**",
        *[f"- 2 ranks, {what}: all-reduce **{100 * m['comm_frac']:.2f} %** of the step ({1e3 * m['comm_s']:.2f} ms of "
          f"{m['step_s']:.3f} s, the least {1e3 * m['comm_min_s']:.2f} ms; {m['allreduce_bytes']:,} bytes per step; "
          f"and {1e3 * m['wait_s']:.2f} ms waiting for the other rank at the barrier before it); tokens/s {m['tokens_per_s']:.1f} against "
          f"{one['tokens_per_s']:.1f} for 1 rank × {c['threads']} threads"
          for what, m, one in (("f32", mp, lo), ("bf16", R["mpi_bf16"], bf))],
    ]
    over = [col[0] for col in cols if mfu(col[1], col[4], P[col[2]]) > 1.0]
    if over:
        notes.append(f"- MFU over 100 % ({', '.join(over)}): the run went faster than the peak `gemm_peak` measured "
                     f"for its library, so that peak is an underestimate (taken under load, or at a thread count "
                     f"the run does not use): read that MFU as a bound, not a fraction")
    return table(["", *[col[0] for col in cols]], rows) + "\n\n" + "\n".join(notes)


def report_memory(R, c):
    """Memory per node at 1 and 2 ranks: each rank's peak RSS and the node's summed PSS."""
    specs = [("f32", "lora", "1 × 2"), ("f32", "mpi", "2 × 1"), ("bf16", "lora_bf16", "1 × 2"),
             ("bf16", "mpi_bf16", "2 × 1"), ("f32, full", "full", "1 × 2"), ("PyTorch f32", "torch", "1 × 2")]
    one = {"mpi": R["lora"], "mpi_bf16": R["lora_bf16"]}
    rows = []
    for what, key, layout in specs:
        r = R[key]
        growth = r["pss_peak_mib"] / one[key]["pss_peak_mib"] if key in one else None
        rows.append([what, layout, " / ".join(fmt(x, ".0f") for x in r["rank_rss_mib"]),
                     f"**{fmt(r['pss_peak_mib'], '.0f')}**", fmt(growth, ".2f") + "×" if growth else "–",
                     " / ".join(fmt(r[k], ".0f") for k in ("pss_anon_mib", "pss_file_mib", "pss_shmem_mib")),
                     str(r["mem_samples"])])
    return table(["run", "ranks × threads", "peak RSS of each rank (MiB)",
                  "node: peak of the ranks' summed PSS (MiB)", "node PSS vs 1 rank",
                  "of which anon / file / shmem (MiB)", "samples"], rows)


def report_peaks(R):
    """The products on each library side by side: best (mean) GFLOP/s per shape."""
    pk = R["peak"]
    cell = {(s["name"], s["lib"]): f"{s['gflops_best']:.1f} ({s['gflops_mean']:.1f})" for s in pk["shapes"]}
    names = list(dict.fromkeys(s["name"] for s in pk["shapes"]))
    first = {s["name"]: s for s in reversed(pk["shapes"])}
    rows = [[n, first[n]["trans"], f"{first[n]['M']}×{first[n]['N']}×{first[n]['K']}",
             *[cell.get((n, lib), "–") for lib in (*LIBS, PACKED)]] for n in names]
    rows.append(["**peak** (best of the model-sized shapes)", "", "",
                 *[f"**{fmt(pk['peaks'][lib], '.1f')}**" for lib in LIBS], "(not a peak: lorad does not pack)"])
    return table(["product", "op", "M×N×K", *[f"{name} best (mean)" for name in LIBS.values()],
                  "oneDNN bf16, weight pre-packed, best (mean)"], rows)


MFU_TARGET = 0.60  # issue #8
PRODUCT_RUNS = [("lora", "f32 (oneDNN)", "onednn"), ("lora_bf16", "`--base-dtype bf16`", "onednn_bf16")]


def report_products(R, c):
    """Each run's step, product by product (`lorad train --profile`): the time and rate of
    every shape in the step, against gemm_peak's rates for it, and the rest of the step;
    then the step's distance from the library's peak taken apart, and what the measured
    levers would give."""
    pk = R["peak"]
    rate = {(s["name"], s["lib"]): s for s in pk["shapes"]}
    out = []
    for key, label, lib in PRODUCT_RUNS:
        r = R.get(key)
        if not r or not r.get("products"):
            continue
        step, steps = r["step_s"], max(1, r["products"][0]["steps"])
        rows, total_s, total_f, alone_s, packed_s, lost = [], 0.0, 0.0, 0.0, 0.0, []
        for p in sorted(r["products"], key=lambda p: -p["seconds"]):
            s_step, f_step = p["seconds"] / steps, 2.0 * p["m"] * p["n"] * p["k"] * p["calls"] / steps
            name = product_name(c, p) or "?"
            ref, packed = rate.get((name, p["lib"])), rate.get((name, PACKED)) if p["lib"] == lib else None
            # the shape's time at gemm_peak's mean rate (alone), and pre-packed; the step's own without one
            alone = f_step / (ref["gflops_mean"] * 1e9) if ref else s_step
            total_s, total_f, alone_s = total_s + s_step, total_f + f_step, alone_s + alone
            lost.append((s_step - f_step / (pk["peaks"][lib] * 1e9), f"{name} ({p['m']} rows)"))
            packed_s += f_step / (packed["gflops_mean"] * 1e9) if packed and lib == "onednn_bf16" else alone
            rows.append([name, LIBS.get(p["lib"], p["lib"]), f"{p['op']} {p['m']}×{p['n']}×{p['k']}",
                         f"{p['calls'] / steps:g}", f"{1e3 * s_step:.1f}", f"{100 * s_step / step:.1f} %",
                         f"{fmt(f_step / p['seconds'] * steps * 1e-9, '.1f')}",
                         f"{ref['gflops_mean']:.1f} ({ref['gflops_best']:.1f})" if ref else "–",
                         f"{packed['gflops_mean']:.1f} ({packed['gflops_best']:.1f})"
                         if packed and lib == "onednn_bf16" else "–",
                         f"{1e3 * p['convert_s'] / steps:.1f}" if p["lib"] == "onednn_bf16" else "–"])
        rest = step - total_s
        rows.append(["**all timed products**", "", "", "", f"**{1e3 * total_s:.1f}**",
                     f"**{100 * total_s / step:.1f} %**", f"**{total_f / total_s * 1e-9:.1f}**", "", "", ""])
        rows.append(["the rest of the step", "", "", "", f"{1e3 * rest:.1f}", f"{100 * rest / step:.1f} %", "", "",
                     "", ""])
        peak, flops = pk["peaks"][lib], step_flops(c)["lora"]
        at_peak = total_f / (peak * 1e9)

        def mfu_if(products_s):
            return f"{100 * flops / (products_s + rest) / (peak * 1e9):.0f} %"

        lines = [
            f"- The step's FLOPs ({flops / 1e9:.1f} GFLOP) at {peak:.1f} GFLOP/s, the best of gemm_peak's shapes, "
            f"take {1e3 * flops / (peak * 1e9):.0f} ms; the step took {1e3 * step:.0f}.",
            f"- The timed products did {total_f / 1e9:.1f} GFLOP in {1e3 * total_s:.0f} ms "
            f"({total_f / total_s * 1e-9:.0f} GFLOP/s): {1e3 * (total_s - at_peak):.0f} ms more than at that peak. "
            f"Each shape alone, at gemm_peak's mean rate, would take {1e3 * alone_s:.0f} ms: the step's products run "
            f"{100 * abs(total_s / alone_s - 1):.0f} % {'slower' if total_s > alone_s else 'faster'} than the same "
            f"shapes repeated alone with their operands hot in the caches, and the shapes alone average {total_f / alone_s * 1e-9:.0f} GFLOP/s, "
            f"{100 * total_f / alone_s / (peak * 1e9):.0f} % of the best shape's best.",
            f"- The rest of the step (attention with its per-head products, the norms, GELU, the loss, AdamW) "
            f"took {1e3 * rest:.0f} ms. With every product at the peak and the rest as it is, MFU would be "
            f"{mfu_if(at_peak)}; with the products at their rates alone, {mfu_if(alone_s)}."]
        lost = sorted(lost + [(rest - (flops - total_f) / (peak * 1e9), "the rest of the step")], reverse=True)
        lines.append("- Where the time beyond the peak goes, the largest first (each item's time less its FLOPs at "
                     "the peak): " + "; ".join(f"{what} {1e3 * t:.0f} ms" for t, what in lost[:5]) + ".")
        budget = flops / (MFU_TARGET * peak * 1e9)  # the step time that is MFU_TARGET
        need = total_f / (budget - rest) * 1e-9 if budget > rest else float("inf")
        lines.append(
            f"- {100 * MFU_TARGET:.0f} % MFU is a {1e3 * budget:.0f} ms step. With the rest as it is, the products "
            + (f"would have to average {need:.0f} GFLOP/s ({100 * need / peak:.0f} % of the peak; they do "
               f"{total_f / total_s * 1e-9:.0f} in the step, {total_f / alone_s * 1e-9:.0f} alone)." if need <= peak else
               f"would have to beat the peak itself ({need:.0f} GFLOP/s): the rest must shrink too, to at most "
               f"{1e3 * (budget - at_peak):.0f} ms with every product at the peak."))
        if lib == "onednn_bf16":
            gib = 2 * model_counts(c)["matmul_params"] / 2**20
            lines.append(
                f"- Pre-packed weights (gemm_peak's \"pre-packed\" column: the bf16 weight re-laid once in oneDNN's "
                f"preferred layout) would take the products to {1e3 * packed_s:.0f} ms at those rates alone, MFU "
                f"{mfu_if(packed_s)}. The input gradient multiplies by Wᵀ, which needs a second packed copy: "
                f"{gib:.0f} MiB more per node, {(r['rss_mib'] + gib) / R['torch']['rss_mib']:.2f}× PyTorch's "
                f"peak RSS against the 0.3× target.")
        out += [f"\n### {label}: {1e3 * step:.0f} ms a step, MFU {100 * mfu(r, flops, peak):.1f} % of {peak:.1f} "
                f"GFLOP/s\n",
                table(["product", "library", "op M×N×K", "calls / step", "ms / step", "of the step",
                       "GFLOP/s in the step", "gemm_peak alone, mean (best)", "the same pre-packed, mean (best)",
                       "A → bf16 (ms / step)"], rows), ""] + lines
    if not out:
        return ""
    return "\n".join(["\n## Where the step goes, product by product (`lorad train --profile`)\n",
                      "Every product lorad's main thread calls, timed per shape over the measured steps (the "
                      "products attention runs per head inside its OpenMP threads are not timed apart: they are in "
                      "the rest, with the norms, GELU, softmax, the loss, AdamW and the memsets). \"gemm_peak alone\" "
                      "is the same shape's rate in the table of products below."] + out)


def report_io(R):
    lo, fu, to = R["lora"], R["full"], R["torch"]
    rows = [
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
    return table(["", "lorad LoRA", "lorad full", "PyTorch LoRA"], rows)


def report_profile(pr):
    return "\n".join([
        "\n## Where lorad's default LoRA step goes (perf record of setup + 2 steps)\n",
        f"The main thread runs the whole time ({pr['main_share']:.0f} % of all samples; it also takes its share "
        f"of every OpenMP region), so its profile is the run's wall time; the share of its samples by function "
        f"(`[JIT]` is oneDNN's generated product kernels, which perf sees without symbols):\n",
        table(["main thread", "object", "function"], [[f"{p:.1f} %", d, f"`{f}`"] for p, d, f in pr["rows"]]),
        f"\nThe other {pr['other_threads']} thread(s) (OpenMP's workers, which run oneDNN's products and lorad's "
        f"parallel kernels, and OpenBLAS's idle pool) by object, the share of their samples:\n",
        table(["other threads", "object"], [[f"{p:.1f} %", d] for p, d in pr["other_objs"]]),
    ])


def openblas_core(libs):
    m = re.search(r"\(core (\w+)\)", libs)
    return m.group(1) if m else "?"


def report(args, c, R):
    m, pk = R["machine"], R["peak"]
    k, tok = model_counts(c), c["batch"] * c["seq"]
    load = ", ".join(f"{x:.2f}" for x in m["load"])
    L = ["# lorad benchmark results\n",
         f"- **Command**: `{R['command']}`" + (" (smoke: a tiny model, numbers meaningless)" if args.smoke else ""),
         f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['mem']} RAM, Linux {m['kernel']}; load average "
         f"{load} at the start; {pk['libs']}",
         f"- **Date**: {m['date']}; **commit** {m['commit']}; {build_note(m)}",
         f"- **OpenBLAS core**: detects `{m['openblas_auto']}` here" +
         (f"; the benchmark sets `OPENBLAS_CORETYPE={m['openblas_set']}` (AVX-512 kernels) for PyTorch, gemm_peak "
          f"and `--gemm openblas`, so the baseline does not run OpenBLAS's generic kernels" if m["openblas_set"]
          else ""),
         f"- **Model**: GPT-2 shape, {c['layers']} layers, d={c['dim']}, {c['heads']} heads, vocab {c['vocab']}, "
         f"{c['positions']} positions: {k['params'] / 1e6:.2f} M parameters ({k['matmul_params'] / 1e6:.2f} M in "
         f"products, LM head tied), random weights from `lorad init-model`, F32 on disk",
         f"- **Step**: batch {c['batch']} × seq {c['seq']} = {tok} tokens; LoRA r={c['rank']} α={c['alpha']:g} on "
         f"{c['targets']} ({k['lora_params']:,} trainable parameters); AdamW, clip 1; {c['threads']} threads "
         f"(OpenMP, and OpenBLAS's where it runs); {c['warmup']} warm-up step not counted",
         "\n## Targets (issue #8)\n", report_targets(R, c),
         "\n## Training step\n", report_step(R, c),
         report_products(R, c),
         "\n## Memory per node, 1 and 2 ranks\n", report_memory(R, c),
         f"\nPSS sampled every {c['mem_interval']:g} s from `/proc/PID/smaps_rollup` of each lorad rank (the "
         f"children of mpirun) or of the one process; shared pages (the mapped model file) count once per node. "
         f"Anon is private memory (activations, gradients, converted weights), file the mapped files (the model, "
         f"libraries), shmem shared memory (Open MPI's segments).",
         f"\n## Matrix products at the model's shapes ({c['threads']} threads, row-major as lorad calls them, "
         f"through worker/gemm.h)\n", report_peaks(R),
         f"\nGFLOP/s, best of the repetitions (mean in brackets); bf16 applies to the frozen-weight products only. "
         f"OpenBLAS ran its `{openblas_core(pk['libs'])}` kernels (DYNAMIC_ARCH's choice on this CPU; PyTorch "
         f"loads the same library). Other processes used {100 * pk['other_cpu']:.1f} % of the cores meanwhile.",
         "\n## Checkpoints and loading (lorad, default LoRA run)\n", report_io(R)]
    if R.get("profile"):
        L.append(report_profile(R["profile"]))
    L.append("\nbench/README.md explains how each number is measured and the FLOP formulas.")
    return "\n".join(L) + "\n"


def numbers_missing(R):
    """The smoke check: every part must have produced a finite number (never a timing)."""
    run_keys = ["step_s", "tokens_per_s", "rss_mib", "pss_peak_mib"]
    need = {"lora": run_keys + ["setup_s", "ckpt_save_s", "inspect_s", "resume_setup_s", "cold_setup_s",
                                "cold_extra_s", "ckpt_mb"],
            "lora_openblas": run_keys, "lora_bf16": run_keys, "torch": run_keys + ["setup_s"],
            "full": run_keys + ["ckpt_save_s", "inspect_s"],
            "mpi": run_keys + ["comm_s", "comm_frac", "allreduce_bytes"],
            "mpi_bf16": run_keys + ["comm_s", "comm_frac", "allreduce_bytes"]}
    bad = [f"peak.{lib} = {v!r}" for lib, v in R.get("peak", {}).get("peaks", {lib: None for lib in LIBS}).items()
           if not isinstance(v, (int, float)) or not math.isfinite(v)]
    for part, keys in need.items():
        for key in keys:
            v = (R.get(part) or {}).get(key)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                bad.append(f"{part}.{key} = {v!r}")
    for part in ("mpi", "mpi_bf16"):
        if len((R.get(part) or {}).get("rank_rss_mib", [])) != 2:
            bad.append(f"{part}.rank_rss_mib: not one number per rank")
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


PARTS = [
    ("peak", "matrix-product peaks (OpenBLAS, oneDNN f32, oneDNN bf16)", part_peak),
    ("lora", "lorad LoRA f32 (oneDNN)", part_lora),
    ("lora_openblas", "lorad LoRA f32 --gemm openblas", part_variant("lora-openblas", "variant_steps",
                                                                       ["--gemm", "openblas"])),
    ("lora_bf16", "lorad LoRA --base-dtype bf16", part_variant("lora-bf16", "variant_steps",
                                                                 ["--base-dtype", "bf16"])),
    ("torch", "PyTorch LoRA", part_torch),
    ("full", "lorad --mode full", part_full),
    ("mpi", "lorad LoRA f32 on 2 ranks", part_variant("mpi2", "mpi_steps", ranks=2)),
    ("mpi_bf16", "lorad LoRA bf16 on 2 ranks", part_variant("mpi2-bf16", "mpi_steps", ["--base-dtype", "bf16"],
                                                            ranks=2)),
]


def main():
    ap = argparse.ArgumentParser(description="lorad's benchmark (bench/README.md)")
    ap.add_argument("--smoke", action="store_true", help="a tiny model, every part quickly; results to the workdir")
    ap.add_argument("--lorad", help="the lorad binary (default: build-bench/lorad or build/lorad)")
    ap.add_argument("--peak", help="the gemm_peak binary (default: bench/gemm_peak next to lorad's build)")
    ap.add_argument("--workdir", help="scratch: model, data, runs (default /tmp/lorad-bench[-smoke])")
    ap.add_argument("--results", help="where the table goes (default bench/RESULTS.md, or WORKDIR/RESULTS.md)")
    ap.add_argument("--no-profile", action="store_true", help="skip the perf profile (never run with --smoke)")
    ap.add_argument("--retries", type=int, default=2, help="measure a part again when other processes took "
                    "over 10 %% of the cores meanwhile, up to this many times (default 2)")
    ap.add_argument("--max-wait", type=float, help="seconds to wait, before each part, for the machine to be "
                    "idle (default 600; 0 with --smoke)")
    args = ap.parse_args()
    args.lorad = os.path.abspath(args.lorad or default_binary("build-bench/lorad", "build/lorad"))
    args.peak = os.path.abspath(args.peak or os.path.join(os.path.dirname(args.lorad), "bench", "gemm_peak"))
    args.workdir = os.path.abspath(args.workdir or ("/tmp/lorad-bench-smoke" if args.smoke else "/tmp/lorad-bench"))
    args.results = os.path.abspath(args.results or (os.path.join(args.workdir, "RESULTS.md") if args.smoke
                                                    else os.path.join(HERE, "RESULTS.md")))
    for b in (args.lorad, args.peak):
        if not os.access(b, os.X_OK):
            sys.exit(f"run.py: {b}: not found (hint: cmake --build BUILD; or pass --lorad / --peak)")
    os.makedirs(args.workdir, exist_ok=True)
    c = CONFIGS["smoke" if args.smoke else "full"]
    if args.max_wait is None:
        args.max_wait = 0.0 if args.smoke else 600.0
    argv = " ".join(os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(ROOT) else a for a in sys.argv[1:])
    R = {"command": f"/usr/bin/python3 bench/run.py {argv}".strip(), "config": c}
    t0 = time.monotonic()
    parts = PARTS + ([] if args.smoke or args.no_profile else
                     [("profile", "perf profile of lorad LoRA (default run)", part_profile)])
    try:
        R["machine"] = part_machine(args)
        R["machine"]["openblas_auto"], R["machine"]["openblas_set"] = openblas_tune()
        model, data = model_dir(args.workdir, c, args.lorad), data_file(args.workdir, c)
        for key, what, fn in parts:
            R[key] = measure(args, what, lambda: fn(args, c, model, data))
    except BenchError as e:
        sys.exit(f"run.py: {e}")
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    text = report(args, c, R)
    print(text)
    kept = kept_sections(args.results)
    with open(args.results, "w") as f:
        f.write(text + kept)
    log(f"wrote {args.results} ({time.monotonic() - t0:.0f} s)")
    bad = numbers_missing(R)
    if bad:
        print("run.py: parts without a number: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
