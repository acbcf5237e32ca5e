#!/usr/bin/env python3
"""report.py: RESULTS.md and its plots from the runs and analyses of run.sh.

  report.py best-lr RUNS PREFIX      the learning rate of the PREFIX<lr> run with the lowest
                                     validation loss
  report.py write --work W --out O --lorad L --quick 0|1

Reads each run's metrics.jsonl (the final validation loss, the per-step times), train.log
(the trainable parameters), NAME.time (/usr/bin/time -v: peak RSS, CPU time), and each
lorad analyze output's analysis.json; draws the plots with gnuplot and copies the
analyses' heatmaps and spectra. Standard library only. Means and sample standard
deviations (n - 1) are over the seeds.
"""
import argparse
import glob
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

LAYER = 3  # the middle layer of the base's 6, as the paper shows its 96-layer model's 48th
R_SWEEP = [1, 2, 4, 8, 64]
PART2 = [("q_r8", "q", 8), ("k_r8", "k", 8), ("v_r8", "v", 8), ("o_r8", "o", 8),
         ("qk_r4", "q,k", 4), ("qv_r4", "q,v", 4), ("qkvo_r2", "q,k,v,o", 2)]


# ---- reading ----

def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_facts(runs, name):
    """Validation loss, trainable parameters, step times (median, min; ms), peak RSS (MiB), CPU s."""
    rows = metrics(os.path.join(runs, name))
    val = [r["val_loss"] for r in rows if "val_loss" in r][-1]
    t = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:]) if "val_loss" not in b]
    with open(os.path.join(runs, name, "train.log")) as f:
        log = f.read()
    params = int(re.search(r"lorad: (\d+) trainable parameters", log).group(1))
    base_val = float(re.search(r"validation loss before training: ([0-9.]+)", log).group(1))
    with open(os.path.join(runs, name + ".time")) as f:
        tv = f.read()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", tv).group(1)) / 1024
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([0-9.]+)", tv))
    return {"val": val, "params": params, "base_val": base_val, "step_ms": 1e3 * statistics.median(t),
            "step_min_ms": 1e3 * min(t), "rss": rss, "cpu": cpu, "steps": len(rows)}


def load_analysis(work, name):
    with open(os.path.join(work, "analysis", name, "analysis.json")) as f:
        return json.load(f)


def module_key(name):
    """("q", 3) for transformer.h.3.attn.c_attn.q."""
    m = re.match(r"transformer\.h\.(\d+)\.attn\.c_attn\.([qkv])$", name)
    return (m.group(2), int(m.group(1))) if m else None


# ---- numbers ----

