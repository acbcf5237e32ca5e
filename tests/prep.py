"""prep.py: `lorad prep` for real data (issue #14, part 4) against a reference written here.

The test writes its own tokenizers, GPT-2-style byte-level BPEs (bytes_to_unicode, and
merges it learns on a small corpus of its own):
  gpt2  no post-processor tokens; no config.json, so the EOS is the special token
        <|endoftext|>
  bos   a TemplateProcessing that puts <s> first, and a config.json whose eos_token_id
        is the list [</s>, <|im_end|>] (the first is appended, both are recorded)
The token ids of a string come from `lorad tokenize` (the tokenizer's fidelity is another
test's); everything prep adds is computed here from the JSON lines themselves, by TRL's
rules: the ids of prompt + completion as one text, the completion's tokens counted from
len(ids(prompt)) on, the EOS appended (unless the text ends with one) and counted, the
post-processor's tokens around it, the first token of an example never counted, --max-len
keeping the first tokens, and example i in --val-out when floor((i+1)F) > floor(iF).
Cases:
  formats  text, prompt/completion and Alpaca .jsonl, .txt whole and --split blank-lines,
           with each tokenizer (and gpt2's as legacy vocab.json + merges.txt): tokens,
           masks, offsets, attributes and the fingerprint (FNV-1a 64 over the tokenizer's
           files, computed here)
  options  --train-on all, --add-eos off, --max-len, --val-split, a text that already
           ends with the EOS, empty examples, several inputs, the summary's numbers
  errors   malformed lines: one line "FILE:LINE: ..." and exit 2, leaving no output; with
           --skip-bad counted and skipped; chat data and --format chat refused; existing
           outputs kept without --overwrite; no EOS; flags that conflict
  threads  --threads 1, 2 and 3 give the same datasets, attribute for attribute, over
           more than one batch of lines, with malformed ones skipped
  train    train and eval accept their own data, and refuse another tokenizer's
           (fingerprint), a larger vocabulary, and ids >= vocab_size, in one line, exit 2
Usage: prep.py --lorad PATH --workdir DIR --case NAME
"""

import json
import math
import os
import random
import re
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

import h5py
import numpy as np

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_ref as ref  # noqa: E402

EXIT_USER = 2
# Stanford Alpaca's train.py, PROMPT_DICT
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "away", "Hello", "world", "naïve", "café",
         "日本語", "😀", "x=1+2", "don't", "2024", "tab\there", "new\nline", "  spaces", "🇫🇷", "über", "Ωmega"]


# --------------------------------------------------------------------------------------
# Tokenizers written by the test
# --------------------------------------------------------------------------------------

def bytes_to_unicode() -> Dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_merges(corpus: str, n_merges: int) -> List[Tuple[str, str]]:
    """A few BPE merges over the corpus's words (split roughly at spaces, with GPT-2's
    leading-space convention); any merges do, the tokenizer only has to be consistent."""
    b2u = bytes_to_unicode()
    words: Dict[Tuple[str, ...], int] = {}
    for w in re.findall(r" ?\S+", corpus):
        key = tuple(b2u[b] for b in w.encode())
        words[key] = words.get(key, 0) + 1
    merges = []
    for _ in range(n_merges):
        pairs: Dict[Tuple[str, str], int] = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        joined = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            joined[tuple(out)] = joined.get(tuple(out), 0) + c
        words = joined
    return merges


class Tok(NamedTuple):
    dir: str
    before: List[int]  # what the post-processor puts before the text
    after: List[int]
    eos: List[int]     # the EOS ids prep must find, the first appended
    n_tokens: int


def write_tokenizer(d: str, kind: str, corpus: str, n_merges: int = 60) -> Tok:
    """Writes D/tokenizer.json (and for "bos" D/config.json's eos_token_id)."""
    os.makedirs(d, exist_ok=True)
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = learn_merges(corpus, n_merges)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    specials = ["<|endoftext|>"] if kind == "gpt2" else ["<s>", "</s>", "<|im_end|>"]
    added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    ids = {a["content"]: a["id"] for a in added}
    post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    before, eos = [], [ids["<|endoftext|>"]] if kind == "gpt2" else [ids["</s>"], ids["<|im_end|>"]]
    if kind == "bos":
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [ids["<s>"]], "tokens": ["<s>"]}}}
        before = [ids["<s>"]]
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"eos_token_id": eos, "bos_token_id": ids["<s>"]}, f)
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
          "post_processor": post, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                              "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                    "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                    "merges": [f"{a} {b}" for a, b in merges]}}
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tj, f, ensure_ascii=False)
    return Tok(d, before, [], eos, len(vocab) + len(specials))


