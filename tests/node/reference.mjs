// reference.mjs: the JavaScript reference of tests/tokenizer.py. For each line of a JSONL
// file of strings it prints one JSON line, from Hugging Face's tokenizers.js
// (@huggingface/tokenizers) given DIR's tokenizer.json and tokenizer_config.json:
//   ids      encode(text) with the post-processor's special tokens (add_special_tokens true)
//   plain    encode(text, {add_special_tokens: false}), and its tokens' strings in tokens
//   decoded  decode(plain) with clean_up_tokenization_spaces off: the Rust tokenizers'
//            decode, which transformers' clean-up (a Python-side step) does not touch
//   decoded_ids  decode(ids), the same way
// where tokenizers.js's own white-space and word classes differ from the Rust
// tokenizers' (below), the same components run on the Rust classes; and with --tiktoken
// NAME, tiktoken's (the npm WASM build of OpenAI's Rust tiktoken)
//   tiktoken encode(text, "all"): NAME's ids, special-token strings as their tokens
//
//   node reference.mjs --tokenizer DIR --jsonl FILE [--tiktoken gpt2]
import fs from "node:fs";
import path from "node:path";
import {
  ByteLevelPreTokenizer, StripNormalizer, Tokenizer, WhitespacePreTokenizer, WhitespaceSplitPreTokenizer,
} from "@huggingface/tokenizers";

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
// tokenizers.js's own patterns of three pre-tokenizers use JavaScript's \s (U+FEFF in,
// U+0085 out) and, in Whitespace, its ASCII \w, where the Rust tokenizers (Oniguruma)
// and tiktoken take Unicode's White_Space and Oniguruma's word characters (tokenizers.js
// translates \s and \w so in a Split's regex, with the word class below, but not in
// these): ByteLevel's GPT-2 split, Whitespace and WhitespaceSplit get the same patterns
// on those classes.
const WORD = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\u00B2\\u00B3\\u00B9\\u00BC-\\u00BE";
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;
const WHITESPACE = new RegExp(`[${WORD}]+|[^${WORD}\\p{White_Space}]+`, "gu");
function fixPreTokenizer(pt) {
  if (!pt) return;
  if (pt instanceof ByteLevelPreTokenizer) pt.pattern = GPT2_SPLIT;
  if (pt instanceof WhitespacePreTokenizer) pt.pre_tokenize_text = (text) => text.match(WHITESPACE) || [];
  if (pt instanceof WhitespaceSplitPreTokenizer) pt.pre_tokenize_text = (text) => text.match(/\P{White_Space}+/gu) || [];
  for (const sub of pt.tokenizers ?? []) fixPreTokenizer(sub);
}
fixPreTokenizer(tok.pre_tokenizer);
// Its Strip normalizer trims JavaScript's white space (U+FEFF in, U+0085 out); Rust's
// trims char::is_whitespace, White_Space.
function fixNormalizer(nz) {
  if (!nz) return;
  if (nz instanceof StripNormalizer) {
    const { strip_left, strip_right } = nz.config;
    nz.normalize = (text) => text.replace(strip_left ? /^\p{White_Space}+/u : /^(?!)/u, "")
                                 .replace(strip_right ? /\p{White_Space}+$/u : /^(?!)/u, "");
  }
  for (const sub of nz.normalizers ?? []) fixNormalizer(sub);
}
fixNormalizer(tok.normalizer);
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
