"""slurm.py: deploy/slurm/train.sbatch, the committed script, on a real Slurm on this host.

Set-up: installs slurm-wlm and munge from Debian when they are missing (apt-get, as root),
then, in a temporary directory, writes a munge key and a single-node slurm.conf for this
host (proctrack/pgid, task/none, select/cons_tres, JobRequeue=1, MailProg=/bin/true) and
starts munged (its socket in that directory), slurmctld and slurmd in the foreground as
children of this script. Every daemon started here is stopped at the end, also on failure.

Case train_requeue: the bundled example (examples/base, LoRA on the Devil's Dictionary)
runs as `sbatch --ntasks=2 train.sbatch`, and is preempted twice while it trains:
  1. `scancel --signal=USR1 --batch` (what Slurm sends 120 s before the time limit): the
     script's trap forwards USR1, lorad checkpoints and exits 75, the script requeues;
  2. `scontrol requeue` (an administrator's or a preemption's requeue): the job gets TERM,
     checkpoints, and Slurm requeues it; the run after it must resume past that point.
After each requeue the test lifts the 120 s BeginTime hold (`scontrol update StartTime=now`).
The job's runs are paced (LORAD_FAULT ...:slow:MS: every step lasts at least PACE_MS), so
that each preemption finds the job training however fast the machine, and each stop must
come within STOP_WITHIN steps of the preemption.
The job must end COMPLETED with exit 0 after 2 restarts (SLURM_RESTART_COUNT 1 then 2
in its output), resume twice from the checkpoints of the preemptions, and its metrics rows
(but timings) and adapter_model.safetensors must equal those of an uninterrupted
`mpirun -np 2 lorad train` with the same flags.

Case serve: deploy/slurm/serve.sbatch starts the daemon on the job's 2 tasks; a client
submits a short LoRA job on the bundled base through its socket and it succeeds; scancel
ends the job (CANCELLED, the script sees mpirun exit); a second serve.sbatch on the same
state directory, as after a requeue, reports that job as succeeded.
"""
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = {w: os.path.join(REPO, "deploy", "slurm", f"{w}.sbatch") for w in ("train", "serve")}
STEPS = 60
USR1_AT, REQUEUE_AT = 8, 30  # metrics rows (steps done) before each preemption
PACE_MS, STOP_WITHIN = 200, 5  # the least a step lasts; so a stop within 5 steps is one within 1 s


def expect(fails, ok, what, detail=""):
    """Prints one checked fact; a false one is a failure, reported with DETAIL."""
    print(f"{'ok' if ok else 'FAIL'}: {what}" + ("" if ok or not detail else f": {detail}"), flush=True)
    if not ok:
        fails.msgs.append(what)
    return ok


def ensure_packages():
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return
    print("slurm: installing slurm-wlm and munge from Debian", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"],
                   check=True, env=env)