def fnv1a64(data: bytes, h: int = 0xcbf29ce484222325) -> int:
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_legacy(d: str, tok: Tok) -> Tok:
    """TOK's vocabulary and merges as GPT-2's vocab.json + merges.txt in D."""
    with open(os.path.join(tok.dir, "tokenizer.json")) as f:
        tj = json.load(f)
    os.makedirs(d, exist_ok=True)
    vocab = dict(tj["model"]["vocab"], **{a["content"]: a["id"] for a in tj["added_tokens"]})
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in tj["model"]["merges"]))
    return Tok(d, [], [], [vocab["<|endoftext|>"]], len(vocab))


def tokenizer_files(tok_dir: str) -> List[str]:
    """What tokenizer_open reads: tokenizer.json, or vocab.json and merges.txt."""
    return ["tokenizer.json"] if os.path.exists(os.path.join(tok_dir, "tokenizer.json")) else ["vocab.json",
                                                                                                "merges.txt"]


def fingerprint(tok_dir: str) -> str:
    """FNV-1a 64 over each tokenizer file's name, a NUL, its size (8 bytes, little-endian), its bytes."""
    blob = b""
    for name in tokenizer_files(tok_dir):
        with open(os.path.join(tok_dir, name), "rb") as f:
            data = f.read()
        blob += name.encode() + b"\0" + len(data).to_bytes(8, "little") + data
    return "%016x" % fnv1a64(blob)


# --------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------

class Ctx:
    def __init__(self, fails: ref.Failures, lorad: str, work: str):
        self.fails, self.lorad, self.work = fails, lorad, work
        self.n_tok = 0

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    def tokenize(self, tok: Tok, texts: List[str], special: bool) -> List[List[int]]:
        """Each text's ids from `lorad tokenize --jsonl`."""
        self.n_tok += 1
        src = self.path(f"tokenize_{self.n_tok}.jsonl")
        with open(src, "w") as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        p = ref.run_lorad(self.lorad, ["tokenize", "--tokenizer", tok.dir, "--jsonl", src,
                                       "--add-special", "on" if special else "off"])
        lines = p.stdout.split("\n")[:-1]
        if p.returncode != 0 or len(lines) != len(texts):
            self.fails.abort(f"lorad tokenize failed ({p.returncode}, {len(lines)} of {len(texts)} lines): "
                             f"{p.stderr.strip()}")
        return [[int(x) for x in line.split()] for line in lines]


Segments = List[Tuple[str, bool]]  # an example: its text's parts, counted or not


def segments(fmt: str, obj: dict) -> Segments:
    if fmt == "text":
        return [(obj["text"], True)]
    if fmt == "completion":
        return [(obj["prompt"], False), (obj["completion"], True)]
    inp = obj.get("input")
    prompt = (ALPACA_INPUT.format(instruction=obj["instruction"], input=inp) if inp
              else ALPACA_NO_INPUT.format(instruction=obj["instruction"]))
    return [(prompt, False), (obj["output"], True)]


def txt_docs(data: str, blank_lines: bool) -> List[str]:
    """A .txt file's documents: the whole, or the runs of non-blank lines joined by '\\n'."""
    if not blank_lines:
        return [data]
    docs, run = [], []
    for line in data.split("\n"):
        if line.strip(" \t\r"):
            run.append(line)
        elif run:
            docs.append("\n".join(run))
            run = []
    return docs + (["\n".join(run)] if run else [])


class Expect(NamedTuple):
    examples: List[Tuple[List[int], List[int]]]  # kept examples' (ids, mask), in order
    truncated: int
    empty: int
    boundary: int


