"""torch_step.py: the PyTorch reference of lorad's LoRA training step, for bench/run.py.

The same model (lorad's model directory, mapped read-only from model.safetensors as lorad
maps it), the same math in float32 (GPT-2 with the LM head tied to wte, tanh GELU,
LoRA adapters on the q and v slices of c_attn: h = W0 x + s B A x, A kaiming-uniform,
B zero, s = alpha/r), the same batch (step s takes the windows s*G .. s*G+G-1 of T+1
tokens, lorad's order with --shuffle off), the same update (AdamW on the adapters only, the
frozen base has requires_grad False, global-norm clip 1, Hugging Face's linear schedule)
and the same number of threads. Prints one JSON object on stdout: per-step times and
losses, and the time to build the model. run.py measures this process's peak RSS itself.

usage: torch_step.py --model DIR --data FILE.bin [--batch 4] [--seq 256] [--steps 4]
                     [--threads 2] [--targets q,v] [--rank 8] [--alpha 8]
"""
import argparse
import json
import math
import os
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--targets", default="q,v")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=42)
    return ap.parse_args()


ARGS = parse_args()
# Before torch loads: Debian's torch runs its matrix products on OpenBLAS (libblas.so.3),
# whose thread count comes from the environment, and its other kernels on OpenMP.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

NP_DTYPES = {"F32": np.float32, "F16": np.float16}


def load_safetensors(path):
    """name -> float32 tensor, mapped copy-on-write from the file (no read until touched)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="c")
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        arr = raw[8 + n + lo:8 + n + hi].view(NP_DTYPES[meta["dtype"]]).reshape(meta["shape"])
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[name.removeprefix("transformer.")] = torch.from_numpy(arr)
    return out


class LoRA(torch.nn.Module):
    """The update s * B A x of one adapter (in -> out), as PEFT initialises it."""

    def __init__(self, d_in, d_out, r, alpha):
        super().__init__()
        self.A = torch.nn.Parameter(torch.empty(r, d_in))
        self.B = torch.nn.Parameter(torch.zeros(d_out, r))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # U(-1/sqrt(in), 1/sqrt(in))
        self.scale = alpha / r

    def forward(self, x):
        return (x @ self.A.t()) @ self.B.t() * self.scale


class GPT2(torch.nn.Module):
    """GPT-2 over frozen weights W (dict of tensors), with q/k/v slice adapters."""

    def __init__(self, cfg, W, targets, r, alpha):
        super().__init__()
        self.cfg, self.W = cfg, W
        C = cfg["n_embd"]
        self.slices = [s for s in ("q", "k", "v") if s in targets]
        self.lora = torch.nn.ModuleList(
            torch.nn.ModuleDict({s: LoRA(C, C, r, alpha) for s in self.slices}) for _ in range(cfg["n_layer"]))
        T = cfg["n_positions"]
        self.register_buffer("causal", torch.ones(T, T, dtype=torch.bool).triu(1), persistent=False)

    def block(self, x, i):
        W, p = self.W, f"h.{i}."
        B, T, C = x.shape
        NH, eps = self.cfg["n_head"], self.cfg["layer_norm_epsilon"]
        h = F.layer_norm(x, (C,), W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = torch.addmm(W[p + "attn.c_attn.bias"], h.view(B * T, C), W[p + "attn.c_attn.weight"]).view(B, T, 3 * C)
        q, k, v = qkv.split(C, dim=2)
        parts = {"q": q, "k": k, "v": v}
        for s in self.slices:
            parts[s] = parts[s] + self.lora[i][s](h)
        q, k, v = (parts[s].view(B, T, NH, C // NH).transpose(1, 2) for s in ("q", "k", "v"))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // NH))
        att = att.masked_fill(self.causal[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B * T, C)
        x = x + torch.addmm(W[p + "attn.c_proj.bias"], y, W[p + "attn.c_proj.weight"]).view(B, T, C)
        h = F.layer_norm(x, (C,), W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps).view(B * T, C)
        h = F.gelu(torch.addmm(W[p + "mlp.c_fc.bias"], h, W[p + "mlp.c_fc.weight"]), approximate="tanh")
        return x + torch.addmm(W[p + "mlp.c_proj.bias"], h, W[p + "mlp.c_proj.weight"]).view(B, T, C)

    def forward(self, idx, targets):
        W, (B, T) = self.W, idx.shape
        x = W["wte.weight"][idx] + W["wpe.weight"][:T]
        for i in range(self.cfg["n_layer"]):
            x = self.block(x, i)
        C = self.cfg["n_embd"]
        x = F.layer_norm(x, (C,), W["ln_f.weight"], W["ln_f.bias"], self.cfg["layer_norm_epsilon"])
        logits = x.view(B * T, C) @ W["wte.weight"].t()
        return F.cross_entropy(logits, targets.reshape(B * T))


def read_bin(path):
    header = np.fromfile(path, dtype=np.int32, count=256)
    if header[0] not in (20240520, 20240801):
        sys.exit(f"torch_step.py: {path}: not an llm.c .bin file")
    dtype = np.uint16 if header[0] == 20240520 else np.uint32
    return np.memmap(path, dtype=dtype, mode="r", offset=1024, shape=(int(header[2]),))


def step_batch(tokens, G, T, step):
    """lorad's batch of STEP with --shuffle off: windows step*G .. step*G+G-1 (mod count)."""
    n = (len(tokens) - 1) // T
    rows = [np.asarray(tokens[(i % n) * T:(i % n) * T + T + 1], dtype=np.int64) for i in range(step * G, step * G + G)]
    b = torch.from_numpy(np.stack(rows))
    return b[:, :-1].contiguous(), b[:, 1:].contiguous()


def main():
    a = ARGS
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    W = load_safetensors(os.path.join(a.model, "model.safetensors"))
    model = GPT2(cfg, W, a.targets.split(","), a.rank, a.alpha)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (a.steps - s) / max(1, a.steps)))
    tokens = read_bin(a.data)
    load_s = time.perf_counter() - t0
    steps = []
    for s in range(a.steps):
        x, y = step_batch(tokens, a.batch, a.seq, s)
        t = time.perf_counter()
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        steps.append({"step": s + 1, "loss": loss.item(), "step_s": dt})
        print(f"torch step {s + 1}/{a.steps} | loss {loss.item():.4f} | {dt:.3f} s", file=sys.stderr, flush=True)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "load_s": load_s,
                      "trainable": sum(p.numel() for p in params), "steps": steps}))


if __name__ == "__main__":
    main()
