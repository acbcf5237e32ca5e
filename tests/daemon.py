"""daemon.py: `lorad serve` under real mpirun ranks, driven by the real client commands.

Cases (--case):
  e2e      2 ranks. Three jobs on one base: the second is cancelled while it runs (it
           ends CANCELLED with a checkpoint), the first and third SUCCEED; the first's
           adapter and metrics equal a plain `mpirun lorad train` of the same flags; the
           third ran on the resident base (no reload: one base load in all). A job on
           garbage data and one whose loss turns NaN FAIL with their errors, and the
           daemon runs the next job. logs --follow streams a queued job's log until it
           ends. After a shutdown, a restarted daemon lists the same records.
  kill     kill -9 of the whole daemon (mpirun and ranks) while a job checkpoints every
           step; the restarted daemon queues it again, resumes it from its checkpoint,
           and it ends with the adapter bytes of an uninterrupted run.
  signal   SIGTERM to mpirun while a job runs: the job checkpoints within a few steps of
           the signal, the daemon exits, and the record says QUEUED; the next daemon
           finishes the job.
  rank_signal  SIGTERM to rank 1 alone while a job runs: the job checkpoints within a few
           steps, the whole daemon stops (the job QUEUED, no later job started on the
           rank's standing request), and the next daemon finishes the job.
The kill and signal cases pace the job (LORAD_FAULT ...:slow:MS, every step lasts at
least MS) so that it is still running when the kill or the signal comes, however fast
the machine.
  hostile  a job's step held (rank 1 stopped with SIGSTOP, so rank 0's training thread
           waits in the step's all-reduce for as long as the test wants, on any machine):
           50 concurrent clients get 10 status answers each, all showing the job running at
           that step, so no answer waited for a step; a silent client and one that sent
           half a frame, connected meanwhile, block no one; garbage, oversized and
           other-version frames get an error reply; TCP (bound to 127.0.0.1 by default)
           refuses a wrong token and serves the right one. Then, the step released (the
           SIGCONT that ends rank 1's stop is no stop request), 500 more answers while the
           job trains on. The socket is 0600 in a 0700 directory.
           The frames are written here by hand from the protobuf wire format,
           independently of lorad's code. Latencies are printed, never asserted.
"""
import json
import os
import re
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import torch_gpt2 as gpt2  # noqa: E402

CFG = gpt2.GPT2Config(vocab_size=61, n_positions=32, n_embd=32, n_head=4, n_layer=2)
T, G = 16, 4
PACE_MS = 100  # the least a step of a paced job lasts
PACED = {"LORAD_FAULT": f"rank:0:step:1:slow:{PACE_MS}"}


class Daemon:
    """One `mpirun -np RANKS lorad serve` on a state directory, and its clients."""

    def __init__(self, lorad, state, ranks=2, extra=(), env=None):
        self.lorad, self.state = lorad, state
        self.sock = os.path.join(state, "lorad.sock")
        self.log = open(os.path.join(os.path.dirname(state), "serve.log"), "a")
        # SIGTERM to mpirun reaches the ranks as SIGCONT at once (the stop), SIGTERM after this
        # many seconds (1 by default) and SIGKILL as long after: the running job's step and
        # checkpoint must fit in it on a loaded machine
        cmd = ["mpirun", "--oversubscribe", "--mca", "odls_base_sigkill_timeout", "5", "-np", str(ranks), lorad,
               "serve", "--state", state] + list(extra)
        print("+ " + " ".join(cmd), flush=True)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, start_new_session=True,
                                     env=h.mpi_env(env))
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            p = self.client("status")
            if p.returncode == 0:
                return
            time.sleep(0.1)
        self.kill9()
        raise RuntimeError(f"the daemon did not come up (exit {self.proc.poll()}): {p.stderr.strip()[-500:]}")

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
    gpt2.write_model_dir(model, CFG, gpt2.random_gpt2_weights(CFG, rng))
    data = os.path.join(work, "train.bin")
    h.write_bin(data, rng.integers(0, CFG.vocab_size, 30 * T + 1))
    return model, data


def flags(model, data, steps, extra=()):
    return ["--model", model, "--data", data, "--steps", steps, "--batch", G, "--micro-batch", 2, "--seq", T,
            "--lr", 0.01, "--targets", "q,v", "--rank", 4, "--dropout", 0.1, "--seed", 3, "--threads", 1,
            "--log-every", 1] + list(extra)


