"""prep_chat.py: `lorad prep` on chat data (issue #14) against a reference built here from
independent parts:
  - the text: python3-jinja2 set up as transformers sets it up (tests/jinja.py's
    reference, imported), rendering the whole conversation without the generation prompt;
  - the counted spans, computed here from jinja2's renderings: the AssistantTracker's
    {% generation %} spans when the template has the tag (transformers' regex), else turn
    by turn (for each assistant message i, messages[:i+1] rendered past messages[:i]
    rendered with the generation prompt), or for prompt/completion message lists the text
    past the prompt rendered with the generation prompt;
  - the ids: transformers.js (@lenml/tokenizers under node, tests/node_templates) on the
    rendered text with add_special_tokens false, as apply_chat_template(tokenize=True)
    encodes it, and on the text before each span edge;
  - the masks: tests/prep.py's expect() (TRL's rule: an edge at byte b falls after the
    len(ids(text[:b])) first tokens), without an EOS and without post-processor tokens.
Tokens, masks, offsets and attributes must be equal. Cases:
  qwen        Qwen2.5's tokenizer.json and chat template (npm): turn by turn, message sets
              with a system prompt, several turns, tool calls, hostile Unicode, content
              that starts with newlines (a token straddles the span's start); prompt/
              completion lists; --train-on assistant, all and completion; --max-len;
              --threads 1 and 3 on more lines than a thread takes: the same files
  llama3      Llama 3's tokenizer.json (npm) with Llama 3's template (ollama-utils): the
              template's BOS and no second one; the npm config's own template, which
              writes the assistant header whatever add_generation_prompt says: one turn
              works, several are refused; the warning when no counted token is one
              generation stops at, and none once generation_config.json names <|eot_id|>
  generation  templates with {% generation %}: ChatML with tags on Qwen's tokenizer, one
              whose blocks nest and touch, and the bundled base's own (lorad init-tokenizer)
  base        the byte-level tokenizer: examples/base's files are what init-tokenizer
              writes, transformers.js reads them to the UTF-8 bytes and the special ids,
              init-model --vocab 256 writes them too, and init-tokenizer's refusals
  errors      malformed message lists, templates that raise or do not render turn by
              turn, --train-on that does not fit: one line "FILE:LINE: ...", exit 2, no
              output; --skip-bad counts and skips them
Usage: prep_chat.py --lorad PATH --workdir DIR --case NAME
"""

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  the driver, run_lorad
import jinja  # noqa: E402  the transformers-style jinja2 reference
import prep  # noqa: E402  the TRL-style masks and the attribute checks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENML = os.path.join(jinja.NODE_DIR, "@lenml")
GENERATION_RE = re.compile(r"\{\%-?\s*generation\s*-?\%\}")  # transformers' test for the tag
EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")

JS_ENCODE = r"""
const path = require('path'), fs = require('fs');
const { TokenizerLoader } = require(path.join(process.argv[1], '@lenml', 'tokenizers'));
const dir = process.argv[2];
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
const tok = TokenizerLoader.fromPreTrained({tokenizerJSON: read('tokenizer.json'),
                                            tokenizerConfig: read('tokenizer_config.json')});
const texts = JSON.parse(fs.readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(texts.map((t) => tok.encode(t, {add_special_tokens: false}))));
"""


class JsCtx(prep.Ctx):
    """prep.py's context, with the ids of transformers.js instead of `lorad tokenize`. A chat
    is encoded without the post-processor's tokens, so SPECIAL changes nothing."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen: Dict[str, List[int]] = {}  # text -> ids, since the last expect_chat

    def tokenize(self, tok, texts, special):
        p = subprocess.run(["node", "-e", JS_ENCODE, jinja.NODE_DIR, tok.dir], input=json.dumps(texts),
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            self.fails.abort(f"transformers.js failed on {tok.dir}: {p.stderr.strip()[-800:]}")
        ids = json.loads(p.stdout)
        self.seen.update(zip(texts, ids))
        return ids

    def straddles(self, exs: List[prep.Segments]) -> int:
        """The examples (of the last expect) where a token spans an edge: the text before an
        edge has ids other than the start of the whole text's."""
        n = 0
        for ex in exs:
            body = self.seen["".join(t for t, _ in ex)]
            pres = [self.seen["".join(t for t, _ in ex[:i + 1])] for i in range(len(ex) - 1)]
            n += any(pre != body[:len(pre)] for pre in pres)
        return n


