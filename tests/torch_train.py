"""torch_train.py: the PyTorch reference trainer, for any model of torch_gpt2.py or torch_llama.py.

A model is its forward, LOGITS_FN(cfg, W, idx, lora) -> logits [B, T, V], with W its
weights as torch tensors and LORA the adapters of the forward pass (make_lora). On top:

  - the loss lorad's contract defines: the sum of the counted targets' cross-entropies
    over the number of counted targets, of a step's batch or of a whole dataset;
  - the trainer: torch.optim.AdamW, clip_grad_norm_, LambdaLR with the HF schedules,
    micro-batches that only split the work, and the validation loss of a whole dataset
    after every step.

Both model files self-test it on their model (micro-batch invariance, validation).
"""

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness import (AdapterSpec, PerModule, flags_config, lora_scale, n_samples, peft_module_scale,  # noqa: E402
                     per_module, random_adapters, sample_windows, step_batch)

# Adapters for the forward pass: module path -> list of (lo, hi, A, B, scale).
Lora = Dict[str, List[tuple]]
# A model's forward: (cfg, W, idx [B, T], lora) -> logits [B, T, V].
LogitsFn = Callable[..., torch.Tensor]


def make_lora(specs: List[AdapterSpec], params: Dict[str, tuple], scale: PerModule) -> Lora:
    """SCALE: one scale for every adapter, or a function of the module path."""
    lora: Lora = {}
    for sp in specs:
        A, B = params[sp.key]
        lora.setdefault(sp.module, []).append((sp.lo, sp.hi, A, B, per_module(scale, sp.module)))
    return lora


def lora_delta(y: torch.Tensor, x: torch.Tensor, out: int, pairs: List[tuple]) -> torch.Tensor:
    """Y [.., OUT] plus s * (x @ A^T) @ B^T on output columns [lo, hi) of each adapter."""
    for lo, hi, A, B, s in pairs:
        y = y + F.pad(s * ((x @ A.t()) @ B.t()), (lo, out - hi))
    return y


def to_torch(weights: Dict[str, np.ndarray], dtype=torch.float64, grad=False):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=grad) for k, v in weights.items()}


def to_torch_pairs(params: Dict[str, tuple], dtype=torch.float64):
    return {k: (torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)) for k, (a, b) in params.items()}


def masked_ce(logits, targets, weights):
    """Cross-entropy of every target [B,T], times its 0/1 loss weight."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                         reduction="none")
    return ce.reshape(targets.shape) * weights


def masked_ce_sum(logits, targets, weights):
    """Sum of the cross-entropies of the counted targets."""
    return masked_ce(logits, targets, weights).sum()


def batch_loss(logits_fn: LogitsFn, cfg, W, inp: np.ndarray, tgt: np.ndarray, w: np.ndarray,
               lora: Optional[Lora] = None) -> float:
    """The contract's loss of one batch (inputs, targets, weights as step_batch gives them)."""
    with torch.no_grad():
        logits = logits_fn(cfg, W, torch.tensor(inp), lora)
        return masked_ce_sum(logits, torch.tensor(tgt), torch.tensor(w)).item() / w.sum()


@dataclass
class TrainSpec:
    """Everything about a training run that is not the model or the data."""
    mode: str = "lora"  # lora | full
    targets: Tuple[str, ...] = ()
    rank: int = 4
    alpha: float = 8.0
    rslora: bool = False
    steps: int = 10
    batch: int = 4
    micro_batch: int = 4
    seq: int = 16
    lr: float = 1e-2
    schedule: str = "constant"
    warmup: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float = 0.0
    seed: int = 1234
    eval_every: int = 0  # --eval-every (lorad's flag; the reference evaluates every step)
    # --rank-pattern / --alpha-pattern: (module key, value) pairs in the flags' order
    rank_pattern: Tuple[Tuple[str, int], ...] = ()
    alpha_pattern: Tuple[Tuple[str, float], ...] = ()

    @property
    def scale(self) -> float:
        """The scale of a module no pattern matches."""
        return lora_scale(self.alpha, self.rank, self.rslora)

    def flags_config(self) -> dict:
        return flags_config(self.rank, self.alpha, self.rslora, self.rank_pattern, self.alpha_pattern)

    def module_rank(self, module: str) -> int:
        """MODULE's rank (full path): the first matching --rank-pattern key's, else --rank."""
        return peft_module_scale(self.flags_config(), module)[0]

    def module_alpha(self, module: str) -> float:
        return peft_module_scale(self.flags_config(), module)[1]

    def module_scale(self, module: str) -> float:
        """MODULE's scale alpha/r (rsLoRA alpha/sqrt(r)) after the patterns."""
        return peft_module_scale(self.flags_config(), module)[2]


