#!/usr/bin/env bash
# A chat fine-tune end to end, on the bundled base (examples/base: the byte-level GPT-2
# that lorad pretrained on the King James Bible; its tokenizer.json and ChatML
# tokenizer_config.json are lorad init-tokenizer's). The steps a user takes with a
# model directory and a JSONL file:
#   1. data: The Devil's Dictionary (examples/corpora) as chat JSONL, one line an entry:
#      {"messages": [{"role": "user", "content": "Define ABSURDITY."},
#                    {"role": "assistant", "content": "A statement or belief ..."}]}
#      (the entries whose first sentence fits the base's 128-token context with the
#      template around it; held-out entries are the validation set);
#   2. lorad prep: the model's chat template renders each line; the loss counts the
#      assistant's turns, <|im_end|> included, so the model learns to stop;
#   3. lorad train: LoRA on 2 ranks; the adapter is a PEFT adapter (run/adapter);
#   4. lorad generate --chat: the question as a user message, the template's generation
#      prompt, decoding until <|im_end|>, base and adapted.
#   LORAD_CHAT_OUT    output directory (default ./chat-out)
#   LORAD_CHAT_STEPS  LoRA steps (default 600, a few minutes on 2 cores; tests use fewer)
#   LORAD             the lorad binary (default build/lorad)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lorad=${LORAD:-$root/build/lorad}
out=${LORAD_CHAT_OUT:-$root/chat-out}
steps=${LORAD_CHAT_STEPS:-600}
base=$root/examples/base
questions=("Define POLITICS." "Define ABSURDITY." "Define DICTIONARY.")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
rm -rf "$out/run"

# 1. Each entry "HEADWORD, pos. First sentence. More..." becomes a question and its first
# sentence, as JSON (backslashes and quotes escaped); what would not fit in 128 tokens
# with ChatML around it (22 tokens) is left out.
to_chat() {
  awk 'BEGIN { RS = "" }
  { p = $0; gsub(/\n/, " ", p)
    if (!match(p, /^[A-Z][A-Z\047 -]*[A-Z]?, [a-z.]+ /)) next
    word = substr(p, 1, RLENGTH); rest = substr(p, RLENGTH + 1); sub(/,.*/, "", word)
    if (!match(rest, /^[^.!?]*[.!?]/)) next
    answer = substr(rest, 1, RLENGTH)
    question = "Define " word "."
    if (length(question) + length(answer) + 22 > 128) next
    gsub(/\\/, "\\\\", answer); gsub(/"/, "\\\"", answer)
    printf "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, {\"role\": \"assistant\", \"content\": \"%s\"}]}\n", question, answer
  }' "$1"
}
to_chat examples/corpora/devil-train.txt > "$out/devil-chat-train.jsonl"
to_chat examples/corpora/devil-val.txt > "$out/devil-chat-val.jsonl"
echo "== data: $(wc -l < "$out/devil-chat-train.jsonl") training and $(wc -l < "$out/devil-chat-val.jsonl") validation conversations, e.g."
head -n 1 "$out/devil-chat-train.jsonl"

# 2. The model's chat template (examples/base/tokenizer_config.json) renders each line.
echo "== lorad prep"
for split in train val; do
  "$lorad" prep --model "$base" --data "$out/devil-chat-$split.jsonl" --out "$out/chat-$split.h5" --overwrite \
    2>&1 | tee "$out/prep-$split.txt"
done

# 3. LoRA on every linear map of the base, 2 ranks.
echo "== lorad train: LoRA, $steps steps on 2 ranks"
mpirun --oversubscribe -np 2 "$lorad" train --model "$base" --data "$out/chat-train.h5" --val "$out/chat-val.h5" \
  --out "$out/run" --targets all-linear --rank 8 --alpha 16 --steps "$steps" --batch 8 --seq 128 --lr 1e-2 \
  --warmup 20 --shuffle on --eval-every 100 --log-every 50
ls "$out/run/adapter"

# 4. The reply, base and adapted, greedy; --chat wraps the question as a user message.
if ! "$lorad" generate --help 2>&1 | grep -q -- "--chat"; then
  echo "== lorad generate --chat: not in this lorad; the replies are skipped" | tee "$out/replies.txt"
  exit 0
fi
: > "$out/replies.txt"
for q in "${questions[@]}"; do
  for who in base adapted; do
    adapter=()
    [ "$who" = adapted ] && adapter=(--adapter "$out/run/adapter")
    reply=$("$lorad" generate --model "$base" "${adapter[@]}" --prompt "$q" --chat --max-new 100 --temperature 0 \
      2>"$out/generate.err")
    ended=$(sed -n 's/^lorad: generate: //p' "$out/generate.err" | tail -n 1)  # why it stopped
    printf '%s | %-7s | %s   [%s]\n' "$q" "$who" "$reply" "$ended" | tee -a "$out/replies.txt"
  done
done