def mean_std(xs):
    xs = list(xs)
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs, digits=3):
    m, s = mean_std(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def negligible(a, b):
    """|mean a - mean b| below 0.02 nats or two combined standard deviations."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return abs(ma - mb) < max(0.02, 2 * math.hypot(sa, sb))


def phi_at(block, i, j):
    """φ(i, j) (1-based) of a phi_A / phi_B block, None beyond its ranks."""
    if i > block["rank_adapter"] or j > block["rank_against"]:
        return None
    return block["phi"][i - 1][j - 1]


# ---- plots ----

def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def quote(s):
    return "'" + s.replace("'", "''") + "'"


def plot_rank_sweep(path, facts, seeds):
    lines = []
    for r in R_SWEEP:
        m, s = mean_std(facts[f"qv_r{r}_s{x}"]["val"] for x in seeds)
        lines.append(f"{r} {m:.6f} {s:.6f}")
    fm, fs = mean_std(facts[f"full_s{x}"]["val"] for x in seeds)
    gnuplot(f"""set terminal pngcairo noenhanced size 820,500 font 'Sans,11'
set output {quote(path)}
$d << EOD
{chr(10).join(lines)}
EOD
set title 'LoRA on q,v at rank r against full fine-tuning (validation loss, mean ± std over {len(seeds)} seeds)'
set xlabel 'LoRA rank r (q and v)'; set ylabel 'validation loss (nats per byte)'
set logscale x 2; set xrange [0.7:90]; set grid
set key top right
plot $d using 1:2:3 with yerrorlines lw 2 pt 7 title 'LoRA q,v', \\
     {fm:.6f} with lines dt 2 lw 2 title sprintf('full fine-tuning %.3f', {fm:.6f}), \\
     {fm - fs:.6f} with lines dt 3 lc rgb 'gray' notitle, {fm + fs:.6f} with lines dt 3 lc rgb 'gray' notitle
""")


def plot_bars(path, title, ylabel, labels, values):
    """VALUES: [(mean, std)] per label."""
    rows = "\n".join(f'{i} {m:.6f} {s:.6f} "{lab}"' for i, (lab, (m, s)) in enumerate(zip(labels, values)))
    lo = min(m - s for m, s in values)
    hi = max(m + s for m, s in values)
    pad = (hi - lo) * 0.25 + 1e-6
    gnuplot(f"""set terminal pngcairo noenhanced size 900,500 font 'Sans,11'
set output {quote(path)}
$d << EOD
{rows}
EOD
set title {quote(title)}
set ylabel {quote(ylabel)}; set grid ytics
set style fill solid 0.8 noborder; set boxwidth 0.6
set yrange [{lo - pad:.6f}:{hi + pad:.6f}]; set xrange [-0.6:{len(labels) - 0.4}]
plot $d using 1:2:xtic(4) with boxes lc rgb '#3b528b' notitle, '' using 1:2:3 with yerrorbars lc rgb 'black' pt 7 ps 0.4 notitle
""")


def plot_cost(path, facts, seeds):
    names = [f"qv_r{r}" for r in R_SWEEP] + ["full"]
    labels = [f"r {r}" for r in R_SWEEP] + ["full"]
    rows = []
    for i, (n, lab) in enumerate(zip(names, labels)):
        t = mean_std(facts[f"{n}_s{x}"]["step_ms"] for x in seeds)
        fast = mean_std(facts[f"{n}_s{x}"]["step_min_ms"] for x in seeds)
        m = mean_std(facts[f"{n}_s{x}"]["rss"] for x in seeds)
        rows.append(f'{i} {t[0]:.4f} {t[1]:.4f} {m[0]:.4f} {m[1]:.4f} {fast[0]:.4f} "{lab}"')
    gnuplot(f"""set terminal pngcairo noenhanced size 1100,460 font 'Sans,11'
set output {quote(path)}
$d << EOD
{chr(10).join(rows)}
EOD
set multiplot layout 1,2 title 'Cost per configuration (mean ± std over {len(seeds)} seeds)'
set style fill solid 0.8 noborder; set boxwidth 0.6; set grid ytics; set xrange [-0.6:{len(names) - 0.4}]
set yrange [0:*]
set title 'step time (ms): the median step, and the fastest'
set key top left
plot $d using 1:2:xtic(7) with boxes lc rgb '#21918c' title 'median', \
     '' using 1:2:3 with yerrorbars lc rgb 'black' pt 7 ps 0.4 notitle, \
     '' using 1:6 with points pt 9 ps 1.6 lc rgb '#440154' title 'fastest'
set title 'peak RSS (MiB, /usr/bin/time)'
plot $d using 1:4:xtic(7) with boxes lc rgb '#5ec962' notitle, '' using 1:4:5 with yerrorbars lc rgb 'black' pt 7 ps 0.4 notitle
unset multiplot
""")


def copy_plot(work, analysis, sub, module, out, name):
    shutil.copyfile(os.path.join(work, "analysis", analysis, sub, module + ".png"), os.path.join(out, name))
    return name


# ---- the parts ----

def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def separation(facts, seeds):
    """Whether the seeds' spread is small against the configurations' differences."""
    names = sorted({n.rsplit("_s", 1)[0] for n in facts if not n.startswith("sweep_")})
    stds = {n: mean_std(facts[f"{n}_s{x}"]["val"] for x in seeds)[1] for n in names}
    means = sorted(mean_std(facts[f"{n}_s{x}"]["val"] for x in seeds)[0] for n in names)
    gap = min(b - a for a, b in zip(means, means[1:]))
    worst = max(stds, key=stds.get)
    return (f"The seeds' standard deviation of the validation loss is at most {stds[worst]:.3f} ({worst}), and "
            f"{statistics.median(stds.values()):.3f} at the median; the configurations' means lie "
            f"{means[-1] - means[0]:.3f} apart end to end, the closest two {gap:.3f}. "
            + ("The bundled base therefore separates the configurations, and no larger base was pretrained."
               if stds[worst] < 0.02 else "Some configurations are within the seeds' noise of each other."))


def part1(facts, seeds, lrs):
    rows = []
    for n, lab in [(f"qv_r{r}", f"LoRA q,v r {r}") for r in R_SWEEP] + [("full", "full fine-tuning")]:
        f = [facts[f"{n}_s{x}"] for x in seeds]
        rows.append([lab, f"{f[0]['params']:,}", pm(x["val"] for x in f), pm((x["step_ms"] for x in f), 1),
                     pm((x["step_min_ms"] for x in f), 1), pm((x["rss"] for x in f), 1), pm((x["cpu"] for x in f), 1)])
    return table(["configuration", "trainable", "validation loss", "step ms (median)", "step ms (min)",
                  "peak RSS MiB", "CPU s (run)"], rows)


def sweep_table(facts):
    rows = []
    for kind, prefix in (("LoRA q,v r 8", "sweep_lora_"), ("full fine-tuning", "sweep_full_")):
        for name in sorted((n for n in facts if n.startswith(prefix)), key=lambda n: float(n[len(prefix):])):
            rows.append([kind, name[len(prefix):], f"{facts[name]['val']:.4f}"])
    return table(["configuration", "learning rate", "validation loss (seed 0)"], rows) if rows else ""


def part2(facts, seeds):
    rows = []
    for n, lab, r in PART2:
        f = [facts[f"{n}_s{x}"] for x in seeds]
        rows.append([lab, r, f"{f[0]['params']:,}", pm(x["val"] for x in f)])
    return table(["weights adapted", "r", "trainable", "validation loss"], rows)


PHI_POINTS = [(1, 1), (2, 2), (4, 4), (8, 8)]


def phi_layer_means(docs, t, fac, i, j):
    """φ(i, j) of ΔW's type T (q or v), factor FAC (A or B): each doc's mean over the layers."""
    out = []
    for d in docs:
        v = [phi_at(m["against"][f"phi_{fac}"], i, j) for m in d["modules"] if module_key(m["name"])[0] == t]
        v = [x for x in v if x is not None]
        if v:
            out.append(statistics.fmean(v))
    return out


def phi_rows(docs, against_r, n_dim):
    """Rows per (type, factor): φ at PHI_POINTS and (8, r'), mean ± std over the docs of
    phi_layer_means; then the random baseline max(i,j)/n."""
    points = PHI_POINTS + [(8, against_r)]
    rows = []
    for t in ("q", "v"):
        for fac in ("A", "B"):
            cells = [phi_layer_means(docs, t, fac, i, j) for i, j in points]
            rows.append([f"ΔW{t}: {fac}", *[pm(c) if c else "-" for c in cells]])
    rows.append(["random subspaces", *[f"{max(i, j) / n_dim:.3f}" for i, j in points]])
    return table(["factor"] + [f"φ({i},{j})" for i, j in points], rows)


def layer_phi(docs, t, fac, i, j):
    """φ(i,j) of type T at LAYER, over the docs."""
    return [phi_at(m["against"][f"phi_{fac}"], i, j) for d in docs for m in d["modules"] if module_key(m["name"]) == (t, LAYER)]


def amp_table(work, seeds):
    rows = []
    for r in (4, 8, 64):
        docs = [load_analysis(work, f"amp_r{r}_s{x}") for x in seeds]
        for t in ("q", "v"):
            a = [m["amplification"] for d in docs for m in d["modules"] if module_key(m["name"]) == (t, LAYER)]
            allf = [statistics.fmean(m["amplification"]["factor"] for m in d["modules"] if module_key(m["name"])[0] == t)
                    for d in docs]
            rows.append([r, f"W{t}", pm((x["r"] for x in a), 1), pm((x["delta_frobenius"] for x in a), 2),
                         pm((x["w_frobenius"] for x in a), 2), pm((x["projection_delta"] for x in a), 3),
                         pm((x["projection_w"] for x in a), 3), pm((x["projection_random"] for x in a), 3),
                         pm((x["factor"] for x in a), 2), pm(allf, 2)])
    return table(["adapter r", "W", "rank ΔW", "‖ΔW‖_F", "‖W‖_F", "‖UᵀWV‖ ΔW dirs", "‖UᵀWV‖ W dirs",
                  "‖UᵀWV‖ random", f"factor (h.{LAYER})", "factor (mean of layers)"], rows)


def amp_values(work, seeds, r, t, key, layer=LAYER):
    return [m["amplification"][key] for x in seeds for m in load_analysis(work, f"amp_r{r}_s{x}")["modules"]
            if module_key(m["name"]) == (t, layer)]


def energy_values(work, seeds, r, t, top):
    docs = [load_analysis(work, f"amp_r{r}_s{x}") for x in seeds]
    return [statistics.fmean(m["energy_top"][str(top)] for m in d["modules"] if module_key(m["name"])[0] == t)
            for d in docs]


# ---- part 5: the claims ----

def held(ok, partly=False):
    return "**held**" if ok else ("**partly held**" if partly else "**did not hold**")


def claims(facts, seeds, work, fig3, fig4, lrs):
    v = lambda name: [facts[f"{name}_s{x}"]["val"] for x in seeds]  # noqa: E731
    m = lambda xs: mean_std(xs)[0]  # noqa: E731
    out = []
    best_r = min(R_SWEEP, key=lambda r: m(v(f"qv_r{r}")))
    lora, full = v(f"qv_r{best_r}"), v("full")
    gap = m(lora) - m(full)
    params = facts[f"qv_r{best_r}_s{seeds[0]}"]["params"], facts[f"full_s{seeds[0]}"]["params"]
    swept = [float(n[len("sweep_full_"):]) for n in facts if n.startswith("sweep_full_")]
    edge = (" Full fine-tuning's learning rate is the largest of its sweep, so a larger one might widen the gap."
            if swept and float(lrs[1]) == max(swept) else "")
    out.append(f"**LoRA matches full fine-tuning** (the paper's Tables 2 to 4): {held(gap <= 0 or negligible(lora, full))}. "
               f"The best LoRA configuration on q,v (r {best_r}, {params[0]:,} trainable parameters, "
               f"{100 * params[0] / params[1]:.1f} % of the model) reached {pm(lora)} nats per byte, full fine-tuning "
               f"{pm(full)}: a gap of {gap:+.3f} ({100 * gap / m(full):+.1f} %). The paper's models have 10⁸ to 10¹¹ "
               f"parameters and a task close to their pretraining; this base has 1.24 M, and a new style of text "
               f"asks more of it than a low-rank update of two matrices per layer gives.{edge}")
    t8, tf = [facts[f"qv_r8_s{x}"]["step_ms"] for x in seeds], [facts[f"full_s{x}"]["step_ms"] for x in seeds]
    tm8, tmf = [facts[f"qv_r8_s{x}"]["step_min_ms"] for x in seeds], [facts[f"full_s{x}"]["step_min_ms"] for x in seeds]
    speed, speed_min = m(tf) / m(t8) - 1, m(tmf) / m(tm8) - 1
    out.append(f"**About 25 % faster training** (§4.2, GPT-3 175B): {held(speed >= 0.2, speed > 0.05)}. A step of "
               f"LoRA q,v r 8 took {pm(t8, 1)} ms (median; fastest {pm(tm8, 1)}), of full fine-tuning {pm(tf, 1)} ms "
               f"(fastest {pm(tmf, 1)}): a full step takes {1 + speed:.2f}× a LoRA step by the medians, {1 + speed_min:.2f}× "
               f"by the fastest steps, so LoRA trains {100 * speed:.0f} % (by the fastest steps {100 * speed_min:.0f} %) "
               f"faster. LoRA saves the frozen weights' gradients and "
               f"AdamW's update of them; the forward and the input gradients, most of the work, remain.")
    r8, rf = [facts[f"qv_r8_s{x}"]["rss"] for x in seeds], [facts[f"full_s{x}"]["rss"] for x in seeds]
    n = params[1]
    out.append(f"**About 3× less memory** (§4.2, 1.2 TB to 350 GB): {held(m(rf) / m(r8) >= 2.5, m(rf) / m(r8) >= 1.2)}. "
               f"Peak RSS was {pm(r8, 1)} MiB for LoRA r 8 and {pm(rf, 1)} MiB for full fine-tuning, "
               f"{m(rf) / m(r8):.2f}×. What full fine-tuning adds is a gradient and AdamW's two moments per weight, "
               f"3 × 4 bytes × {n:,} = {12 * n / 2 ** 20:.1f} MiB, and its own copy of the weights; the rest of the "
               f"process (the libraries, the activations, the data) is the same for both, and at this size it dominates.")
    single = {n_: v(n_) for n_ in ("q_r8", "k_r8", "v_r8", "o_r8")}
    multi = {n_: v(n_) for n_ in ("qk_r4", "qv_r4", "qkvo_r2")}
    bs, bm = min(single, key=lambda k: m(single[k])), min(multi, key=lambda k: m(multi[k]))
    label = {n_: lab for n_, lab, _ in PART2}
    more = m(multi[bm]) < m(single[bs]) and not negligible(multi[bm], single[bs])
    qk_worse = min(m(single["q_r8"]), m(single["k_r8"])) > max(m(single["v_r8"]), m(single["o_r8"]))
    ranking = ", ".join(f"{label[k]} r {dict((a, c) for a, _, c in PART2)[k]} {m(x):.3f}"
                        for k, x in sorted({**single, **multi}.items(), key=lambda kv: m(kv[1])))
    out.append(f"**Adapt more weight types at a lower rank rather than one type at a higher rank** (Table 5): "
               f"{held(more, m(multi[bm]) <= m(single[bs]))}. At one budget ({facts['q_r8_s' + str(seeds[0])]['params']:,} "
               f"parameters), the best of several types was {label[bm]} at {pm(multi[bm])}, the best single type "
               f"{label[bs]} at {pm(single[bs])}. **q or k alone is worse than v or o alone**: {held(qk_worse)}. "
               f"From best to worst: {ranking}.")
    r1 = v("qv_r1")
    small = negligible(r1, v(f"qv_r{best_r}"))
    out.append(f"**A very small rank suffices** (Table 6: r 1 on q,v is within a point of the best): "
               f"{held(small or best_r == 1, m(r1) - m(v(f'qv_r{best_r}')) < 0.05)}. r 1 reached {pm(r1)}, r {best_r} "
               f"(the best) {pm(v(f'qv_r{best_r}'))}{'' if best_r == 64 else ', r 64 ' + pm(v('qv_r64'))}; the whole "
               f"sweep is in Part 1's table. "
               f"Energy in the top direction of ΔW at r 64 (mean of the layers): q {pm(energy_values(work, seeds, 64, 'q', 1))}, "
               f"v {pm(energy_values(work, seeds, 64, 'v', 1))}; in the top 8: "
               f"q {pm(energy_values(work, seeds, 64, 'q', 8))}, v {pm(energy_values(work, seeds, 64, 'v', 8))}.")
    f3 = {t: [x for x in layer_phi(fig3, t, "A", 1, 1) if x is not None] for t in "qv"}
    f3all = {t: phi_layer_means(fig3, t, "A", 1, 1) for t in "qv"}
    f38 = {t: phi_layer_means(fig3, t, "A", 8, 8) for t in "qv"}
    top = min(m(f3all["q"]), m(f3all["v"]))
    out.append(f"**The top direction of r 8 is among r 64's, the others much less so** (Figure 3, φ(1,1) > 0.5): "
               f"{held(top > 0.5 and max(m(f38['q']), m(f38['v'])) < top, top > 10 / 128)}. φ_A(1,1) between A of "
               f"r 8 and of r 64, mean of the layers: ΔWq {pm(f3all['q'])}, ΔWv {pm(f3all['v'])} (at layer {LAYER}: "
               f"q {pm(f3['q'])}, v {pm(f3['v'])}); φ_A(8,8) ΔWq {pm(f38['q'])}, ΔWv {pm(f38['v'])}; two random "
               f"subspaces of R^128 give 1/128 = 0.008 and 8/128 = 0.063.")
    f4 = {t: phi_layer_means(fig4, t, "A", 1, 1) for t in "qv"}
    f48 = {t: phi_layer_means(fig4, t, "A", 8, 8) for t in "qv"}
    shared = min(m(f4["q"]), m(f4["v"]))
    out.append(f"**Two seeds at r 64 share their top directions** (Figure 4): {held(shared > 0.5, shared > 10 / 128)}; "
               f"φ_A(1,1) ΔWq {pm(f4['q'])}, ΔWv {pm(f4['v'])}, φ_A(8,8) ΔWq {pm(f48['q'])}, ΔWv {pm(f48['v'])} "
               f"(random: 0.008 and 0.063). **ΔWq shares more directions across seeds than ΔWv** (the paper reads a "
               f"higher intrinsic rank of ΔWq from it): {held(m(f48['q']) > m(f48['v']))}.")
    pd = {r: amp_values(work, seeds, r, "q", "projection_delta") for r in (4, 64)}
    pr = {r: amp_values(work, seeds, r, "q", "projection_random") for r in (4, 64)}
    pw = {r: amp_values(work, seeds, r, "q", "projection_w") for r in (4, 64)}
    fa = {r: amp_values(work, seeds, r, "q", "factor") for r in (4, 64)}
    size = {r: m(amp_values(work, seeds, r, "q", "delta_frobenius")) / m(amp_values(work, seeds, r, "q", "w_frobenius"))
            for r in (4, 64)}
    out.append(f"**ΔW correlates with W more than a random matrix does, yet not with W's top directions, and "
               f"amplifies what it takes of W, much more at low rank** (Table 7, r 4: 21.5, r 64: 1.9), for Wq at "
               f"layer {LAYER}: ‖UᵀWV‖ on ΔW's directions above random: "
               f"{held(m(pd[4]) > m(pr[4]) and m(pd[64]) > m(pr[64]))} (r 4: {pm(pd[4])} against {pm(pr[4])}; r 64: "
               f"{pm(pd[64])} against {pm(pr[64])}); below W's own top directions: "
               f"{held(m(pd[4]) < m(pw[4]) and m(pd[64]) < m(pw[64]))} ({pm(pw[4])} and {pm(pw[64])}); amplification "
               f"larger at r 4 than at r 64 and large: {held(m(fa[4]) > m(fa[64]) and m(fa[4]) > 5, m(fa[4]) > m(fa[64]))} "
               f"(r 4: {pm(fa[4], 1)}, r 64: {pm(fa[64], 1)}). One difference in kind: the paper's ΔWq is a ninth of "
               f"Wq (‖ΔWq‖_F 6.91 against ‖Wq‖_F 61.95 at r 4), while here ‖ΔWq‖_F is {size[4]:.1f}× ‖Wq‖_F at r 4 and "
               f"{size[64]:.1f}× at r 64: the small base moves far from its pretrained weights.")
    return "\n\n".join(out)


# ---- the document ----

def run_command(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def minutes(work):
    """From run.sh's first file to its last, in minutes."""
    return (os.path.getmtime(os.path.join(work, "load-end.txt")) -
            os.path.getmtime(os.path.join(work, "load-start.txt"))) / 60


def header(work, lorad, quick, seeds, facts, lrs):
    def read(name):
        with open(os.path.join(work, name)) as f:
            return f.read().strip()

    def load(name):
        return read(name).split("load average:")[-1].strip()
    commit, *dirty = read("commit.txt").splitlines() or ["unknown"]
    f0 = facts[f"qv_r8_s{seeds[0]}"]
    quick_note = "**Quick mode (`--quick`): a smoke test of the study; its numbers mean nothing.**\n\n" if quick else ""
    return f"""# The LoRA paper's findings, measured with lorad

{quick_note}`examples/paper/run.sh`{" --quick" if quick else ""} wrote this file and its PNGs ({run_command([lorad, "--version"])},
commit {commit}{" with local changes" if dirty else ""}, started {read("started.txt")}, {minutes(work):.1f} minutes).

- **Base**: `examples/base`, a 1.24 M-parameter byte-level GPT-2 (6 layers, width 128, 128 positions) that lorad
  pretrained on the King James Bible.
- **Task**: adapting it to *The Devil's Dictionary* (`examples/corpora/devil-train.txt`, 320,530 bytes), scored on the
  held-out entries (`devil-val.txt`: {"its first 2 batches" if quick else "all 254 windows of 128 bytes"}) in nats per
  byte after the last step. The base scores {f0["base_val"]:.3f}.
- **Runs**: {f0["steps"]} steps of 8 × 128 bytes, AdamW, linear decay after {2 if quick else 20} warmup steps, gradient
  clipping at 1; the seed ({", ".join(map(str, seeds))}) draws A's initialisation and the data order. One process, one
  thread (`--threads 1`), the runs one after another, interleaved seed by seed so that each configuration sees the
  machine's load alike.
- **LoRA**: alpha 16 at every r (the paper fixes alpha and does not tune it with r), so the scale alpha/r is 2 at r 8.
  On GPT-2, `q`, `k`, `v` are the slices of the fused `c_attn`, each with its own adapter; `o` is `attn.c_proj`.
- **Learning rates**: LoRA {lrs[0]}, full fine-tuning {lrs[1]}{", each the best of three on seed 0 (below)" if not quick
                                                               else " (quick mode: not swept)"}.
- **Measurements**: tables give the mean ± the sample standard deviation over the {len(seeds)} seeds. Step times are
  wall-clock, from `metrics.jsonl`: the median step of a run, and its fastest step, the figure least disturbed by
  other work on the machine. Peak RSS is `/usr/bin/time -v`'s maximum resident set size of the whole `lorad train`
  process.
- **Machine**: 2 cores, shared with other jobs while this ran: load average `{load("load-start.txt")}` at the start,
  `{load("load-end.txt")}` at the end.
"""


def write(work, out, lorad, quick):
    runs = os.path.join(work, "runs")
    names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(runs, "*.time")))
    facts = {n: run_facts(runs, n) for n in names}
    seeds = sorted({int(n.rsplit("_s", 1)[1]) for n in names if not n.startswith("sweep_")})
    with open(os.path.join(work, "lr.txt")) as f:
        lrs = f.read().split()
    fig3 = [load_analysis(work, f"r8_r64_s{x}") for x in seeds]
    fig4 = [load_analysis(work, os.path.basename(p)) for p in sorted(glob.glob(os.path.join(work, "analysis", "r64_s*_s*")))]
    os.makedirs(out, exist_ok=True)
    plot_rank_sweep(os.path.join(out, "part1_rank.png"), facts, seeds)
    plot_cost(os.path.join(out, "part1_cost.png"), facts, seeds)
    plot_bars(os.path.join(out, "part2_targets.png"), f"One budget on different weights (validation loss, {len(seeds)} seeds)",
              "validation loss (nats per byte)", [f"{lab} r {r}" for _, lab, r in PART2],
              [mean_std(facts[f"{n}_s{x}"]["val"] for x in seeds) for n, _, _ in PART2])
    q, v = (f"transformer.h.{LAYER}.attn.c_attn.{t}" for t in "qv")
    s0, pair = seeds[0], os.path.basename(sorted(glob.glob(os.path.join(work, "analysis", "r64_s*_s*")))[0])
    figs = {name: copy_plot(work, an, sub, mod, out, name) for name, an, sub, mod in (
        ("part3_r8_r64_q.png", f"r8_r64_s{s0}", "phi", q), ("part3_r8_r64_v.png", f"r8_r64_s{s0}", "phi", v),
        ("part3_seeds_r64_q.png", pair, "phi", q), ("part3_seeds_r64_v.png", pair, "phi", v),
        ("part4_spectrum_r64_q.png", f"amp_r64_s{s0}", "spectrum", q),
        ("part4_spectrum_r64_v.png", f"amp_r64_s{s0}", "spectrum", v))}
    doc = [header(work, lorad, quick, seeds, facts, lrs)]
    if not quick:
        doc += ["## Learning rates\n", "Seed 0, the lowest validation loss of each kind is used for all its runs.\n",
                sweep_table(facts), ""]
    doc += ["## 1. LoRA on q,v at r 1 to 64 against full fine-tuning\n", part1(facts, seeds, lrs), "",
            "![validation loss against r](part1_rank.png)", "", "![step time and peak RSS](part1_cost.png)", "",
            "## 2. One budget on different weights (the paper's Table 5)\n",
            "Every configuration trains the same number of parameters, r × (the types adapted) = 8 adapter ranks per "
            "layer; `o` is `attn.c_proj`.\n", part2(facts, seeds), "", "![validation loss per target set](part2_targets.png)", "",
            "## 3. Subspace similarity (the paper's Figures 3 and 4)\n",
            "φ(A₁, A₂, i, j) = ‖U₁ᵢᵀU₂ⱼ‖²_F / min(i, j) from the top right-singular vectors of the two A matrices "
            "(`lorad analyze --against`); B's left-singular vectors likewise. Each cell: the mean over the 6 layers, "
            f"then mean ± std over {len(fig3)} seeds (r 8 against r 64 of the same seed) or {len(fig4)} seed pairs "
            "(r 64 against r 64).\n", "### r 8 against r 64 (Figure 3)\n", phi_rows(fig3, 64, 128), "",
            f"![phi r8 r64 q]({figs['part3_r8_r64_q.png']}) ![phi r8 r64 v]({figs['part3_r8_r64_v.png']})", "",
            f"Layer {LAYER}, seed {s0}: ΔWq left, ΔWv right; in each, A's φ and then B's, i over r 8's directions and "
            "j over r 64's.\n", "### Two seeds at r 64 (Figure 4)\n", phi_rows(fig4, 64, 128), "",
            f"![phi seeds q]({figs['part3_seeds_r64_q.png']}) ![phi seeds v]({figs['part3_seeds_r64_v.png']})", "",
            f"Layer {LAYER}, {pair.replace('_', ' ')}.\n",
            "## 4. How ΔW relates to W (the paper's Table 7)\n",
            f"`lorad analyze --model examples/base` at layer {LAYER} (the last column: the mean over the 6 layers): U and V "
            "are the top-r singular directions of ΔW (r its numerical rank), of W, or r random orthonormal directions; "
            "the factor is ‖ΔW‖_F / ‖UᵀWV‖_F with ΔW's own directions.\n", amp_table(work, seeds), "",
            f"![spectrum r64 q]({figs['part4_spectrum_r64_q.png']}) ![spectrum r64 v]({figs['part4_spectrum_r64_v.png']})", "",
            f"The singular values of ΔWq and ΔWv at r 64, layer {LAYER}, seed {s0}.\n",
            "## 5. Did the claims hold at this scale?\n", separation(facts, seeds), "", claims(facts, seeds, work, fig3, fig4, lrs),
            ""]
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write("\n".join(doc))


def best_lr(runs, prefix):
    best = min((os.path.basename(p) for p in glob.glob(os.path.join(runs, prefix + "*")) if os.path.isdir(p)),
               key=lambda n: run_facts(runs, n)["val"])
    return best[len(prefix):]


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("best-lr")
    b.add_argument("runs")
    b.add_argument("prefix")
    w = sub.add_parser("write")
    w.add_argument("--work", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--lorad", required=True)
    w.add_argument("--quick", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "best-lr":
        print(best_lr(a.runs, a.prefix))
    else:
        write(a.work, a.out, a.lorad, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