def lr_lambda(schedule: str, warmup: int, n_steps: int):
    """The multiplier of the base lr at step s (0-based), HF semantics."""
    def f(s: int) -> float:
        if schedule == "constant":
            return min(1.0, s / warmup) if warmup > 0 else 1.0
        if s < warmup:
            return s / max(1, warmup)
        if schedule == "linear":
            return max(0.0, (n_steps - s) / max(1, n_steps - warmup))
        if schedule == "cosine":
            prog = (s - warmup) / max(1, n_steps - warmup)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))
        raise ValueError(f"unknown schedule {schedule}")
    return f


def eval_steps(eval_every: int, n_steps: int) -> List[int]:
    """The 1-based steps after whose update lorad evaluates: the multiples of EVAL_EVERY
    (0: none) and the last step."""
    return sorted({s for s in range(1, n_steps + 1) if eval_every and s % eval_every == 0}
                  | {n_steps})


def sample_losses(logits_fn: LogitsFn, cfg, W: Dict[str, torch.Tensor], tokens: np.ndarray,
                  mask: Optional[np.ndarray], T: int, micro: int,
                  lora: Optional[Lora] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(sum of counted cross-entropies, counted targets) of every sample of a dataset:
    samples 0..N-1 in order, forward only, MICRO samples at a time."""
    N = n_samples(tokens, T)
    sums, counts = [], []
    with torch.no_grad():
        for lo in range(0, N, micro):
            inp, tgt, w = sample_windows(tokens, mask, T, list(range(lo, min(lo + micro, N))))
            logits = logits_fn(cfg, W, torch.tensor(inp), lora)
            ce = masked_ce(logits, torch.tensor(tgt), torch.tensor(w, dtype=logits.dtype))
            sums += ce.sum(-1).tolist()
            counts += w.sum(-1).tolist()
    return np.array(sums), np.array(counts)


def dataset_loss(logits_fn: LogitsFn, cfg, W: Dict[str, torch.Tensor], tokens: np.ndarray,
                 mask: Optional[np.ndarray], T: int, micro: int, lora: Optional[Lora] = None) -> float:
    """lorad's validation loss: the counted cross-entropies of the whole dataset summed,
    over the number of counted targets of the whole dataset."""
    sums, counts = sample_losses(logits_fn, cfg, W, tokens, mask, T, micro, lora)
    return float(sums.sum() / counts.sum())


@dataclass
class TrainResult:
    losses: List[float]
    lrs: List[float]
    grad_norms: List[float]
    params: Dict[str, object]  # lora: key -> (A, B); full: name -> array (numpy)
    # with a validation set: step -> validation loss after its update (0: initial), every step
    val_losses: Dict[int, float] = field(default_factory=dict)


def reference_train(logits_fn: LogitsFn, cfg, base: Dict[str, np.ndarray], tokens: np.ndarray,
                    mask: Optional[np.ndarray], ts: TrainSpec,
                    init: Optional[Dict[str, tuple]] = None,
                    specs: Optional[List[AdapterSpec]] = None,
                    dtype=torch.float64,
                    val: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None,
                    parts: Optional[Callable[[int], List[tuple]]] = None) -> TrainResult:
    """Runs TS.steps steps of the model LOGITS_FN (CFG, weights BASE) exactly as the
    contract says and records loss, lr and the pre-clip gradient norm of each step. LoRA
    mode trains the adapters INIT (by spec key); full mode trains every tensor of BASE.
    VAL (tokens, mask) adds the validation loss at the initial parameters and after every
    step's update (lorad reports it only after the steps of eval_steps(); the others tell a
    test whether it could see a wrong step). PARTS(step) replaces the step's batch of
    windows of TOKENS: a list of (inputs [b,n], targets [b,n], weights [b,n]) run one at a
    time, of any lengths (packed data: each example alone)."""
    full = ts.mode == "full"
    W = to_torch(base, dtype, grad=full)
    if full:
        params = list(W.values())
        lora = None
    else:
        P = {k: (torch.tensor(a, dtype=dtype, requires_grad=True),
                 torch.tensor(b, dtype=dtype, requires_grad=True)) for k, (a, b) in init.items()}
        params = [t for ab in P.values() for t in ab]
        lora = make_lora(specs, P, ts.module_scale)
    opt = torch.optim.AdamW(params, lr=ts.lr, betas=(ts.beta1, ts.beta2), eps=ts.eps,
                            weight_decay=ts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(ts.schedule, ts.warmup, ts.steps))
    res = TrainResult([], [], [], {})

    def evaluate(step: int) -> None:
        res.val_losses[step] = dataset_loss(logits_fn, cfg, W, val[0], val[1], ts.seq, ts.micro_batch, lora)

    if val is not None:
        evaluate(0)
    for s in range(ts.steps):
        if parts is None:  # micro-batches only split the work
            inp, tgt, w = step_batch(tokens, mask, ts.seq, ts.batch, s)
            step_parts = [(inp[lo:lo + ts.micro_batch], tgt[lo:lo + ts.micro_batch], w[lo:lo + ts.micro_batch])
                          for lo in range(0, ts.batch, ts.micro_batch)]
        else:
            step_parts = parts(s)
        count = sum(w.sum() for _, _, w in step_parts)
        opt.zero_grad(set_to_none=False)
        loss = 0.0
        for inp, tgt, w in step_parts:
            logits = logits_fn(cfg, W, torch.tensor(inp), lora)
            part = masked_ce_sum(logits, torch.tensor(tgt), torch.tensor(w, dtype=dtype))
            (part / count).backward()
            loss += part.item() / count
        gnorm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
        if ts.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, ts.clip)
        res.losses.append(loss)
        res.lrs.append(opt.param_groups[0]["lr"])
        res.grad_norms.append(gnorm)
        opt.step()
        sched.step()
        if val is not None:
            evaluate(s + 1)
    if full:
        res.params = {k: v.detach().double().numpy().copy() for k, v in W.items()}
    else:
        res.params = {k: (a.detach().double().numpy().copy(), b.detach().double().numpy().copy())
                      for k, (a, b) in P.items()}
    return res


def gradient_check(logits_fn: LogitsFn, cfg, base: Dict[str, np.ndarray], specs: List[AdapterSpec],
                   rng: np.random.Generator, probes: Callable, nonzero=False) -> None:
    """Autograd's gradients of a masked step loss against central differences, in float64:
    random adapters SPECS (rank 3, rsLoRA, non-zero B) on the model LOGITS_FN with weights
    BASE, every tensor trainable. PROBES(W, P, inp, tgt) picks the (tensor, index) pairs to
    check among the weights W and the adapters P (key -> (A, B)) of the batch inp -> tgt;
    |fd - autograd| <= 1e-6 max(1, |autograd|), and with NONZERO every picked gradient must
    be clearly non-zero (a probe that sees nothing proves nothing)."""
    scale = lora_scale(8, 3, True)
    init = random_adapters(specs, 3, scale, rng)
    tokens = rng.integers(0, cfg.vocab_size, 80)
    mask = (rng.random(80) > 0.3).astype(np.uint8)
    inp, tgt, w = step_batch(tokens, mask, 9, 3, 2)
    W = to_torch(base, grad=True)
    P = {k: (torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)) for k, (a, b) in init.items()}

    def loss():
        logits = logits_fn(cfg, W, torch.tensor(inp), make_lora(specs, P, scale))
        return masked_ce_sum(logits, torch.tensor(tgt), torch.tensor(w)) / w.sum()

    loss().backward()
    h = 1e-6
    for t, ix in probes(W, P, inp, tgt):
        with torch.no_grad():
            old = t[ix].item()
            t[ix] = old + h
            up = loss().item()
            t[ix] = old - h
            down = loss().item()
            t[ix] = old
        fd, ag = (up - down) / (2 * h), t.grad[ix].item()
        assert not nonzero or abs(ag) > 1e-6, f"grad {ix} is ~0: a weak probe"
        assert abs(fd - ag) <= 1e-6 * max(1.0, abs(ag)), f"grad {ix}: fd {fd} autograd {ag}"


def self_test() -> None:
    """The schedules and the evaluation steps (the trainer itself is self-tested on each
    model by torch_gpt2.py and torch_llama.py)."""
    f = lr_lambda("linear", 2, 10)
    assert [f(s) for s in (0, 1, 2, 3, 9)] == [0.0, 0.5, 1.0, 7 / 8, 1 / 8]
    f = lr_lambda("cosine", 3, 10)
    assert [f(s) for s in (0, 1, 3)] == [0.0, 1 / 3, 1.0]
    assert abs(f(9) - 0.5 * (1 + math.cos(math.pi * 6 / 7))) < 1e-15
    f = lr_lambda("constant", 4, 10)
    assert [f(s) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert lr_lambda("constant", 0, 10)(0) == 1.0
    assert eval_steps(5, 10) == [5, 10] and eval_steps(0, 7) == [7] and eval_steps(4, 10) == [4, 8, 10]
    print("torch_train self-test: PASS")


if __name__ == "__main__":
    self_test()
