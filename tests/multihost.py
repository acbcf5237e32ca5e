"""multihost.py: one training job across hosts, as mpirun runs it on a cluster.

Two network namespaces joined by a veth pair stand in for two hosts, each with its own
address (10.77.N.1 and 10.77.N.2) and, through `unshare --uts`, its own hostname (with a
shared hostname Open MPI's shared-memory segments would collide). mpirun starts in the
first with a hostfile naming both addresses, TCP only, and a launch agent that enters
the other host's namespace and runs the orted command through `sh -c`, as ssh would.
The adapter must equal what one process trains (losses within 1e-5, tensors 1e-4). The
namespaces are removed afterwards.
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import mpi_train  # noqa: E402

AGENT = """#!/bin/sh
# mpirun's launch agent: "agent [ssh options] HOST COMMAND..." enters HOST's namespace.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
echo "$host" >> {log}
case "$host" in
{cases}
  *) echo "agent: unknown host $host" >&2; exit 1 ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $name; $*"
"""


def sh(*cmd):
    subprocess.run(cmd, check=True)


class Hosts:
    """N namespaces on one subnet (a veth pair for two)."""

    def __init__(self, tag):
        self.subnet = f"10.77.{os.getpid() % 200 + 20}"
        self.ns = [f"lorad{os.getpid()}h{i}" for i in (1, 2)]
        self.addr = [f"{self.subnet}.{i}" for i in (1, 2)]

    def __enter__(self):
        for ns in self.ns:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        a, b = f"lv{os.getpid()}a", f"lv{os.getpid()}b"
        sh("ip", "link", "add", a, "netns", self.ns[0], "type", "veth", "peer", "name", b, "netns", self.ns[1])
        for ns, dev, addr in zip(self.ns, (a, b), self.addr):
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        return self

    def __exit__(self, *exc):
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns])

    def agent(self, path, log):
        cases = "\n".join(f"  {addr}) ns={ns}; name=h{i + 1} ;;" for i, (addr, ns) in enumerate(zip(self.addr, self.ns)))
        with open(path, "w") as f:
            f.write(AGENT.format(cases=cases, log=log))
        os.chmod(path, 0o755)

    def mpirun(self, work, lorad, args):
        hostfile, agent = os.path.join(work, "hostfile"), os.path.join(work, "agent.sh")
        with open(hostfile, "w") as f:
            f.write("".join(f"{addr} slots=1\n" for addr in self.addr))
        self.agent(agent, os.path.join(work, "agent.log"))
        net = f"{self.subnet}.0/24"
        run = " ".join(["mpirun", "--hostfile", hostfile, "-np", "2", "--mca", "plm_rsh_agent", agent,
                        "--mca", "btl", "tcp,self", "--mca", "oob_tcp_if_include", net,
                        "--mca", "btl_tcp_if_include", net, lorad] + [str(a) for a in args])
        cmd = ["ip", "netns", "exec", self.ns[0], "unshare", "--uts", "sh", "-c", f"hostname h1; {run}"]
        return h.run_command(cmd, 300, h.mpi_env())


def main():
    def case(fails, lorad, work):
        model, data = mpi_train.make_inputs(work, np.random.default_rng(8))
        args = lambda out: mpi_train.train_args(model, data, out, ["--targets", "q,v,mlp.c_proj", "--rank", 3])
        single = os.path.join(work, "single")
        p = h.run_lorad(lorad, args(single))
        if not fails.check(p.returncode == 0, f"one process failed: {p.stderr.strip()}"):
            return
        with Hosts(work) as hosts:
            out = os.path.join(work, "two_hosts")
            p = hosts.mpirun(work, lorad, args(out))
            print(p.stderr.strip()[-1500:], flush=True)
            if fails.check(p.returncode == 0, f"the two-host run failed ({p.returncode})"):
                fails.check("2 ranks" in p.stderr, "the run did not report 2 ranks")
                with open(os.path.join(work, "agent.log")) as f:
                    launched = f.read().split()
                fails.check(launched == [hosts.addr[1]], f"mpirun launched through the agent on {launched}, "
                            f"expected the second host {hosts.addr[1]} only")
                mpi_train.compare(fails, "2 hosts", mpi_train.outputs(single), mpi_train.outputs(out))
    h.run_driver("multihost", {"two_hosts": case})


if __name__ == "__main__":
    main()
