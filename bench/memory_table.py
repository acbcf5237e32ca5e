"""bench/memory_table.py: the README's table of which Llama sizes fit in how much memory
with each --base-dtype and --recompute, from the layout lorad allocates: the frozen
weights as each dtype holds them (BF16 files: f32 embeddings for the lookup, the LM head
in bf16, the layer products in f32 / bf16 / int8 / nf4), lorad's activation block
(worker/llama.c's llama_acts_plan and model.c's scratch, the figure train.log states)
and the product buffers, for LoRA r=16 on q_proj,v_proj at batch 1. bench/quant.py's
runs measure the 1B and 8B rows (peak RSS against this estimate).
usage: memory_table.py [--seq T]
"""

import argparse

MODELS = [  # name, layers, d, FFN, heads, KV heads, vocab, tied
    ("Llama-3.2-1B", 16, 2048, 8192, 32, 8, 128256, True),
    ("Llama-3.2-3B", 28, 3072, 8192, 24, 8, 128256, True),
    ("Llama-3-8B", 32, 4096, 14336, 32, 8, 128256, False),
    ("Llama-2-13B", 40, 5120, 13824, 40, 40, 32000, False),
    ("Llama-3-70B", 80, 8192, 28672, 64, 8, 128256, False),
]
BYTES = {"f32": 4.0, "bf16": 2.0, "int8": 1.0 + 4 / 64, "nf4": 0.5 + 4 / 64}
GIB = 2.0 ** 30
OVERHEAD = 0.25 * GIB  # the process: libraries, oneDNN's kernels, the tokens, the adapters' optimizer


def product_params(L, C, F, H, KV):
    hd = C // H
    return L * (C * H * hd * 2 + 2 * C * KV * hd + 3 * C * F)


def weights_bytes(m, dtype):
    _, L, C, F, H, KV, V, tied = m
    emb = 4.0 * V * C                                   # f32 copy of the embedding, for the lookup
    head = (2.0 if dtype != "f32" else 4.0) * V * C     # the LM head: bf16 (mapped), or f32
    if tied and dtype == "f32":
        head = 0.0                                      # the head is the f32 embedding itself
    return BYTES[dtype] * product_params(L, C, F, H, KV) + emb + head


def activation_bytes(m, T, recompute, rank=16, threads=2):
    """Floats of lorad's activation block for batch 1 (LoRA on q, v), as llama_acts_plan lays it."""
    _, L, C, F, H, KV, V, _ = m
    hd, N = C // H, T
    Q, K = H * hd, KV * hd
    LK = 1 if recompute else L
    per_layer = LK * (N + N * Q + 2 * N * K + H * T + N * C + N + 2 * N * F) + L * N * C
    single = (N * C * 6 + N * Q + N * F + N + N + 128 * V + T * hd + N * Q * 2 + 2 * N * K + 3 * N * F)
    lora_u = 2 * L * N * rank
    scratch = max(threads * 2 * 64 * T, N * (C + rank))
    return 4.0 * (per_layer + single + lora_u + scratch)


def buffers_bytes(m, T, threads=2):
    _, L, C, F, H, KV, V, _ = m
    return 2.0 * T * F + threads * 2.0 * (1 << 19)  # A in bf16 (at most T x F), the decoded tiles


def peak_bytes(m, T, dtype, recompute):
    return weights_bytes(m, dtype) + activation_bytes(m, T, recompute) + buffers_bytes(m, T) + OVERHEAD


def table(T):
    lines = [f"| model (seq {T}, batch 1, LoRA r=16 q,v) | " +
             " | ".join(f"{d}{' + recompute' if rc else ''}" for d in BYTES for rc in (False, True)) + " |",
             "|---|" + "---:|" * (2 * len(BYTES))]
    for m in MODELS:
        cells = [f"{peak_bytes(m, T, d, rc) / GIB:.1f}" for d in BYTES for rc in (False, True)]
        lines.append(f"| {m[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, nargs="+", default=[512, 2048])
    a = ap.parse_args()
    for T in a.seq:
        print(table(T) + "\n")


if __name__ == "__main__":
    main()
