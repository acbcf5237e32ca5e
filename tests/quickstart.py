"""quickstart.py: deploy/quickstart.sh, the README's first command, with a short step count.

The script runs with LORAD_QUICKSTART_LORAD (the built binary: no install, no build) and
LORAD_QUICKSTART_STEPS, and the test reads its printed summary:
  - the adapted validation loss is below the base's;
  - the adapted loss equals the last val_loss of the run's metrics.jsonl (lorad eval
    --adapter and the training's own evaluation agree, within 1e-3);
  - the trainable count and its percentage match what adapter_config.json (r, targets)
    implies for the base's shapes, read from examples/base/model.safetensors;
  - the checkpoint, the PEFT adapter and the two samples exist, and the samples differ;
  - loss.png exists and is a PNG (its 8-byte signature and an IHDR chunk).
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def summary_field(text, label):
    m = re.search(rf"(?m)^{re.escape(label)}:\s+(.*)$", text)
    return m.group(1).strip() if m else None


def expected_trainable(adapter_dir):
    """LoRA parameters that adapter_config.json implies for GPT-2's c_attn: r x (in + out) per layer."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    if cfg["target_modules"] not in (["c_attn"], "c_attn"):
        raise ValueError(f"this test knows c_attn adapters only, got {cfg['target_modules']}")
    tensors, _ = h.read_safetensors(os.path.join(REPO, "examples", "base", "model.safetensors"))
    n_layer = sum(1 for k in tensors if k.endswith(".attn.c_attn.weight"))
    c_in, c_out = tensors["transformer.h.0.attn.c_attn.weight"].shape  # Conv1D: [in, out]
    total = sum(t.size for t in tensors.values())
    return n_layer * cfg["r"] * (c_in + c_out), total


def case(fails, lorad, work):
    env = dict(os.environ, LORAD_QUICKSTART_LORAD=lorad, LORAD_QUICKSTART_STEPS=str(STEPS),
               LORAD_QUICKSTART_OUT=work)
    cmd = [os.path.join(REPO, "deploy", "quickstart.sh")]
    print("+ " + " ".join(cmd) + f"   (LORAD_QUICKSTART_STEPS={STEPS})", flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    print(p.stdout[-3000:], flush=True)
    if not fails.check(p.returncode == 0, f"quickstart.sh exited {p.returncode}: {p.stderr[-1500:]}"):
        return
    text = p.stdout
    try:
        base, adapted = float(summary_field(text, "val loss, base").split()[0]), \
            float(summary_field(text, "val loss, adapted").split()[0])
    except (AttributeError, ValueError):
        fails.abort("the summary has no 'val loss, base' / 'val loss, adapted' numbers")
    print(f"check: adapted val loss {adapted:.4f} < base {base:.4f}", flush=True)
    fails.check(adapted < base, f"the adapted validation loss {adapted} is not below the base's {base}")

    run = os.path.join(work, "run")
    last_val = [r["val_loss"] for r in h.read_metrics(os.path.join(run, "metrics.jsonl")) if "val_loss" in r][-1]
    print(f"check: eval --adapter {adapted:.6f} agrees with the run's last val_loss {last_val:.6f}", flush=True)
    fails.check(abs(adapted - last_val) < 1e-3, f"eval --adapter gives {adapted}, the run's last val_loss {last_val}")

    adapter = summary_field(text, "PEFT adapter")
    want, total = expected_trainable(adapter)
    line = summary_field(text, "trainable") or ""
    m = re.match(r"(\d+) trainable parameters \(([0-9.]+)% of (\d+)\)", line)
    print(f"check: trainable '{line}' against {want} of {total} from the adapter config and the base", flush=True)
    if fails.check(m is not None, f"no trainable count in the summary: {line!r}"):
        fails.check(int(m.group(1)) == want and int(m.group(3)) == total,
                    f"trainable {line!r}, expected {want} of {total}")
        fails.check(abs(float(m.group(2)) - 100.0 * want / total) < 0.01, f"percentage in {line!r} is wrong")

    ckpt = summary_field(text, "checkpoint")
    print(f"check: checkpoint {ckpt}, adapter {adapter} exist", flush=True)
    fails.check(os.path.isfile(ckpt), f"no checkpoint at {ckpt}")
    fails.check(os.path.isfile(os.path.join(adapter, "adapter_model.safetensors")), f"no adapter at {adapter}")
    samples = [open(os.path.join(work, f"sample-{w}.txt"), "rb").read() for w in ("base", "adapted")]
    print(f"check: the samples differ ({len(samples[0])} and {len(samples[1])} bytes)", flush=True)
    fails.check(samples[0] and samples[1] and samples[0] != samples[1],
                "the base and adapted samples are equal or empty")

    png = summary_field(text, "loss curve")
    head = open(png, "rb").read(16) if png and os.path.isfile(png) else b""
    print(f"check: {png} is a PNG ({head[:8]!r})", flush=True)
    fails.check(head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{png} is missing or not a PNG")


if __name__ == "__main__":
    h.run_driver("quickstart", case)
