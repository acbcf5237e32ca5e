"""systemd_unit.py: deploy/systemd/lorad.service, the committed user unit.

  1. `systemd-analyze --user verify` accepts it with no message at all (it reports unknown
     keys and bad values as warnings with exit 0, so any output is a failure), with HOME
     set to a scratch home whose ~/.local/bin/lorad is the built binary, as the unit's
     header tells users to install it; a copy with a misspelled key must draw a message,
     so the check can fail.
  2. The unit's ExecStart, with %h and %S expanded as a user manager does, starts a daemon
     that answers `lorad status`, and its KillSignal stops it cleanly (exit 0) within
     TimeoutStopSec.
Without systemd-analyze the test says so and exits 77, which ctest reports as skipped.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "systemd", "lorad.service")
SKIP = 77


def unit_value(text, key):
    values = re.findall(rf"(?m)^{key}=(.*)$", text)
    if len(values) != 1:
        raise ValueError(f"{UNIT}: expected one {key}=, found {len(values)}")
    return values[0].strip()


def verify(env, path):
    p = subprocess.run(["systemd-analyze", "--user", "verify", path], capture_output=True, text=True, env=env,
                       cwd=env["HOME"])
    return p.returncode, (p.stdout + p.stderr).strip()


def case(fails, lorad, work):
    if not shutil.which("systemd-analyze"):
        print("systemd_unit: SKIPPED: systemd-analyze not found (install systemd to run this check)", flush=True)
        sys.exit(SKIP)
    home = os.path.join(work, "home")
    os.makedirs(os.path.join(home, ".local", "bin"))
    os.symlink(lorad, os.path.join(home, ".local", "bin", "lorad"))
    runtime = os.path.join(work, "run")
    os.makedirs(runtime, mode=0o700)
    env = dict(os.environ, HOME=home, XDG_RUNTIME_DIR=runtime)
    text = open(UNIT).read()

    rc, msg = verify(env, UNIT)
    print(f"check: systemd-analyze --user verify {UNIT} -> exit {rc}, {len(msg)} bytes of messages", flush=True)
    fails.check(rc == 0 and not msg, f"the unit does not verify cleanly: exit {rc}: {msg}")
    broken = os.path.join(work, "lorad.service")
    with open(broken, "w") as f:
        f.write(text.replace("KillSignal=", "KilSignal="))
    rc, msg = verify(env, broken)
    print(f"check: a copy with a misspelled key draws a message: {msg[:120]!r}", flush=True)
    fails.check(bool(msg), "systemd-analyze said nothing about a misspelled key: the check cannot fail")

    state_root = os.path.join(home, ".local", "state")
    cmd = unit_value(text, "ExecStart").replace("%h", home).replace("%S", state_root).split()
    kill_sig = getattr(signal, unit_value(text, "KillSignal"))
    stop_timeout = float(unit_value(text, "TimeoutStopSec"))
    state = os.path.join(state_root, unit_value(text, "StateDirectory"))
    print("check: ExecStart runs: " + " ".join(cmd), flush=True)
    daemon = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        sock = os.path.join(state, "lorad.sock")
        end = time.monotonic() + 30
        while not os.path.exists(sock) and daemon.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        p = h.run_lorad(lorad, ["status", "--socket", sock], timeout=30)
        fails.check(p.returncode == 0 and "serving" in p.stdout,
                    f"lorad status against the unit's daemon failed ({p.returncode}): {p.stdout}{p.stderr}")
        daemon.send_signal(kill_sig)
        out, _ = daemon.communicate(timeout=stop_timeout)
        print(out.strip(), flush=True)
        print(f"check: {unit_value(text, 'KillSignal')} stopped the daemon with exit {daemon.returncode}", flush=True)
        fails.check(daemon.returncode == 0, f"the daemon exited {daemon.returncode} on its KillSignal")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


if __name__ == "__main__":
    h.run_driver("systemd_unit", case)