def expect(c: Ctx, tok: Tok, exs: List[Segments], all_=False, add_eos=True, max_len=0) -> Expect:
    fulls = ["".join(s for s, _ in ex) for ex in exs]
    prefixes = [["".join(s for s, _ in ex[:i + 1]) for i in range(len(ex) - 1)] for ex in exs]
    flat = fulls + [p for ps in prefixes for p in ps]
    ids = c.tokenize(tok, flat, False)
    with_special = c.tokenize(tok, fulls, True)
    out, truncated, empty, boundary, at = [], 0, 0, 0, len(fulls)
    for e, ex in enumerate(exs):
        body = ids[e]
        if with_special[e] != tok.before + body + tok.after:
            c.fails.add(f"the test's tokenizer adds other tokens than it wrote: {with_special[e]} vs {body}")
        ks = []
        for _ in prefixes[e]:
            pre = ids[at]
            at += 1
            boundary += int(pre != body[:len(pre)])
            ks.append(len(pre))
        ks.append(len(body))
        mask, k0 = [], 0
        for (_, counted), k in zip(ex, ks):
            k = min(max(k, k0), len(body))
            mask += [int(all_ or counted)] * (k - k0)
            k0 = k
        toks = list(body)
        if add_eos and not (body and body[-1] == tok.eos[0]) and not (tok.after and tok.after[-1] == tok.eos[0]):
            toks.append(tok.eos[0])
            mask.append(1)
        toks = tok.before + toks + tok.after
        mask = [0] * len(tok.before) + mask + [1] * len(tok.after)
        if toks:
            mask[0] = 0
        if max_len and len(toks) > max_len:
            toks, mask = toks[:max_len], mask[:max_len]
            truncated += 1
        if not toks:
            empty += 1
            continue
        out.append((toks, mask))
    return Expect(out, truncated, empty, boundary)


def is_val(i: int, f: float) -> bool:
    return math.floor((i + 1) * f) > math.floor(i * f)


def split(examples, f: float):
    train = [x for i, x in enumerate(examples) if not (f and is_val(i, f))]
    val = [x for i, x in enumerate(examples) if f and is_val(i, f)]
    return train, val


def attr_text(v) -> str:
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def read_set(path: str) -> dict:
    with h5py.File(path, "r") as f:
        d = {k: f[k][:] for k in ("tokens", "loss_mask", "doc_offsets") if k in f}
        d["attrs"] = {k: (attr_text(v) if isinstance(v, (str, bytes, np.bytes_)) else np.asarray(v).tolist())
                      for k, v in f.attrs.items()}
    return d


def check_set(c: Ctx, label: str, path: str, examples, tok: Tok, sources: List[str], fmt: str, train_on: str):
    """PATH holds EXAMPLES, with every attribute."""
    if not c.fails.check(os.path.isfile(path), f"{label}: {path} was not written"):
        return
    d = read_set(path)
    want_tok = [t for ids, _ in examples for t in ids]
    want_mask = [m for _, mask in examples for m in mask]
    offsets = np.cumsum([0] + [len(ids) for ids, _ in examples[:-1]]).tolist()
    c.fails.check(d["tokens"].tolist() == want_tok, f"{label}: tokens differ:\n got {d['tokens'].tolist()[:80]}\n"
                                                    f"want {want_tok[:80]}")
    c.fails.check(d["loss_mask"].tolist() == want_mask, f"{label}: loss_mask differs:\n got "
                                                        f"{d['loss_mask'].tolist()[:80]}\nwant {want_mask[:80]}")
    c.fails.check(d.get("doc_offsets", np.array([])).tolist() == offsets,
                  f"{label}: doc_offsets {d.get('doc_offsets')} want {offsets}")
    c.fails.check(d["tokens"].dtype == np.uint32 and d["loss_mask"].dtype == np.uint8 and
                  d["doc_offsets"].dtype == np.int64, f"{label}: dtypes {d['tokens'].dtype} {d['loss_mask'].dtype}")
    want = {"vocab_size": tok.n_tokens, "eos_ids": tok.eos, "tokenizer_fingerprint": fingerprint(tok.dir),
            "tokenizer_files": ",".join(tokenizer_files(tok.dir)), "sources": json.dumps(sources, separators=(",", ":")),
            "format": fmt, "train_on": train_on}
    a = d["attrs"]
    for k, v in want.items():
        got = a.get(k)
        if k == "sources" and got is not None:
            got, v = json.loads(got), sources
        if k == "eos_ids" and isinstance(got, int):
            got = [got]
        c.fails.check(got == v, f"{label}: attribute {k} is {got!r}, want {v!r}")


def prep(c: Ctx, args: List[str], label: str, ok=True, timeout=300):
    p = ref.run_lorad(c.lorad, ["prep"] + [str(a) for a in args], timeout=timeout)
    if ok:
        c.fails.check(p.returncode == 0, f"{label}: prep failed ({p.returncode}): {p.stderr.strip()}")
    return p