def straight(fails, lorad, work, fl, name="straight"):
    """The same job by `mpirun -np 2 lorad train`: its output directory."""
    out = os.path.join(work, name)
    p = h.run_lorad_mpi(lorad, 2, ["train"] + [str(a) for a in fl] + ["--out", out])
    fails.check(p.returncode == 0, f"lorad train exited {p.returncode}: {p.stderr[-400:]}")
    return out


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
        j4n = d.submit([a if a != 0.01 else 1e30 for a in flags(model, data, 5)])  # a NaN loss soon
        j5 = d.submit(flags(model, data, 3))
        fails.check([j1, j2, j3, j4, j4n, j5] == [1, 2, 3, 4, 5, 6], f"job ids {[j1, j2, j3, j4, j4n, j5]}")
        follow = subprocess.Popen([lorad, "logs", str(j5), "--follow", "--socket", d.sock], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        queued = d.json("status", j3)
        fails.check(queued["state"] == "queued", f"job 3 while job 2 runs: {queued['state']}")
        d.wait(j2, lambda r: r["state"] == "running" and r["step"] >= 3)
        cancel = d.client("cancel", j2)
        fails.check(cancel.returncode == 0, f"cancel: {cancel.stderr.strip()}")
        recs = {j: d.wait(j, lambda r: r["state"] in ENDED) for j in (j1, j2, j3, j4, j4n, j5)}
        want = {j1: "succeeded", j2: "cancelled", j3: "succeeded", j4: "failed", j4n: "failed", j5: "succeeded"}
        for j, s in want.items():
            fails.check(recs[j]["state"] == s, f"job {j} ended {recs[j]['state']}, expected {s}: {recs[j]['error']}")
        fails.check("garbage.bin" in recs[j4]["error"], f"job 4's error does not name its data: {recs[j4]['error']!r}")
        fails.check("loss is" in recs[j4n]["error"] and "nan" in recs[j4n]["error"], f"job 5's error is not its NaN loss: {recs[j4n]['error']!r}")
        out2 = recs[j2]["spec"]["out"]
        fails.check(os.path.exists(os.path.join(out2, "checkpoints", "latest")), "the cancelled job left no checkpoint")
        fails.check(not os.path.exists(os.path.join(out2, "adapter")), "the cancelled job wrote a final adapter")
        fails.check(recs[j2]["step"] < 100000, "the cancelled job ran to its end")
        logs = d.client("logs", j2)
        fails.check(": cancelled" in logs.stdout and "checkpoint" in logs.stdout,
                    f"logs of the cancelled job: {logs.stdout[-300:]!r}")
        followed, err = follow.communicate(timeout=60)
        fails.check(follow.returncode == 0 and "step 3/3" in followed and "wrote" in followed,
                    f"logs --follow of a queued job until its end: exit {follow.returncode}, {followed[-300:]!r} {err}")
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
        fails.check(h.adapter_bytes(out1) == h.adapter_bytes(plain), "the daemon's adapter differs from lorad train's")
        fails.check(h.metrics_rows(out1) == h.metrics_rows(plain), "the daemon's metrics differ from lorad train's")
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
        fails.check(d.submit(flags(model, data, 2)) == 7, "ids did not continue after a restart")
        d.client("shutdown")
        fails.check(d.end() == 0, "the restarted daemon did not exit 0 after shutdown")
    finally:
        if d.proc.poll() is None:
            d.kill9()


def finish_after_restart(fails, lorad, work, state, j, fl):
    """A new daemon on STATE finishes job J on its second attempt, with the adapter bytes
    of an uninterrupted `lorad train` of flags FL. Returns the job's record."""
    d = Daemon(lorad, state)
    try:
        rec = d.wait(j, lambda r: r["state"] in ENDED, timeout=300)
        fails.check(rec["state"] == "succeeded", f"the resumed job ended {rec['state']}: {rec['error']}")
        fails.check(rec["attempts"] == 2, f"attempts {rec['attempts']}, expected 2")
        d.client("shutdown")
        d.end()
    finally:
        if d.proc.poll() is None:
            d.kill9()
    plain = straight(fails, lorad, work, fl)
    fails.check(h.adapter_bytes(rec["spec"]["out"]) == h.adapter_bytes(plain), "the resumed job's adapter differs from an uninterrupted run")
    return rec


def start_paced(lorad, work, steps, extra, step):
    """A daemon on WORK/state running a paced job of STEPS steps (more flags EXTRA), once
    the job has done STEP of them: (the daemon, its state, the job's id, its flags, the
    steps it had done)."""
    model, data = inputs(work)
    fl = flags(model, data, steps, extra)
    state = os.path.join(work, "state")
    d = Daemon(lorad, state, env=PACED)
    try:
        j = d.submit(fl)
        at = d.wait(j, lambda r: r["step"] >= step)["step"]
    except BaseException:
        d.kill9()
        raise
    return d, state, j, fl, at


def case_kill(fails, lorad, work):
    # paced: the 400 steps last at least 40 s, and the kill comes after 20
    d, state, j, fl, _ = start_paced(lorad, work, 400, ["--ckpt-every", 1, "--keep", 2], 20)
    d.kill9()
    rec = finish_after_restart(fails, lorad, work, state, j, fl)
    logs = open(os.path.join(rec["spec"]["out"], "train.log")).read()
    fails.check("resuming from" in open(os.path.join(work, "serve.log"), errors="replace").read(),
                f"the second attempt did not resume from a checkpoint: {logs[-300:]!r}")


def signal_stops_daemon(fails, lorad, work, target, stopped):
    """A paced job, SIGTERM to TARGET(daemon) (a pid) once it has done 5 steps: the job must
    log STOPPED (a regex with the step as its group) within 5 steps of the signal, the
    daemon must exit without starting another job, and the next daemon finish the job.
    Returns the daemon's log."""
    # once mpirun has its SIGTERM it stops draining the ranks' stderr: a progress line every
    # step could fill the pipe before the stop, and the rank would block there until SIGKILL.
    # Paced, the 2000 steps last at least 200 s; the signal comes after 5.
    d, state, j, fl, at = start_paced(lorad, work, 2000, ["--ckpt-every", 500, "--log-every", 50], 5)
    try:
        os.kill(target(d), signal.SIGTERM)
        print(f"SIGTERM at step {at}; mpirun exited {d.end()}", flush=True)
    finally:
        if d.proc.poll() is None:
            d.kill9()
    with open(os.path.join(state, "jobs", str(j), "train.log")) as f:
        log = f.read()
    stop = re.search(stopped, log)
    # a step lasts at least PACE_MS: a stop within 5 steps is one within half a second
    fails.check(stop and at <= int(stop.group(1)) <= at + 5,
                f"the job did not stop with a checkpoint within 5 steps of the signal at {at}: {log[-300:]!r}")
    with open(os.path.join(work, "serve.log"), errors="replace") as f:
        served = f.read()
    fails.check(served.count(" starts\n") == 1, f"the daemon started another job after the stop: {served[-400:]!r}")
    with open(os.path.join(state, "jobs", str(j), "job.pb"), "rb") as f:
        fails.check(f.read(), "no job record")
    finish_after_restart(fails, lorad, work, state, j, fl)
    return served


def case_signal(fails, lorad, work):
    served = signal_stops_daemon(fails, lorad, work, lambda d: d.proc.pid, r"stopped at step (\d+) on SIGCONT")
    fails.check("daemon stopped on SIGCONT" in served, "the daemon did not say it stopped on mpirun's SIGCONT")


def case_rank_signal(fails, lorad, work):
    signal_stops_daemon(fails, lorad, work, lambda d: rank_pid(d, 1), r"stopped at step (\d+): a signal on another rank")


# ---- the control protocol by hand (proto/lorad.proto: Request, Response, JobRecord) ----
STATUS, SUBMIT, LIST, CANCEL, LOGS, SHUTDOWN = range(6)
RUNNING = 1


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def request(command, job=0, token=b"", version=1):
    msg = varint(1 << 3) + varint(version) + varint(2 << 3) + varint(command)
    if token:
        msg += varint(3 << 3 | 2) + varint(len(token)) + token
    if job:
        msg += varint(5 << 3) + varint(job)
    return struct.pack(">I", len(msg)) + msg


def fields(buf):
    """field number -> list of values (ints for varints and fixed, bytes for strings)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def recv_frame(s, timeout=10):
    """One response frame's fields, or None when the daemon hung up first."""
    s.settimeout(timeout)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return fields(buf[4:4 + struct.unpack(">I", buf[:4])[0]])


def error_of(resp):
    return resp.get(3, [b""])[0].decode() if resp else "(hung up)"


def unix_conn(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def rank_pid(d, rank):
    """The pid of the daemon's rank RANK (the lorad below mpirun whose environment says so)."""
    want = f"OMPI_COMM_WORLD_RANK={rank}".encode()
    for pid in descendants(d.proc.pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if want in env and b"serve" in cmd:
            return pid
    raise RuntimeError(f"no rank {rank} below mpirun {d.proc.pid}")


class HeldStep:
    """Rank 1 stopped (SIGSTOP) while a job trains: rank 0's training thread waits in the
    step's all-reduce until the test lets rank 1 go on (SIGCONT), however fast or slow the
    machine, so that the job's step cannot advance by more than the one in flight. The
    hold lasts at least HOLD_MIN_S: lorad takes a SIGCONT after a silence of over a second
    for the end of a stop, and any other for mpirun's request to stop the job
    (coordinator/signals.c); a slower machine only holds it longer."""

    HOLD_MIN_S = 2.0

    def __init__(self, d):
        self.pid = rank_pid(d, 1)

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        self.since = time.monotonic()
        return self

    def __exit__(self, *exc):
        time.sleep(max(0.0, self.since + self.HOLD_MIN_S - time.monotonic()))
        os.kill(self.pid, signal.SIGCONT)


STALL_S = 60  # no answer at all for this long: the server is stuck (only a hang gets near)


def poll_clients(fails, sock_path, n_clients, answers, job):
    """N_CLIENTS connections each asking status of JOB until it has ANSWERS answers, driven
    by one selector. Every answer must be ok and show the job running. Returns every
    answer's latency (from the request's send to its last byte) and the job's step in each."""
    sel, conns, lat, steps = selectors.DefaultSelector(), [], [], []
    req = request(STATUS, job=job)
    for _ in range(n_clients):
        c = unix_conn(sock_path)
        c.setblocking(False)
        conns.append({"s": c, "buf": b"", "sent": 0.0, "next": time.monotonic(), "got": 0})
        sel.register(c, selectors.EVENT_READ, conns[-1])
    bad, last = 0, time.monotonic()
    while any(c["got"] < answers for c in conns):
        now = time.monotonic()
        if now - last > STALL_S:
            fails.add(f"no status answer for {STALL_S} s, after {len(lat)} of {n_clients * answers}")
            break
        for c in conns:
            if c["got"] < answers and not c["sent"] and now >= c["next"]:
                c["s"].sendall(req)
                c["sent"] = time.monotonic()
        for key, _ in sel.select(timeout=0.005):
            c = key.data
            c["buf"] += c["s"].recv(65536)
            b = c["buf"]
            if len(b) >= 4 and len(b) >= 4 + struct.unpack(">I", b[:4])[0]:
                last = time.monotonic()
                lat.append(last - c["sent"])
                resp = fields(b[4:])
                rec = fields(resp[4][0]) if resp.get(2) == [1] and 4 in resp else {}
                bad += rec.get(2, [0])[0] != RUNNING
                steps.append(rec.get(8, [0])[0])
                c["buf"], c["sent"], c["next"], c["got"] = b"", 0.0, last + 0.02, c["got"] + 1
    for c in conns:
        c["s"].close()
    fails.check(bad == 0, f"{bad} status answers were not ok or did not show the job running")
    return lat, steps


def check_held_answers(fails, d, j):
    """While a step of job J is held: a silent client and one that sent half a frame are
    connected, and 50 concurrent clients get 10 status answers each, all showing the job
    running at the held step (or the one in flight when rank 1 stopped)."""
    silent = unix_conn(d.sock)
    half = unix_conn(d.sock)
    half.sendall(struct.pack(">I", 100) + b"\x08\x01")
    lat, steps = poll_clients(fails, d.sock, 50, 10, j)
    silent.close()
    half.close()
    lat.sort()
    fails.check(len(lat) == 500, f"{len(lat)} of the 500 status answers came")
    if not lat:
        return
    print(f"{len(lat)} status answers to 50 clients during a held step (the job at steps {sorted(set(steps))}): "
          f"median {1e3 * lat[len(lat) // 2]:.2f} ms, max {1e3 * lat[-1]:.2f} ms", flush=True)
    fails.check(max(steps) - min(steps) <= 1,
                f"the job's step moved from {min(steps)} to {max(steps)} while rank 1 was stopped")


def check_hostile_frames(fails, d):
    """Garbage, oversized, empty and other-version frames get an error reply, then a hang-up."""
    hostile = {
        "garbage": struct.pack(">I", 60) + bytes(range(200, 255)) + b"\xff" * 5,
        "oversized": struct.pack(">I", 0x7FFFFFFF) + b"\x08\x01",
        "empty": struct.pack(">I", 0),
        "version": request(STATUS, version=99),
    }
    expect = {"garbage": "not a lorad.Request", "oversized": "bytes", "empty": "bytes", "version": "version 99"}
    for name, frame in hostile.items():
        with unix_conn(d.sock) as c:
            c.sendall(frame)
            resp = recv_frame(c)
            fails.check(resp is not None and resp.get(2, [0]) == [0] and expect[name] in error_of(resp),
                        f"{name} frame: {error_of(resp)!r}")
            fails.check(recv_frame(c, timeout=5) is None, f"the daemon kept the connection of a {name} frame")


def check_tcp(fails, lorad, port, token, j):
    """TCP refuses a wrong token and a missing one, and serves the right one."""
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(request(STATUS, job=j, token=b"wrong"))
        resp = recv_frame(c)
        fails.check("token" in error_of(resp), f"wrong token: {error_of(resp)!r}")
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(request(STATUS, job=j))
        fails.check("token" in error_of(recv_frame(c)), "a TCP request without a token was served")
    p = subprocess.run([lorad, "status", str(j), "--connect", f"127.0.0.1:{port}", "--token-file", token, "--json"],
                       capture_output=True, text=True, timeout=30)
    fails.check(p.returncode == 0 and json.loads(p.stdout or "{}").get("state") == "running",
                f"status over TCP with the token: {p.stderr.strip()}")


def case_hostile(fails, lorad, work):
    model, data = inputs(work)
    token = os.path.join(work, "token")
    with open(token, "w") as f:
        f.write("s3cret-token\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = os.path.join(work, "state")
    d = Daemon(lorad, state, extra=["--listen", str(port), "--token-file", token])
    try:
        mode = stat.S_IMODE(os.stat(d.sock).st_mode)
        fails.check(mode == 0o600, f"the socket has mode {mode:o}, expected 600")
        mode = stat.S_IMODE(os.stat(state).st_mode)
        fails.check(mode == 0o700, f"the socket's directory has mode {mode:o}, expected 700")
        ss = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        local = [line.split()[3] for line in ss.splitlines() if line.strip()]
        fails.check(local == [f"127.0.0.1:{port}"], f"TCP is not bound to 127.0.0.1 alone: {ss!r}")
        j = d.submit(flags(model, data, 10 ** 6))
        d.wait(j, lambda r: r["state"] == "running" and r["step"] >= 2)
        with HeldStep(d):
            check_held_answers(fails, d, j)
            check_hostile_frames(fails, d)
            check_tcp(fails, lorad, port, token, j)
        # and with the steps going on again: every answer comes, and shows the job running
        lat, steps = poll_clients(fails, d.sock, 50, 10, j)
        print(f"{len(lat)} status answers while the job trains on (steps {min(steps)} to {max(steps)})", flush=True)
        rec = d.json("status", j)
        fails.check(rec["state"] == "running", f"the job after the hostile clients: {rec['state']}")
        fails.check(d.client("shutdown", "--now").returncode == 0, "shutdown --now failed")
        d.end()
        with open(os.path.join(work, "serve.log"), errors="replace") as f:
            fails.check("daemon stopped on request" in f.read(), "the daemon did not stop on request")
    finally:
        if d.proc.poll() is None:
            d.kill9()


if __name__ == "__main__":
    h.run_driver("daemon", {"e2e": case_e2e, "kill": case_kill, "signal": case_signal,
                          "rank_signal": case_rank_signal, "hostile": case_hostile})
