"""example_chat.py: examples/chat.sh, the chat fine-tune example, in a short mode (a few
LoRA steps), on the built binary. It checks that every step ran and left its outputs,
not how well the model learned (which depends on nothing this test controls):
  - the chat JSONL: one {"messages": [user, assistant]} line per kept entry, every
    question "Define HEADWORD." and every answer a sentence of that entry in the corpus;
  - prep's summary (the conversations, the {% generation %} spans) and its token files:
    one example per line, format chat, loss on the assistant's turns, each example's
    counted tokens ending with <|im_end|> (254);
  - train: the metrics of every step, a checkpoint and the PEFT adapter;
  - the replies, when this lorad's generate has --chat: one line per question and model,
    each saying why generation ended.
"""
import json
import os
import re
import subprocess
import sys


sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  the driver, run_lorad
import prep  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
IM_END = 254


def check_jsonl(fails, path: str, corpus: str) -> int:
    with open(corpus, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            msgs = o["messages"]
            ok = [m["role"] for m in msgs] == ["user", "assistant"] and re.fullmatch(r"Define [A-Z].*\.", msgs[0]["content"])
            word = msgs[0]["content"][len("Define "):-1]
            ok = ok and f"{word}, " in text and " ".join(msgs[1]["content"].split()) in text
            if not fails.check(bool(ok), f"{path}: line {n + 1} is not an entry's question and answer: {line[:200]}"):
                break
            n += 1
    return n


def case(fails, lorad, work):
    env = dict(os.environ, LORAD=lorad, LORAD_CHAT_OUT=work, LORAD_CHAT_STEPS=str(STEPS), **harness.MPI_ENV)
    cmd = [os.path.join(REPO, "examples", "chat.sh")]
    print(f"+ {cmd[0]}   (LORAD_CHAT_STEPS={STEPS})", flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    print(p.stdout[-4000:], p.stderr[-2000:], flush=True)
    if not fails.check(p.returncode == 0, f"chat.sh exited {p.returncode}"):
        return
    corpora = os.path.join(REPO, "examples", "corpora")
    counts = {s: check_jsonl(fails, os.path.join(work, f"devil-chat-{s}.jsonl"), os.path.join(corpora, f"devil-{s}.txt"))
              for s in ("train", "val")}
    fails.check(counts["train"] > 300 and counts["val"] > 30, f"too few conversations: {counts}")
    for s, n in counts.items():
        out = p.stdout + p.stderr
        fails.check(f"prep: {n} examples ({n} in {os.path.join(work, f'chat-{s}.h5')})" in out,
                    f"prep's summary of {s} does not say {n} examples")
        d = prep.read_set(os.path.join(work, f"chat-{s}.h5"))
        a = d["attrs"]
        fails.check(a.get("format") == "chat" and a.get("train_on") == "auto" and len(d["doc_offsets"]) == n,
                    f"chat-{s}.h5: attributes {a}, {len(d['doc_offsets'])} examples")
        ends = list(d["doc_offsets"][1:]) + [len(d["tokens"])]
        for i, (a0, b0) in enumerate(zip(d["doc_offsets"], ends)):
            counted = [t for t, m in zip(d["tokens"][a0:b0], d["loss_mask"][a0:b0]) if m]
            if not fails.check(bool(counted) and counted[-1] == IM_END,
                               f"chat-{s}.h5: example {i} does not count its <|im_end|>: {counted[-5:]}"):
                break
    fails.check("the assistant's spans are the template's {% generation %} blocks" in p.stderr + p.stdout,
                "prep does not say the spans came from {% generation %}")
    run = os.path.join(work, "run")
    rows = harness.read_metrics(os.path.join(run, "metrics.jsonl"))
    fails.check([r["step"] for r in rows] == list(range(1, STEPS + 1)), f"metrics steps {[r['step'] for r in rows]}")
    for f in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "checkpoints/latest"):
        fails.check(os.path.exists(os.path.join(run, f)), f"run/{f} is missing")
    with open(os.path.join(run, "adapter", "adapter_config.json")) as f:
        fails.check(json.load(f).get("peft_type") == "LORA", "the adapter is not a PEFT LoRA adapter")
    has_chat = "--chat" in subprocess.run([lorad, "generate", "--help"], capture_output=True, text=True).stdout
    with open(os.path.join(work, "replies.txt"), encoding="utf-8") as f:
        replies = f.read().splitlines()
    if has_chat:
        fails.check(len(replies) == 6 and all(len(r.split(" | ")) == 3 and re.search(r"\[(ended|stopped) ", r)
                                              for r in replies), f"replies: {replies}")
    else:
        print("replies: this lorad's generate has no --chat; chat.sh says it skipped them", flush=True)
        fails.check(replies == ["== lorad generate --chat: not in this lorad; the replies are skipped"],
                    f"replies.txt without generate --chat: {replies}")


if __name__ == "__main__":
    harness.run_driver("example_chat", case)