def write_jsonl(path: str, objs: List[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for o in objs:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    return path


def phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def corpus_objs(rng: random.Random, n: int) -> Dict[str, List[dict]]:
    """N lines of each format; some prompts end in a space, so a token straddles the
    prompt's end, and some Alpaca lines have no input, an empty one or a null one."""
    text = [{"text": phrase(rng, rng.randint(1, 12)), "id": i} for i in range(n)]
    comp = [{"prompt": phrase(rng, rng.randint(1, 8)) + rng.choice(["", " ", ":", "\n"]),
             "completion": rng.choice(["", " "]) + phrase(rng, rng.randint(1, 8)), "meta": {"k": i}} for i in range(n)]
    alp = []
    for i in range(n):
        o = {"instruction": phrase(rng, rng.randint(1, 6)), "output": phrase(rng, rng.randint(1, 6))}
        pick = i % 4
        if pick == 1:
            o["input"] = phrase(rng, 3)
        elif pick == 2:
            o["input"] = ""
        elif pick == 3:
            o["input"] = None
        alp.append(o)
    return {"text": text, "completion": comp, "alpaca": alp}


def corpus_text(rng: random.Random) -> str:
    return " ".join(phrase(rng, 40) for _ in range(20))


def tokenizers(c: Ctx) -> Dict[str, Tok]:
    rng = random.Random(7)
    text = corpus_text(rng)
    return {kind: write_tokenizer(c.path(f"tok_{kind}"), kind, text) for kind in ("gpt2", "bos")}


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------

def case_formats(c: Ctx) -> None:
    toks = tokenizers(c)
    objs = corpus_objs(random.Random(11), 24)
    txt = c.path("doc.txt")
    with open(txt, "w", encoding="utf-8") as f:
        f.write("First document, line one.\nline two\n\n \t\nSecond: 日本語 😀\n\n\nthird\nand last")
    with open(txt, encoding="utf-8") as f:
        txt_data = f.read()
    toks["legacy"] = write_legacy(c.path("tok_legacy"), toks["gpt2"])
    for kind, tok in toks.items():
        for fmt, lines in objs.items():
            src = write_jsonl(c.path(f"{fmt}.jsonl"), lines)
            out = c.path(f"{kind}_{fmt}.h5")
            p = prep(c, ["--tokenizer", tok.dir, "--data", src, "--out", out], f"{kind} {fmt}")
            e = expect(c, tok, [segments(fmt, o) for o in lines])
            check_set(c, f"{kind} {fmt}", out, e.examples, tok, [src], fmt, "all" if fmt == "text" else "completion")
            m = re.search(r"in (\d+) examples a token spans", p.stderr)
            c.fails.check((int(m.group(1)) if m else 0) == e.boundary,
                          f"{kind} {fmt}: {e.boundary} examples straddle the prompt's end; the summary says "
                          f"{m.group(0) if m else 'none'}")
        for blank in (False, True):
            out = c.path(f"{kind}_txt_{blank}.h5")
            prep(c, ["--tokenizer", tok.dir, "--data", txt, "--out", out] + (["--split", "blank-lines"] if blank else []),
                 f"{kind} txt {blank}")
            e = expect(c, tok, [[(d, True)] for d in txt_docs(txt_data, blank)])
            c.fails.check(len(e.examples) == (3 if blank else 1), f"the reference cut {len(e.examples)} documents")
            check_set(c, f"{kind} txt blank-lines={blank}", out, e.examples, tok, [txt], "text", "all")


def case_options(c: Ctx) -> None:
    toks = tokenizers(c)
    objs = corpus_objs(random.Random(12), 40)
    for kind, tok in toks.items():
        comp = write_jsonl(c.path(f"comp_{kind}.jsonl"), objs["completion"])
        exs = [segments("completion", o) for o in objs["completion"]]
        # --train-on all, --add-eos off, --max-len
        for extra, kw in ((["--train-on", "all"], {"all_": True}), (["--add-eos", "off"], {"add_eos": False}),
                          (["--max-len", "7"], {"max_len": 7})):
            out = c.path(f"{kind}_{extra[0][2:]}.h5")
            p = prep(c, ["--tokenizer", tok.dir, "--data", comp, "--out", out] + extra, f"{kind} {extra}")
            e = expect(c, tok, exs, **kw)
            check_set(c, f"{kind} {extra}", out, e.examples, tok, [comp], "completion",
                      "all" if kw.get("all_") else "completion")
            if kw.get("max_len"):
                c.fails.check(e.truncated > 0 and f"{e.truncated} truncated" in p.stderr,
                              f"{kind}: the summary does not say {e.truncated} truncated: {p.stderr.strip()}")
        # --val-split over two inputs, in order
        text = write_jsonl(c.path(f"text_{kind}.jsonl"), [{"text": phrase(random.Random(i), 5)} for i in range(13)])
        two = [text, c.path(f"more_{kind}.jsonl")]
        write_jsonl(two[1], [{"text": phrase(random.Random(100 + i), 4)} for i in range(9)])
        out, val = c.path(f"{kind}_train.h5"), c.path(f"{kind}_val.h5")
        p = prep(c, ["--tokenizer", tok.dir, "--data", ",".join(two), "--out", out, "--val-split", 0.3,
                     "--val-out", val], f"{kind} val split")
        with open(two[0]) as f0, open(two[1]) as f1:
            lines = [json.loads(line) for line in f0.readlines() + f1.readlines()]
        e = expect(c, tok, [segments("text", o) for o in lines])
        tr, va = split(e.examples, 0.3)
        c.fails.check(len(va) == math.floor(22 * 0.3), f"{kind}: the reference's split has {len(va)} val examples")
        check_set(c, f"{kind} train split", out, tr, tok, two, "text", "all")
        check_set(c, f"{kind} val split", val, va, tok, two, "text", "all")
        n_tok = sum(len(i) for i, _ in e.examples)
        counted = sum(sum(m) for _, m in e.examples)
        want = f"22 examples ({len(tr)} in {out}, {len(va)} in {val}), {n_tok} tokens, " \
               f"{100.0 * counted / n_tok:.1f}% of them counted"
        c.fails.check(want in p.stderr, f"{kind}: the summary lacks '{want}': {p.stderr.strip()}")
    # a text that ends with the EOS already, and empty examples (no BOS, no EOS: no tokens)
    gpt2 = toks["gpt2"]
    lines = [{"text": "ends here<|endoftext|>"}, {"text": ""}, {"text": "plain"}, {"text": ""}]
    src = write_jsonl(c.path("eos.jsonl"), lines)
    for add_eos in (True, False):
        out = c.path(f"eos_{add_eos}.h5")
        p = prep(c, ["--tokenizer", gpt2.dir, "--data", src, "--out", out, "--add-eos", "on" if add_eos else "off"],
                 f"eos present, --add-eos {add_eos}")
        e = expect(c, gpt2, [segments("text", o) for o in lines], add_eos=add_eos)
        c.fails.check(e.empty == (0 if add_eos else 2), f"the reference drops {e.empty} examples")
        check_set(c, f"eos present, --add-eos {add_eos}", out, e.examples, gpt2, [src], "text", "all")
        c.fails.check(f"{e.empty} empty examples dropped" in p.stderr, f"the summary: {p.stderr.strip()}")
    # only the appended EOS ends an example: a text ending in another of the EOS ids gets it
    bos = toks["bos"]
    lines = [{"text": "a turn<|im_end|>"}, {"text": "done</s>"}, {"text": "<s>"}]
    src = write_jsonl(c.path("eos_bos.jsonl"), lines)
    out = c.path("eos_bos.h5")
    prep(c, ["--tokenizer", bos.dir, "--data", src, "--out", out], "bos: texts ending in EOS ids")
    e = expect(c, bos, [segments("text", o) for o in lines])
    c.fails.check([ids[-1] for ids, _ in e.examples] == [bos.eos[0]] * 3 and e.examples[0][0][-2:] == bos.eos[::-1] and
                  e.examples[1][0].count(bos.eos[0]) == 1,
                  f"the reference's EOS placement: {e.examples}")
    check_set(c, "bos: texts ending in EOS ids", out, e.examples, bos, [src], "text", "all")


class ErrCase(NamedTuple):
    name: str
    lines: Optional[List[bytes]]  # a .jsonl written for the case, or None
    args: List[str]
    where: str                    # what the one line must name: "FILE:LINE", a flag, or a path
    bad: int = -1                 # with --skip-bad: lines counted as malformed (-1: not run)


def refused(c: Ctx, label: str, args: List[str], names: List[str], outs: List[str]) -> None:
    """Exit 2, one line naming NAMES, and the outputs as they were."""
    before = {o: open(o, "rb").read() if os.path.exists(o) else None for o in outs}
    p = prep(c, args, label, ok=False)
    lines = p.stderr.strip().splitlines()
    c.fails.check(p.returncode == EXIT_USER, f"{label}: exit {p.returncode}, want {EXIT_USER}: {p.stderr.strip()}")
    c.fails.check(len(lines) == 1 and lines[0].startswith("lorad: "), f"{label}: stderr is not one line: {lines}")
    for n in names:
        c.fails.check(n in p.stderr, f"{label}: the line does not name {n}: {p.stderr.strip()}")
    for o, data in before.items():
        now = open(o, "rb").read() if os.path.exists(o) else None
        c.fails.check(now == data, f"{label}: {o} changed")
        c.fails.check(not any(".tmp." in n for n in os.listdir(os.path.dirname(o))), f"{label}: a temporary file stayed")


def case_errors(c: Ctx) -> None:
    toks = tokenizers(c)
    tok = toks["gpt2"].dir
    good = json.dumps({"prompt": "a", "completion": "b"}).encode()
    out = c.path("out.h5")
    cases = [
        ErrCase("not JSON", [good, b'{"prompt": "a", "completion": ', good], [], ":2:", 1),
        ErrCase("not an object", [good, good, b'["prompt", "completion"]'], [], ":3:", 1),
        ErrCase("missing key", [good, b'{"prompt": "only"}', good], [], ":2:", 1),
        ErrCase("wrong type", [good, good, good, b'{"prompt": "a", "completion": 7}'], [], ":4:", 1),
        ErrCase("invalid UTF-8", [good, b'{"prompt": "caf\xc3", "completion": "b"}'], [], ":2:", 1),
        ErrCase("invalid UTF-8 outside strings", [good, b'{"prompt": "a", "completion": "b"} \xff'], [], ":2:", 1),
        ErrCase("duplicate key", [good, b'{"prompt": "a", "prompt": "b", "completion": "c"}'], [], ":2:", 1),
        ErrCase("a prompt of messages in a completion file", [good, b'{"prompt": [], "completion": []}'], [], ":2:", 1),
        ErrCase("first line fits no format", [b'{"question": "a"}', good], [], ":1:", 1),
        ErrCase("blank lines are no lines, and line numbers count them", [good, b"", b"  ", b"{oops", good], [],
                ":4:", 1),
        ErrCase("chat data", [json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()], [],
                "chat templates"),
        ErrCase("a conversational prompt/completion", [b'{"prompt": [{"role": "user", "content": "x"}], '
                                                       b'"completion": [{"role": "assistant", "content": "y"}]}'],
                [], "chat templates"),
        ErrCase("--format chat", [good], ["--format", "chat"], "--format"),
        ErrCase("--train-on assistant", [good], ["--train-on", "assistant"], "--train-on"),
        ErrCase("--format text on completion lines", [good], ["--format", "text"], ":1:"),
        ErrCase("--train-on completion on text", [b'{"text": "x"}'], ["--train-on", "completion"], "--train-on"),
        ErrCase("--val-split without --val-out", [good], ["--val-split", "0.5"], "--val-split"),
        ErrCase("--val-out without --val-split", [good], ["--val-out", c.path("v.h5")], "--val-out"),
        ErrCase("no validation example", [good, good], ["--val-split", "0.4", "--val-out", c.path("v.h5")],
                "--val-split"),
        ErrCase("--val-out is --out", [good], ["--val-split", "0.5", "--val-out", out], "--val-out"),
        ErrCase("--val-split 1", [good], ["--val-split", "1", "--val-out", c.path("v.h5")], "--val-split"),
        ErrCase("--max-len -1", [good], ["--max-len", "-1"], "--max-len"),
        ErrCase("--threads -1", [good], ["--threads", "-1"], "--threads"),
        ErrCase("--format bogus", [good], ["--format", "bogus"], "--format"),
        ErrCase("--split bogus", [good], ["--split", "bogus"], "--split"),
        ErrCase("every line malformed", [b"{", b"[]"], [], ":1:", 2),
    ]
    for i, e in enumerate(cases):
        src = c.path(f"err_{i}.jsonl")
        with open(src, "wb") as f:
            f.write(b"\n".join(e.lines) + b"\n")
        args = ["--tokenizer", tok, "--data", src, "--out", out] + e.args
        refused(c, e.name, args, [src + e.where if e.where.startswith(":") else e.where], [out])
        if e.bad < 0:
            continue
        n_good = len([x for x in e.lines if x.strip()]) - e.bad
        if n_good == 0:
            refused(c, e.name + " --skip-bad", args + ["--skip-bad"], [src], [out])
            continue
        p = prep(c, args + ["--skip-bad"], e.name + " --skip-bad")
        c.fails.check(f"{e.bad} malformed lines skipped" in p.stderr, f"{e.name}: --skip-bad: {p.stderr.strip()}")
        if os.path.exists(out):
            c.fails.check(len(read_set(out)["doc_offsets"]) == n_good, f"{e.name}: --skip-bad kept other examples")
            os.remove(out)
    # flags and files
    src = write_jsonl(c.path("ok.jsonl"), [{"text": "hello"}])
    txt = c.path("ok.txt")
    with open(txt, "w") as f:
        f.write("hello")
    empty = c.path("empty.txt")
    open(empty, "w").close()
    bad_utf8 = c.path("bad.txt")
    with open(bad_utf8, "wb") as f:
        f.write(b"line one\nline two\nthree \xe2\x82 broken\n")
    comp = write_jsonl(c.path("c.jsonl"), [{"prompt": "a", "completion": "b"}])
    csv = c.path("data.csv")
    open(csv, "w").close()
    eosless = c.path("tok_noeos")
    write_tokenizer(eosless, "gpt2", "some text to learn from")
    with open(os.path.join(eosless, "tokenizer.json")) as f:
        tj = json.load(f)
    tj["added_tokens"] = []
    with open(os.path.join(eosless, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    for label, args, names in (
            ("no --data", ["--tokenizer", tok, "--out", out], ["--data", "--text"]),
            ("no tokenizer", ["--data", src, "--out", out], ["--model", "--tokenizer"]),
            ("--model and --tokenizer", ["--model", tok, "--tokenizer", tok, "--data", src, "--out", out],
             ["--model", "--tokenizer"]),
            ("--text with --data", ["--text", txt, "--data", src, "--tokenizer", tok, "--out", out], ["--text"]),
            ("a byte-level model", ["--model", c.work, "--data", src, "--out", out], ["tokenizer.json", "--text"]),
            ("an empty .txt", ["--tokenizer", tok, "--data", empty, "--out", out], [empty]),
            ("a .txt that is not UTF-8", ["--tokenizer", tok, "--data", bad_utf8, "--out", out], [bad_utf8 + ":3:"]),
            (".txt in completion data", ["--tokenizer", tok, "--data", f"{src},{txt}", "--format", "completion",
                                         "--out", out], [txt, "--format"]),
            (".txt after completion lines", ["--tokenizer", tok, "--data", f"{comp},{txt}", "--out", out], [txt]),
            ("neither .txt nor .jsonl", ["--tokenizer", tok, "--data", csv, "--out", out], [csv]),
            ("a missing input", ["--tokenizer", tok, "--data", c.path("nope.jsonl"), "--out", out],
             [c.path("nope.jsonl")]),
            ("no EOS", ["--tokenizer", eosless, "--data", src, "--out", out], [eosless, "--add-eos"])):
        refused(c, label, args, names, [out])
    p = prep(c, ["--tokenizer", eosless, "--data", src, "--out", out, "--add-eos", "off"], "no EOS, --add-eos off")
    if p.returncode == 0:
        c.fails.check("eos_ids" not in read_set(out)["attrs"], "a tokenizer without EOS recorded eos_ids")
    # existing outputs: refused as they are, replaced with --overwrite
    val = c.path("val.h5")
    two = write_jsonl(c.path("two.jsonl"), [{"text": "one"}, {"text": "two"}])
    base = ["--tokenizer", tok, "--data", two, "--out", out, "--val-split", "0.5", "--val-out", val]
    prep(c, base + ["--overwrite"], "a first prep")
    refused(c, "--out exists", base, ["--out", "--overwrite"], [out, val])
    os.remove(out)
    refused(c, "--val-out exists", base, ["--val-out", "--overwrite"], [out, val])
    before = read_set(val)
    write_jsonl(two, [{"text": "three"}, {"text": "four"}])
    prep(c, base + ["--overwrite"], "--overwrite")
    c.fails.check(read_set(val)["tokens"].tolist() != before["tokens"].tolist(), "--overwrite left --val-out")


def case_threads(c: Ctx) -> None:
    toks = tokenizers(c)
    rng = random.Random(5)
    objs = corpus_objs(rng, 9000)["completion"]  # more than a batch of prep.c's (8192 lines)
    src = write_jsonl(c.path("many.jsonl"), objs[:2500] + [{"prompt": 1}] + objs[2500:8500] + [{"x": 2}] + objs[8500:])
    for kind, tok in toks.items():
        sets = []
        for n in (1, 2, 3):
            out = c.path(f"{kind}_t{n}.h5")
            prep(c, ["--tokenizer", tok.dir, "--data", src, "--out", out, "--threads", n, "--skip-bad",
                     "--max-len", 20, "--val-split", 0.1, "--val-out", c.path(f"{kind}_v{n}.h5")], f"--threads {n}")
            sets.append((read_set(out), read_set(c.path(f"{kind}_v{n}.h5"))))
        for n, s in zip((2, 3), sets[1:]):
            for part in (0, 1):
                for k in ("tokens", "loss_mask", "doc_offsets"):
                    c.fails.check(np.array_equal(s[part][k], sets[0][part][k]), f"{kind} --threads {n}: {k} differs")
                c.fails.check(s[part]["attrs"] == sets[0][part]["attrs"], f"{kind} --threads {n}: attributes differ")
        if kind == "gpt2":  # and the result is the reference's, the two bad lines skipped
            e = expect(c, tok, [segments("completion", o) for o in objs], max_len=20)
            tr, va = split(e.examples, 0.1)
            check_set(c, "--threads 3 train", c.path(f"{kind}_t3.h5"), tr, tok, [src], "completion", "completion")
            check_set(c, "--threads 3 val", c.path(f"{kind}_v3.h5"), va, tok, [src], "completion", "completion")


def case_train(c: Ctx) -> None:
    toks = tokenizers(c)
    tok = toks["bos"]
    other = write_tokenizer(c.path("tok_other"), "bos", "a different corpus for other merges entirely", 30)
    rng = np.random.default_rng(3)

    def model(name: str, vocab: int, tok_dir: Optional[str]) -> str:
        d = c.path(name)
        cfg = ref.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_head=2, n_layer=1)
        ref.write_model_dir(d, cfg, ref.random_gpt2_weights(cfg, rng))
        if tok_dir:
            with open(os.path.join(tok_dir, "tokenizer.json"), "rb") as f, \
                    open(os.path.join(d, "tokenizer.json"), "wb") as g:
                g.write(f.read())
        return d

    own = model("own", tok.n_tokens, tok.dir)
    bare = model("bare", tok.n_tokens + 5, None)
    small = model("small", tok.n_tokens - 1, None)
    foreign = model("foreign", tok.n_tokens + 5, other.dir)
    data = c.path("data.h5")
    src = write_jsonl(c.path("data.jsonl"), corpus_objs(random.Random(2), 60)["completion"])
    prep(c, ["--model", own, "--data", src, "--out", data], "prep with the model")
    ids = read_set(data)["tokens"]
    over = c.path("over.h5")
    bad = ids.astype(np.int64).copy()
    bad[17] = tok.n_tokens + 5
    ref.write_h5(over, bad)

    def train(m: str, d: str, run: str):
        return ["train", "--model", m, "--data", d, "--out", c.path(run), "--steps", 1, "--batch", 2, "--seq", 16,
                "--threads", 1]

    def evaluate(m: str, d: str):
        return ["eval", "--model", m, "--data", d, "--seq", 16, "--threads", 1]

    for args, label in ((train(own, data, "r_own"), "train on its own data"),
                        (train(bare, data, "r_bare"), "train, no tokenizer, a larger vocabulary"),
                        (evaluate(own, data), "eval on its own data")):
        p = ref.run_lorad(c.lorad, args)
        c.fails.check(p.returncode == 0, f"{label}: {p.returncode} {p.stderr.strip()[-600:]}")
    for args, names, label in (
            (train(foreign, data, "r1"), [data, fingerprint(tok.dir), fingerprint(other.dir)], "train, another tokenizer"),
            (evaluate(foreign, data), [data, fingerprint(tok.dir)], "eval, another tokenizer"),
            (train(small, data, "r2"), [data, str(tok.n_tokens), str(tok.n_tokens - 1)], "train, a smaller vocabulary"),
            (evaluate(small, data), [data, str(tok.n_tokens)], "eval, a smaller vocabulary"),
            (train(bare, over, "r3"), [over, str(tok.n_tokens + 5), "17"], "train, an id >= vocab_size"),
            (evaluate(bare, over), [over, str(tok.n_tokens + 5)], "eval, an id >= vocab_size")):
        p = ref.run_lorad(c.lorad, args)
        lines = p.stderr.strip().splitlines()
        c.fails.check(p.returncode == EXIT_USER and len(lines) == 1 and lines[0].startswith("lorad: "),
                      f"{label}: exit {p.returncode}, stderr {lines}")
        for n in names:
            c.fails.check(n in p.stderr, f"{label}: the line does not name {n}: {p.stderr.strip()}")


CASES = {"formats": case_formats, "options": case_options, "errors": case_errors, "threads": case_threads,
         "train": case_train}

if __name__ == "__main__":
    ref.run_driver("prep", {k: (lambda f: lambda fails, lorad, work: f(Ctx(fails, lorad, work)))(v)
                            for k, v in CASES.items()})