# --------------------------------------------------------------------------------------
# Model directories
# --------------------------------------------------------------------------------------

class Model(NamedTuple):
    tok: prep.Tok        # dir, no post-processor tokens, the EOS ids prep records, the vocabulary
    template: str
    tokens: Dict         # the template's special-token variables, as transformers passes them
    stop: List[int]      # the ids generation stops at: the EOS ids, generation_config's, eos_token's


def vocab_ids(tj: dict) -> Dict[str, int]:
    ids = dict(tj["model"]["vocab"])
    ids.update({a["content"]: a["id"] for a in tj["added_tokens"]})
    return ids


def model_dir(c: prep.Ctx, name: str, src: str, template: Optional[str] = None, gen_eos=None) -> Model:
    """A model directory: SRC's tokenizer.json and tokenizer_config.json (its chat_template
    replaced by TEMPLATE), and a generation_config.json naming GEN_EOS."""
    d = c.path(name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    shutil.copy(os.path.join(src, "tokenizer.json"), d)
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if template is not None:
        cfg["chat_template"] = template
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False)
    if gen_eos is not None:
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump({"eos_token_id": gen_eos}, f)
    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    ids = vocab_ids(tj)
    eos = [a["id"] for a in tj["added_tokens"] if a["special"] and a["content"] in EOS_NAMES][:1]
    tokens = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if cfg.get(k)}
    if cfg.get("additional_special_tokens"):
        tokens["additional_special_tokens"] = cfg["additional_special_tokens"]
    stop = list(eos)
    for i in (gen_eos or []) + ([ids[cfg["eos_token"]]] if cfg.get("eos_token") else []):
        if i not in stop:
            stop.append(i)
    return Model(prep.Tok(d, [], [], eos, max(ids.values()) + 1), cfg["chat_template"], tokens, stop)


_TEMPLATES: Dict[str, str] = {}


def template(name: str) -> str:
    """An acceptance template of tests/jinja.py (read once)."""
    if not _TEMPLATES:
        _TEMPLATES.update({k: t for k, (t, _) in jinja.acceptance_templates().items()})
    return _TEMPLATES[name]


def lenml(package: str) -> str:
    d = os.path.join(LENML, package, "models")
    if not os.path.isdir(d):
        sys.exit(f"prep_chat.py: {d} is missing: run deploy/install-deps.sh")
    return d


# --------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------

def render(m: Model, messages: list, gen: bool) -> Tuple[str, list]:
    text, exc, spans = jinja.reference(m.template, messages, gen, m.tokens)
    if exc is not None:
        raise exc
    return text, spans


