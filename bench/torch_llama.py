"""bench/torch_llama.py: the PyTorch reference step of bench/quant.py: a Llama (the same
model directory, weights read from its BF16 safetensors into float32) with LoRA r=16 on
q_proj and v_proj (PEFT's init: A kaiming-uniform, B zero), the frozen base without
gradients, AdamW on the adapters, batch 1 at --seq, the tokens of --data in order. Times
each step around forward, backward and the optimizer; writes {tokens_per_s, step_s,
loss1, version} to --out after one warm-up step.
usage: torch_llama.py --model DIR --data FILE --seq T --steps N --out FILE.json
"""

import argparse
import json
import math
import os
import struct
import time

import numpy as np
import torch


def load(path):
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    raw = np.memmap(os.path.join(path, "model.safetensors"), np.uint8, "r")
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        bits = np.frombuffer(raw[base + a:base + b], np.uint16)
        out[name] = torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32).reshape(e["shape"]))
    return out


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin


def main():
    ap = argparse.ArgumentParser()
    for a in ("--model", "--data", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    W = load(args.model)
    C, H, KV, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]
    hd, T, r = C // H, args.seq, 16
    lora = {}
    for l in range(L):
        for site in ("q_proj", "v_proj"):
            out_dim = W[f"model.layers.{l}.self_attn.{site}.weight"].shape[0]
            A = torch.empty(r, C)
            torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            lora[(l, site)] = (A.requires_grad_(), torch.zeros(out_dim, r, requires_grad=True))
    opt = torch.optim.AdamW([p for ab in lora.values() for p in ab], lr=2e-4)
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat((ang.cos(), ang.cos()), -1), torch.cat((ang.sin(), ang.sin()), -1)
    mask = torch.full((T, T), float("-inf")).triu(1)
    toks = np.fromfile(args.data, np.uint32, offset=1024).astype(np.int64)

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["rms_norm_eps"]) * w

    def lin(x, l, site, group):
        y = x @ W[f"model.layers.{l}.{group}.{site}.weight"].t()
        if (l, site) in lora:
            A, B = lora[(l, site)]
            y = y + (x @ A.t()) @ B.t() * (16 / r)
        return y

    def step(s):
        t = torch.from_numpy(toks[s * T:s * T + T + 1])
        x = W["model.embed_tokens.weight"][t[:-1]]
        for l in range(L):
            p = f"model.layers.{l}."
            h = norm(x, W[p + "input_layernorm.weight"])
            q = rope(lin(h, l, "q_proj", "self_attn").view(T, H, hd).transpose(0, 1), cos, sin)
            k = rope(lin(h, l, "k_proj", "self_attn").view(T, KV, hd).transpose(0, 1), cos, sin)
            v = lin(h, l, "v_proj", "self_attn").view(T, KV, hd).transpose(0, 1)
            k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1) @ v
            x = x + lin(att.transpose(0, 1).reshape(T, C), l, "o_proj", "self_attn")
            h = norm(x, W[p + "post_attention_layernorm.weight"])
            g = torch.nn.functional.silu(lin(h, l, "gate_proj", "mlp")) * lin(h, l, "up_proj", "mlp")
            x = x + lin(g, l, "down_proj", "mlp")
        head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
        loss = torch.nn.functional.cross_entropy(norm(x, W["model.norm.weight"]) @ head.t(), t[1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    times, loss1 = [], None
    for s in range(args.steps):
        t0 = time.time()
        loss = step(s)
        times.append(time.time() - t0)
        loss1 = loss if loss1 is None else loss1
    step_s = sum(times[1:]) / max(1, len(times) - 1)
    with open(args.out, "w") as f:
        json.dump({"tokens_per_s": T / step_s, "step_s": step_s, "loss1": loss1, "version": torch.__version__}, f)


if __name__ == "__main__":
    main()
