// reference.mjs: the JavaScript reference of tests/tokenizer.py. For each line of a JSONL
// file of strings it prints one JSON line, from Hugging Face's tokenizers.js
// (@huggingface/tokenizers) given DIR's tokenizer.json and tokenizer_config.json:
//   ids      encode(text) with the post-processor's special tokens (add_special_tokens true)
//   plain    encode(text, {add_special_tokens: false}), and its tokens' strings in tokens
//   decoded  decode(plain) with clean_up_tokenization_spaces off: the Rust tokenizers'
//            decode, which transformers' clean-up (a Python-side step) does not touch
//   decoded_ids  decode(ids), the same way
// and with --tiktoken NAME, tiktoken's (the npm WASM build of OpenAI's Rust tiktoken)
//   tiktoken encode(text, "all"): NAME's ids, special-token strings as their tokens
//
//   node reference.mjs --tokenizer DIR --jsonl FILE [--tiktoken gpt2]
import fs from "node:fs";
import path from "node:path";
import { ByteLevelPreTokenizer, Tokenizer } from "@huggingface/tokenizers";

function args(argv) {
  const out = {};
  for (let i = 2; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length) throw new Error(`usage: ${argv[1]} --tokenizer DIR --jsonl FILE [--tiktoken NAME]`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

function readJson(file, fallback) {
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : fallback;
}

const opt = args(process.argv);
const tok = new Tokenizer(readJson(path.join(opt.tokenizer, "tokenizer.json")),
                          readJson(path.join(opt.tokenizer, "tokenizer_config.json"), {}));
let tik = null;
if (opt.tiktoken) {
  const { get_encoding } = await import("tiktoken");
  tik = get_encoding(opt.tiktoken);
}
// tokenizers.js's ByteLevel pre-tokenizer splits with GPT-2's pattern on JavaScript's \s,
// which holds U+FEFF and lacks U+0085, where the Rust tokenizers (Oniguruma) and tiktoken
// take Unicode's White_Space (tokenizers.js translates \s so in a Split's regex, not in
// its own ByteLevel pattern); the same pattern on White_Space replaces it.
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;
function fixByteLevel(pt) {
  if (!pt) return;
  if (pt instanceof ByteLevelPreTokenizer) pt.pattern = GPT2_SPLIT;
  for (const sub of pt.tokenizers ?? []) fixByteLevel(sub);
}
fixByteLevel(tok.pre_tokenizer);
const decode = (ids) => (ids.length ? tok.decode(ids, { clean_up_tokenization_spaces: false }) : "");

const out = [];
for (const line of fs.readFileSync(opt.jsonl, "utf8").split("\n")) {
  if (!line) continue;
  const text = JSON.parse(line);
  const ids = tok.encode(text).ids, bare = tok.encode(text, { add_special_tokens: false });
  const row = { ids, plain: bare.ids, tokens: bare.tokens, decoded: decode(bare.ids), decoded_ids: decode(ids) };
  if (tik) row.tiktoken = Array.from(tik.encode(text, "all"));
  out.push(JSON.stringify(row));
}
if (tik) tik.free();
process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