def joined(spans: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for a, b in sorted(spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def counted_spans(m: Model, messages: list, n_prompt: int, loss: str) -> Tuple[str, List[Tuple[int, int]]]:
    """The whole text and its counted character spans (chat_loss.h's rules)."""
    full, gen_spans = render(m, messages, False)
    if loss == "auto":
        loss = "completion" if n_prompt else "assistant"
    if loss == "all":
        return full, []
    if loss == "completion":
        prompt, _ = render(m, messages[:n_prompt], True)
        assert full.startswith(prompt), "the reference's prompt does not start the conversation"
        return full, [(len(prompt), len(full))]
    if GENERATION_RE.search(m.template):
        return full, joined(gen_spans)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        a, _ = render(m, messages[:i], True)
        b, _ = render(m, messages[:i + 1], False)
        assert b.startswith(a) and full.startswith(b), f"the reference does not render turn by turn at message {i}"
        if len(b) > len(a):
            spans.append((len(a), len(b)))
    return full, spans


def segments(full: str, spans: List[Tuple[int, int]]) -> prep.Segments:
    out, at = [], 0
    for a, b in spans:
        out += [(full[at:a], False), (full[a:b], True)]
        at = b
    return out + [(full[at:], False)]


def line_messages(obj: dict) -> Tuple[list, int]:
    if "messages" in obj:
        return obj["messages"], 0
    return obj["prompt"] + obj["completion"], len(obj["prompt"])


def expect_chat(c: JsCtx, m: Model, lines: List[dict], loss="auto", max_len=0) -> Tuple[prep.Expect, int]:
    """The examples, and how many have a token across a span's edge."""
    exs = [segments(*counted_spans(m, *line_messages(o), loss)) for o in lines]
    c.seen = {}
    e = prep.expect(c, m.tok, exs, all_=loss == "all", add_eos=False, max_len=max_len)
    return e, 0 if loss == "all" else c.straddles(exs)


def train_on_attr(loss: str) -> str:
    return loss  # auto, all, completion, assistant: as prep records --train-on for chat


def run_and_check(c: JsCtx, label: str, m: Model, lines: List[dict], loss="auto", max_len=0,
                  method: Optional[str] = None, extra=()) -> Optional[Tuple[prep.Expect, int]]:
    """prep on LINES (with flags EXTRA) equals the reference; the summary names METHOD and
    the straddles."""
    src = prep.write_jsonl(c.path(f"{label}.jsonl"), lines)
    out = c.path(f"{label}.h5")
    args = ["--model", m.tok.dir, "--data", src, "--out", out, "--overwrite"] + list(extra)
    if loss != "auto":
        args += ["--train-on", loss]
    if max_len:
        args += ["--max-len", max_len]
    p = prep.prep(c, args, label)
    if p.returncode != 0:
        return None
    e, straddling = expect_chat(c, m, lines, loss, max_len)
    prep.check_set(c, label, out, e.examples, m.tok, [src], "chat", train_on_attr(loss))
    got = re.search(r"in (\d+) examples a token spans the edge", p.stderr)
    c.fails.check((int(got.group(1)) if got else 0) == straddling,
                  f"{label}: {straddling} examples straddle a span's edge; the summary says {got and got.group(0)}")
    if method:
        c.fails.check(method in p.stderr, f"{label}: the summary does not say '{method}': {p.stderr.strip()}")
    c.fails.check("no EOS appended (the chat template ends the turns" in p.stderr, f"{label}: the EOS line")
    if e.examples:
        counted = sum(sum(mk) for _, mk in e.examples)
        n = sum(len(i) for i, _ in e.examples)
        c.fails.check(f"{n} tokens, {100.0 * counted / n:.1f}% of them counted" in p.stderr,
                      f"{label}: the summary's counts: {p.stderr.strip()}")
    return e, straddling


def stops_warned(p) -> bool:
    return "no counted token is one generation stops at" in p.stderr


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

SETS = jinja.MESSAGE_SETS
STRADDLE = [{"role": "user", "content": "Newlines first?"},
            {"role": "assistant", "content": "\n\nYes: two of them."},
            {"role": "user", "content": "And a space?"},
            {"role": "assistant", "content": " A space, then words."}]
PROMPT_COMPLETION = [
    {"prompt": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sky colour?"}],
     "completion": [{"role": "assistant", "content": "Blue."}]},
    {"prompt": [{"role": "user", "content": "Weather in Paris?"}],
     "completion": SETS["tool_calls"][1:]},
    {"prompt": SETS["no_system"][:3], "completion": [{"role": "assistant", "content": "\n\nA pun."}]},
]


def messages_lines(*names: str) -> List[dict]:
    return [{"messages": SETS[n], "id": n} for n in names] + [{"messages": STRADDLE}]


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------

def case_qwen(c: prep.Ctx) -> None:
    m = model_dir(c, "qwen", lenml("tokenizer-qwen2_5"))
    lines = messages_lines("multi_turn", "no_system", "unicode", "whitespace", "tool_calls", "single_user")
    r = run_and_check(c, "qwen_messages", m, lines, method="turn by turn")
    c.fails.check(r is not None and r[1] > 0, "qwen: no example straddles a span's edge, so the rule is untested")
    run_and_check(c, "qwen_assistant", m, lines, loss="assistant", method="turn by turn")
    run_and_check(c, "qwen_all", m, lines, loss="all")
    run_and_check(c, "qwen_max_len", m, lines, max_len=40)
    run_and_check(c, "qwen_completion", m, PROMPT_COMPLETION)
    run_and_check(c, "qwen_completion_assistant", m, PROMPT_COMPLETION, loss="assistant")
    run_and_check(c, "qwen_mixed", m, lines[:2] + PROMPT_COMPLETION)
    # more lines than one thread takes (256): the same files for any --threads, and the reference's
    many = (lines + PROMPT_COMPLETION) * 60
    src = prep.write_jsonl(c.path("many.jsonl"), many)
    sets = []
    for n in (1, 3):
        out = c.path(f"many_{n}.h5")
        prep.prep(c, ["--model", m.tok.dir, "--data", src, "--out", out, "--threads", n], f"--threads {n}")
        sets.append(prep.read_set(out))
    for k in ("tokens", "loss_mask", "doc_offsets"):
        c.fails.check(sets[0][k].tolist() == sets[1][k].tolist(), f"--threads 3: {k} differs from --threads 1")
    c.fails.check(sets[0]["attrs"] == sets[1]["attrs"], "--threads 3: the attributes differ")
    e, _ = expect_chat(c, m, many)
    prep.check_set(c, "--threads 3", c.path("many_3.h5"), e.examples, m.tok, [src], "chat", "auto")


def case_llama3(c: prep.Ctx) -> None:
    src = lenml("tokenizer-llama3")
    m = model_dir(c, "llama3", src, template("llama3"))
    lines = messages_lines("multi_turn", "no_system", "unicode", "tool_calls")
    p_lines = lines + [{"prompt": SETS["no_system"][:1], "completion": SETS["no_system"][1:2]}]
    r = run_and_check(c, "llama3", m, p_lines, method="turn by turn")
    bos = vocab_ids(json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8")))["<|begin_of_text|>"]
    if r:
        c.fails.check(all(ids[0] == bos and bos not in ids[1:] for ids, _ in r[0].examples),
                      "llama3: an example does not start with the template's one BOS")
    # the npm config's own template writes the assistant header whatever add_generation_prompt says
    own = model_dir(c, "llama3_own", src)
    one = [{"messages": SETS["no_system"][:2]}]
    p = prep.prep(c, ["--model", own.tok.dir, "--data", prep.write_jsonl(c.path("own1.jsonl"), one), "--out",
                      c.path("own1.h5")], "llama3's own template, one turn")
    c.fails.check(p.returncode == 0 and stops_warned(p),
                  f"llama3: eos_token <|end_of_text|> is not the template's <|eot_id|>, so prep must warn: {p.stderr}")
    run_and_check(c, "llama3_own_one_turn", own, one)
    src2 = prep.write_jsonl(c.path("own2.jsonl"), one + [{"messages": SETS["no_system"]}])
    prep.refused(c, "llama3's own template, two turns", ["--model", own.tok.dir, "--data", src2, "--out",
                                                         c.path("own2.h5")], [src2 + ":2:", "turn by turn"],
                 [c.path("own2.h5")])
    eot = vocab_ids(json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8")))["<|eot_id|>"]
    named = model_dir(c, "llama3_gen", src, template("llama3"), gen_eos=[128001, eot])
    p = prep.prep(c, ["--model", named.tok.dir, "--data", prep.write_jsonl(c.path("named.jsonl"), lines), "--out",
                      c.path("named.h5")], "llama3 with generation_config.json")
    c.fails.check(p.returncode == 0 and not stops_warned(p), f"llama3: <|eot_id|> is a stop id now: {p.stderr}")


# ChatML with generation blocks around the assistant's content and end of turn.
CHATML_GENERATION = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}{% if m['role'] == 'assistant' %}"
    "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# Blocks that nest, and touch: the spans are joined.
NESTED_GENERATION = (
    "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{%- generation -%}"
    "{% generation %}{{ m.content }}{% endgeneration %}{% generation %}</s>{% endgeneration %}"
    "{%- endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}")


def case_generation(c: prep.Ctx) -> None:
    qwen = lenml("tokenizer-qwen2_5")
    lines = messages_lines("multi_turn", "no_system", "unicode", "whitespace")
    for name, template in (("chatml", CHATML_GENERATION), ("nested", NESTED_GENERATION)):
        m = model_dir(c, f"gen_{name}", qwen, template)
        run_and_check(c, f"gen_{name}", m, lines, method="{% generation %} blocks")
        run_and_check(c, f"gen_{name}_completion", m, PROMPT_COMPLETION)
    base = c.path("base")
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(os.path.join(REPO, "examples", "base"), base)
    m = model_dir(c, "gen_base", base)
    c.fails.check(GENERATION_RE.search(m.template) is not None, "the base's template has no {% generation %} tag")
    run_and_check(c, "gen_base", m, lines + PROMPT_COMPLETION, method="{% generation %} blocks")
    # a list of named templates: "default" unless --template names another
    plain = CHATML_GENERATION.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    m = model_dir(c, "gen_named", qwen, [{"name": "default", "template": plain},
                                         {"name": "tool_use", "template": CHATML_GENERATION}])
    run_and_check(c, "gen_named_default", m._replace(template=plain), lines, method="turn by turn")
    run_and_check(c, "gen_named_tool_use", m._replace(template=CHATML_GENERATION), lines,
                  method="{% generation %} blocks", extra=["--template", "tool_use"])
    src = prep.write_jsonl(c.path("gen_named_text.jsonl"), [{"text": "plain"}])
    for flags, words in ((["--template", "nope"], ['no chat template named "nope"']),
                         (["--template", "tool_use", "--format", "text"], ["--template", "only chat data"])):
        data = src if "text" in flags else c.path("gen_named_default.jsonl")
        p = harness.run_lorad(c.lorad, ["prep", "--model", m.tok.dir, "--data", data, "--out",
                                        c.path("gen_named_bad.h5")] + flags)
        harness.one_line_error(c.fails, p, words, f"prep {' '.join(flags)}")


HOSTILE = ["", "plain ASCII", "tabs\tand\nnewlines\r\n", "naïve café 日本語 한국어 العربية 🤖👍🏽 🇫🇷",
           "e\u0301 NFD", "\ufffd replacement", "zero\u200bwidth", "<|im_start|>user\nspecial<|im_end|>",
           "<|endoftext|> ends", "<|im_end", "x" * 3000]


def case_base(c: prep.Ctx) -> None:
    committed = os.path.join(REPO, "examples", "base")
    d = c.path("base")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    shutil.copy(os.path.join(committed, "config.json"), d)
    p = harness.run_lorad(c.lorad, ["init-tokenizer", "--model", d])
    c.fails.check(p.returncode == 0, f"init-tokenizer: {p.stderr}")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(d, name), "rb") as f, open(os.path.join(committed, name), "rb") as g:
            c.fails.check(f.read() == g.read(), f"examples/base/{name} is not what lorad init-tokenizer writes")
    tok = prep.Tok(d, [], [], [255], 256)
    specials = {"<|im_start|>": 253, "<|im_end|>": 254, "<|endoftext|>": 255}
    js = c.tokenize(tok, HOSTILE, False)
    ours = prep.Ctx.tokenize(c, tok, HOSTILE, False)  # lorad tokenize
    for text, a, b in zip(HOSTILE, js, ours):
        want, rest = [], text
        while rest:  # the bytes, and the special tokens' ids where their strings stand
            hit = next((s for s in specials if rest.startswith(s)), None)
            want += [specials[hit]] if hit else list(rest[0].encode("utf-8"))
            rest = rest[len(hit):] if hit else rest[1:]
        c.fails.check(a == want, f"base: transformers.js reads {text[:40]!r} as {a[:20]}, not {want[:20]}")
        c.fails.check(b == want, f"base: lorad tokenize reads {text[:40]!r} as {b[:20]}, not {want[:20]}")
    p = harness.run_lorad(c.lorad, ["tokenize", "--model", d, "--text", "ids:\u00e9", "--json"])
    c.fails.check(p.returncode == 0 and json.loads(p.stdout)["decoded"] == "ids:\u00e9", f"base: decode {p.stdout}")
    # init-model --vocab 256 writes the same files; another vocabulary none
    for vocab, has in ((256, True), (300, False)):
        out = c.path(f"init_{vocab}")
        p = harness.run_lorad(c.lorad, ["init-model", "--out", out, "--layers", 1, "--dim", 16, "--heads", 2, "--vocab",
                                    vocab, "--positions", 16])
        c.fails.check(p.returncode == 0, f"init-model --vocab {vocab}: {p.stderr}")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            there = os.path.exists(os.path.join(out, name))
            c.fails.check(there == has, f"init-model --vocab {vocab}: {name} {'missing' if has else 'written'}")
            if there:
                c.fails.check(open(os.path.join(out, name), "rb").read() == open(os.path.join(d, name), "rb").read(),
                              f"init-model: {name} differs from init-tokenizer's")
    # refusals: files there without --overwrite (kept as they are), another vocabulary, no config.json
    with open(os.path.join(d, "tokenizer_config.json"), "a") as f:
        f.write(" ")
    for args, names, label in (
            (["--model", d], [os.path.join(d, "tokenizer.json"), "--overwrite"], "files there"),
            (["--model", c.path("init_300")], [c.path("init_300"), "300"], "vocab_size 300"),
            (["--model", c.path("nowhere")], [os.path.join(c.path("nowhere"), "config.json")], "no config.json")):
        before = {n: open(os.path.join(d, n), "rb").read() for n in ("tokenizer.json", "tokenizer_config.json")}
        p = harness.run_lorad(c.lorad, ["init-tokenizer"] + args)
        lines = p.stderr.strip().splitlines()
        c.fails.check(p.returncode == prep.EXIT_USER and len(lines) == 1 and all(n in p.stderr for n in names),
                      f"init-tokenizer, {label}: exit {p.returncode}, {lines}")
        c.fails.check(before == {n: open(os.path.join(d, n), "rb").read() for n in before},
                      f"init-tokenizer, {label}: the files changed")
    p = harness.run_lorad(c.lorad, ["init-tokenizer", "--model", d, "--overwrite"])
    c.fails.check(p.returncode == 0 and open(os.path.join(d, "tokenizer_config.json"), "rb").read() ==
                  open(os.path.join(committed, "tokenizer_config.json"), "rb").read(), f"--overwrite: {p.stderr}")


# A template whose generation prompt is not how the rendered turn begins.
NOT_TURN_BY_TURN = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                    "{% if add_generation_prompt %}<gen>{% endif %}")


USER = {"role": "user", "content": "a"}
GOOD = json.dumps({"messages": SETS["no_system"][:2]})


class Bad(NamedTuple):
    name: str
    line: str       # the second line of the file; the first and third are GOOD
    where: str      # what the error names besides FILE:2
    args: Tuple = ()
    template: Optional[str] = None
    good: str = GOOD


def case_errors(c: prep.Ctx) -> None:
    qwen = lenml("tokenizer-qwen2_5")
    user, only_user = USER, json.dumps({"messages": [USER]})
    prompt_completion = json.dumps({"prompt": [USER], "completion": SETS["no_system"][1:2]})
    cases = [
        Bad("messages not a list", json.dumps({"messages": {"role": "user"}}), "not a list of messages"),
        Bad("messages empty", json.dumps({"messages": []}), "empty list"),
        Bad("a message not an object", json.dumps({"messages": [user, "hi"]}), '"messages"[1]'),
        Bad("no role", json.dumps({"messages": [{"content": "a"}]}), '"role"'),
        Bad("role a number", json.dumps({"messages": [{"role": 3, "content": "a"}]}), '"role"'),
        Bad("content a number", json.dumps({"messages": [{"role": "user", "content": 7}]}), '"content"'),
        Bad("completion a string", json.dumps({"prompt": [user], "completion": "b"}), '"completion"'),
        Bad("prompt empty", json.dumps({"prompt": [], "completion": [user]}), '"prompt"'),
        Bad("the template raises", json.dumps({"messages": [user, user]}), "roles must alternate",
            template=template("mistral-v0.3")),
        Bad("not turn by turn", json.dumps({"messages": SETS["no_system"]}), "turn by turn",
            template=NOT_TURN_BY_TURN, good=only_user),
        Bad("prompt not how it starts", json.dumps({"prompt": [user], "completion": [user]}), "completion",
            template=NOT_TURN_BY_TURN, good=only_user),
        Bad("--train-on completion on messages", GOOD, "--train-on completion", args=("--train-on", "completion"),
            good=prompt_completion),
    ]
    out = c.path("err.h5")
    for i, b in enumerate(cases):
        m = model_dir(c, f"err_{i}", qwen, b.template)
        src = c.path(f"err_{i}.jsonl")
        with open(src, "w", encoding="utf-8") as f:
            f.write(b.good + "\n" + b.line + "\n" + b.good + "\n")
        args = ["--model", m.tok.dir, "--data", src, "--out", out] + list(b.args)
        prep.refused(c, b.name, args, [src + ":2:", b.where], [out])
        p = prep.prep(c, args + ["--skip-bad"], b.name + " --skip-bad")
        c.fails.check("1 malformed lines skipped" in p.stderr, f"{b.name}: --skip-bad: {p.stderr.strip()}")
        if p.returncode == 0:
            c.fails.check(len(prep.read_set(out)["doc_offsets"]) == 2, f"{b.name}: --skip-bad kept other examples")
            os.remove(out)
    # the model, not a line: no chat template; --train-on assistant on other data
    toks = prep.tokenizers(c)
    src = prep.write_jsonl(c.path("chat.jsonl"), [{"messages": SETS["no_system"]}])
    prep.refused(c, "no chat template", ["--tokenizer", toks["gpt2"].dir, "--data", src, "--out", out],
                 [toks["gpt2"].dir, "no chat template"], [out])
    comp = prep.write_jsonl(c.path("comp.jsonl"), [{"prompt": "a", "completion": "b"}])
    prep.refused(c, "--train-on assistant on completion data", ["--model", model_dir(c, "q", qwen).tok.dir, "--data",
                                                                 comp, "--out", out, "--train-on", "assistant"],
                 ["--train-on", "completion"], [out])


CASES = {"qwen": case_qwen, "llama3": case_llama3, "generation": case_generation, "base": case_base,
         "errors": case_errors}

if __name__ == "__main__":
    harness.run_driver("prep_chat", {k: (lambda f: lambda fails, lorad, work: f(JsCtx(fails, lorad, work)))(v)
                                 for k, v in CASES.items()})
