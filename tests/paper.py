"""paper.py: examples/paper/run.sh --quick, the one-command study, still produces all of it.

Quick mode trains every configuration for 10 steps on 2 seeds, so its numbers mean
nothing; the test asserts only that every part's table and every plot was produced:
  - RESULTS.md has the five parts, each with its tables (Part 3 two), every table's rows
    are whole and hold no NaN;
  - Part 5 gives a verdict on each of the claims;
  - every image RESULTS.md shows exists in --out and is a PNG (signature and IHDR), and
    --out holds no PNG it does not show.
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (part heading, the header cells that start each of its tables)
PARTS = [("## 1.", [["configuration", "trainable", "validation loss"]]),
         ("## 2.", [["weights adapted", "r", "trainable", "validation loss"]]),
         ("## 3.", [["factor", "φ(1,1)"], ["factor", "φ(1,1)"]]),
         ("## 4.", [["adapter r", "W", "rank ΔW"]]),
         ("## 5.", [])]
CLAIMS = 8  # part 5's paragraphs, one per claim


def png_ok(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return len(head) == 24 and head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and \
        min(struct.unpack(">II", head[16:24])) > 0


def tables(text):
    """Each markdown table of TEXT as a list of rows (lists of cells)."""
    out, cur = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cur.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif cur:
            out.append(cur)
            cur = []
    return out


def check(fails, out):
    path = os.path.join(out, "RESULTS.md")
    if not os.path.isfile(path):
        fails.append(f"no {path}")
        return
    with open(path) as f:
        text = f.read()
    heads = [text.find(h) for h, _ in PARTS]
    for (h, _), at in zip(PARTS, heads):
        if at < 0:
            fails.append(f"RESULTS.md has no part '{h}'")
    if any(at < 0 for at in heads) or heads != sorted(heads):
        return
    for k, (h, want) in enumerate(PARTS):
        body = text[heads[k]:heads[k + 1] if k + 1 < len(PARTS) else len(text)]
        got = tables(body)
        if len(got) != len(want):
            fails.append(f"part '{h}' has {len(got)} tables, expected {len(want)}")
        for t, cells in zip(got, want):
            if t[0][:len(cells)] != cells:
                fails.append(f"part '{h}': a table starts {t[0]}, expected {cells}")
            if len(t) < 3 or any(len(r) != len(t[0]) for r in t):
                fails.append(f"part '{h}': a table of {len(t)} rows with ragged or missing rows")
            if any(re.search(r"\bnan\b|\binf\b", c, re.I) for r in t for c in r):
                fails.append(f"part '{h}': a table holds nan or inf")
        if h == "## 5.":
            verdicts = [p for p in body.split("\n\n") if re.search(r"\*\*(held|partly held|did not hold)\*\*", p)]
            if len(verdicts) != CLAIMS:
                fails.append(f"part 5 has {len(verdicts)} paragraphs with a verdict, expected {CLAIMS}")
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    for name in shown:
        p = os.path.join(out, name)
        if not (os.path.isfile(p) and png_ok(p)):
            fails.append(f"RESULTS.md shows {name}, which is not a PNG in {out}")
    extra = sorted(set(n for n in os.listdir(out) if n.endswith(".png")) - set(shown))
    if extra:
        fails.append(f"{out} holds PNGs RESULTS.md does not show: {extra}")
    print(f"check: {len(tables(text))} tables, {len(shown)} plots shown", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorad", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    out = os.path.join(a.workdir, "out")
    cmd = [os.path.join(REPO, "examples", "paper", "run.sh"), "--quick", "--out", out]
    print("+ LORAD=" + a.lorad + " " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=dict(os.environ, LORAD=a.lorad))
    print(p.stdout[-2000:], flush=True)
    fails = []
    if p.returncode != 0:
        fails.append(f"run.sh --quick exited {p.returncode}: {p.stderr[-2000:]}")
    else:
        check(fails, out)
    for msg in fails:
        print(f"FAIL: {msg}", flush=True)
    print(f"paper: {'PASS' if not fails else f'{len(fails)} failure(s)'}", flush=True)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