SLURM_CONF = """# single-node Slurm for tests/slurm.py
ClusterName=loradtest
SlurmctldHost={host}
SlurmctldPort={port}
SlurmdPort={dport}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/ctld
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
MailProg=/bin/true
ReturnToService=2
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Slurm:
    """munged, slurmctld and slurmd on this host, configured in a temporary directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lorad-slurm-")
        os.chmod(self.dir, 0o755)  # munge clients of every user must reach the socket
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.procs = []

    def start(self, name, cmd):
        log = open(os.path.join(self.dir, f"{name}.out"), "w")
        print("+ " + " ".join(cmd), flush=True)
        self.procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)))

    def __enter__(self):
        try:
            self._start_all()
        except BaseException:
            self.__exit__(*sys.exc_info())  # a daemon that started must not outlive a failed start
            raise
        return self

    def _start_all(self):
        d, sock = self.dir, os.path.join(self.dir, "munge.socket")
        for sub in ("ctld", "spool"):
            os.makedirs(os.path.join(d, sub))
        key = os.path.join(d, "munge.key")
        subprocess.run(["mungekey", "--create", "--keyfile", key], check=True)
        self.start("munged", ["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                              f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                              f"--seed-file={d}/munged.seed"])
        base = 20000 + os.getpid() % 20000
        host = socket.gethostname().split(".")[0]  # slurmd knows itself by the short name
        with open(self.conf, "w") as f:
            f.write(SLURM_CONF.format(host=host, port=base, dport=base + 1, sock=sock, d=d, cpus=os.cpu_count()))
        wait_until(lambda: os.path.exists(sock), 20, "munged's socket")
        self.start("slurmctld", ["slurmctld", "-D", "-f", self.conf])
        self.start("slurmd", ["slurmd", "-D", "-f", self.conf])
        wait_until(lambda: self.run(["sinfo", "-h", "-o", "%T"]).stdout.strip() == "idle", 60, "an idle node")

    def __exit__(self, *exc):
        self.run(["scancel", "--full", "-u", pwd.getpwuid(os.getuid()).pw_name])
        for name, p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            print(f"slurm: stopped {name} (exit {p.returncode})", flush=True)
        if exc[0] is not None:
            for log in ("slurmctld.log", "slurmd.log"):
                path = os.path.join(self.dir, log)
                if os.path.exists(path):
                    print(f"--- {log} (tail)\n" + open(path).read()[-2000:], flush=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, cmd):
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env)

    def job(self, jobid):
        """scontrol's fields of JOBID as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", jobid]).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_until(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def train_flags(model, data):
    return ["--model", model, "--data", data, "--targets", "c_attn", "--rank", 8, "--alpha", 16,
            "--steps", STEPS, "--batch", 8, "--seq", 128, "--lr", 2e-3, "--warmup", 5, "--log-every", 10,
            "--ckpt-every", 1000]


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


def preempt(fails, slurm, jobid, out, after_rows, how, restarts):
    """Waits for AFTER_ROWS metrics rows, preempts with HOW, waits for the requeue, releases it.
    Returns the rows done at the preemption, or None."""
    wait_until(lambda: h.steps_logged(out) >= after_rows or slurm.job(jobid).get("JobState") in ENDED, 240,
               f"{after_rows} steps of job {jobid}")
    if not expect(fails, h.steps_logged(out) >= after_rows, f"job {jobid} ran {after_rows} steps",
                  str(slurm.job(jobid))):
        return None
    cmd = {"usr1": ["scancel", "--signal=USR1", "--batch", jobid], "requeue": ["scontrol", "requeue", jobid]}[how]
    at = h.steps_logged(out)
    print(f"+ {' '.join(cmd)}   (at {at} steps)", flush=True)
    p = slurm.run(cmd)
    expect(fails, p.returncode == 0, f"{' '.join(cmd)} succeeded", p.stderr.strip())
    wait_until(lambda: slurm.job(jobid).get("Restarts") == str(restarts) and
               slurm.job(jobid).get("JobState") == "PENDING", 180, f"job {jobid} requeued ({how})")
    expect(fails, True, f"after {how} the job is PENDING with Restarts={restarts}")
    # slurmctld refuses to start a job in the same second its credential was revoked
    # (the requeue), so lift the 120 s BeginTime hold only after that second.
    time.sleep(2)
    p = slurm.run(["scontrol", "update", f"jobid={jobid}", "StartTime=now"])
    return at if expect(fails, p.returncode == 0, "released the requeued job", p.stderr.strip()) else None


def prep_devil(fails, lorad, work):
    data = os.path.join(work, "devil-train.h5")
    p = h.run_lorad(lorad, ["prep", "--text", os.path.join(REPO, "examples", "corpora", "devil-train.txt"),
                            "--out", data])
    return data if expect(fails, p.returncode == 0, "lorad prep of the Devil's Dictionary", p.stderr.strip()) else None


def sbatch(fails, slurm, which, log, env, args=()):
    """Submits the committed deploy/slurm/WHICH.sbatch on 2 tasks; returns the job id or None."""
    cmd = ["sbatch", "--parsable", "--ntasks=2", f"--output={log}", f"--chdir={os.path.dirname(log)}",
           SBATCH[which]] + [str(a) for a in args]
    print("+ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(slurm.env, **h.MPI_ENV, **env))
    if not expect(fails, p.returncode == 0, f"sbatch accepted {which}.sbatch", p.stderr.strip()):
        return None
    return p.stdout.strip().split(";")[0]


def case_train_requeue(fails, lorad, work):
    data = prep_devil(fails, lorad, work)
    if not data:
        return
    flags = train_flags(os.path.join(REPO, "examples", "base"), data)
    straight = os.path.join(work, "straight")
    p = h.run_lorad_mpi(lorad, 2, ["train"] + flags + ["--out", straight, "--resume", "auto"], timeout=600)
    if not expect(fails, p.returncode == 0, "the uninterrupted 2-rank run", p.stderr.strip()[-400:]):
        return
    ensure_packages()
    with Slurm() as slurm:
        out, log = os.path.join(work, "job"), os.path.join(work, "job.out")
        jobid = sbatch(fails, slurm, "train", log, {"LORAD": lorad, "LORAD_OUT": out,
                                                    "LORAD_FAULT": f"rank:0:step:1:slow:{PACE_MS}"}, flags)
        if not jobid:
            return
        usr1_at = preempt(fails, slurm, jobid, out, USR1_AT, "usr1", 1)
        requeue_at = usr1_at and preempt(fails, slurm, jobid, out, REQUEUE_AT, "requeue", 2)
        wait_until(lambda: slurm.job(jobid).get("JobState") in ENDED, 300, f"job {jobid} to end")
        info = slurm.job(jobid)
        text = open(log).read()
        quiet = "".join(line for line in text.splitlines(True) if not line.startswith("step "))
        print(f"--- {log} (but the progress lines)\n{quiet}", flush=True)
        expect(fails, info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0",
               f"job ended COMPLETED with exit 0:0 (got {info.get('JobState')} {info.get('ExitCode')})")
        expect(fails, info.get("Restarts") == "2", f"job restarted twice (Restarts={info.get('Restarts')})")
        runs = re.split(r"(?m)^(?=train\.sbatch: job )", text)[1:]
        expect(fails, [re.search(r"restart (\d+),", r).group(1) for r in runs] == ["0", "1", "2"],
               "three runs of the script, SLURM_RESTART_COUNT unset, then 1, then 2")
        if len(runs) == 3:
            stop = re.search(r"lorad: stopped at step (\d+)", runs[0])
            expect(fails, "got SIGUSR1" in runs[0] and stop and "requeueing job" in runs[0],
                   "USR1: the trap fired, lorad checkpointed and stopped, the script requeued the job")
            expect(fails, stop and usr1_at <= int(stop.group(1)) <= usr1_at + STOP_WITHIN,
                   f"USR1 at step {usr1_at}: the stop came within {STOP_WITHIN} steps", stop and stop.group(0))
            resumed = [re.search(r"lorad: resuming from \S+ at step (\d+)", r) for r in runs[1:]]
            expect(fails, stop and resumed[0] and resumed[0].group(1) == stop.group(1),
                   "the first requeued run resumed where USR1 stopped it")
            # mpirun gets TERM too and may drop the ranks' last words, so the proof of the
            # checkpoint at TERM is where the last run resumed: past the requeue point, and
            # --ckpt-every is longer than the run.
            expect(fails, "got SIGTERM" in runs[1], "TERM (scontrol requeue): the trap fired")
            expect(fails, resumed[1] and requeue_at and requeue_at <= int(resumed[1].group(1)) <= requeue_at + STOP_WITHIN,
                   f"the last run resumed from a checkpoint written within {STOP_WITHIN} steps of the TERM "
                   f"at step {requeue_at}", resumed[1] and resumed[1].group(0))
            expect(fails, "lorad exited 0" in runs[2], "the last run finished")
        expect(fails, h.metrics_rows(out) == h.metrics_rows(straight),
               "metrics rows (but timings) equal the uninterrupted run's")
        expect(fails, h.adapter_bytes(out) == h.adapter_bytes(straight),
               "adapter_model.safetensors is byte-identical to the uninterrupted run's")


def serve_job(fails, slurm, lorad, work, name, state):
    """sbatch serve.sbatch on STATE; returns (job id, client function) once the daemon answers."""
    log = os.path.join(work, f"{name}.out")
    jobid = sbatch(fails, slurm, "serve", log, {"LORAD": lorad, "LORAD_STATE": state})
    sock = os.path.join(state, "lorad.sock")
    client = lambda *a: h.run_lorad(lorad, [str(x) for x in a] + ["--socket", sock], timeout=60)
    if jobid:
        wait_until(lambda: client("status").returncode == 0, 120, "the daemon's socket")
    return jobid, client, log


def cancel(fails, slurm, jobid, log):
    """scancel JOBID; waits for the job to end and for the script to see mpirun exit."""
    print(f"+ scancel {jobid}", flush=True)
    slurm.run(["scancel", jobid])
    wait_until(lambda: slurm.job(jobid).get("JobState") in ENDED, 120, f"job {jobid} to end")
    text = open(log).read()
    print(f"--- {log}\n{text}", flush=True)
    expect(fails, slurm.job(jobid).get("JobState") == "CANCELLED", f"job {jobid} ended CANCELLED")
    expect(fails, "serve.sbatch: lorad serve exited" in text, "the script waited for mpirun to exit")
    return text


def case_serve(fails, lorad, work):
    data = prep_devil(fails, lorad, work)
    if not data:
        return
    ensure_packages()
    state = os.path.join(work, "state")
    with Slurm() as slurm:
        jobid, client, log = serve_job(fails, slurm, lorad, work, "serve1", state)
        if not jobid:
            return
        p = client("submit", "--model", os.path.join(REPO, "examples", "base"), "--data", data,
                   "--steps", 5, "--batch", 8, "--seq", 128)
        if expect(fails, p.returncode == 0, "lorad submit to the daemon in the Slurm job", p.stderr.strip()):
            job = p.stdout.strip()
            state_of = lambda: json.loads(client("status", job, "--json").stdout or "{}").get("state")
            wait_until(lambda: state_of() in ("succeeded", "failed", "cancelled"), 180, f"daemon job {job}")
            expect(fails, state_of() == "succeeded", f"the daemon's job {job} succeeded (state {state_of()})")
        text = cancel(fails, slurm, jobid, log)
        expect(fails, "with 2 ranks" in text, "lorad serve ran on the job's 2 tasks")
        # the next daemon on the same state directory (as after a requeue) knows the job
        jobid, client, log = serve_job(fails, slurm, lorad, work, "serve2", state)
        if jobid:
            p = client("status", 1, "--json")
            expect(fails, p.returncode == 0 and json.loads(p.stdout).get("state") == "succeeded",
                   "a second serve.sbatch on the same state directory reports job 1 succeeded", p.stdout + p.stderr)
            cancel(fails, slurm, jobid, log)

if __name__ == "__main__":
    h.run_driver("slurm", {"train_requeue": case_train_requeue, "serve": case_serve})
