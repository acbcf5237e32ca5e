// bench_encode.mjs: the JavaScript encoders of bench/tokenizer.py, timed as lorad's
// bench/tokenize_speed.c times its own: the whole text file is one input, encoded
// without special tokens, on one thread; the encoder's load and the file's read are timed
// apart, each repetition is one encode call. Two encoders:
//   --impl tiktoken  the npm tiktoken package (OpenAI's Rust tiktoken compiled to WASM):
//                    get_encoding(ENCODING).encode_ordinary(text)
//   --impl hf        Hugging Face's tokenizers.js on DIR's tokenizer.json:
//                    encode(text, {add_special_tokens: false}); it keeps a cache of the
//                    words it has seen from one call to the next
// Prints one JSON line {"bytes", "ids", "load_s", "encode_s": [...]}; with --ids OUT,
// writes the last repetition's ids to OUT as little-endian int32.
//
//   node bench_encode.mjs --impl tiktoken|hf --text FILE [--tokenizer DIR] [--encoding gpt2]
//                         [--repeat N] [--ids OUT]
import fs from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";

const opt = { encoding: "gpt2", repeat: "3" };
for (let i = 2; i + 1 < process.argv.length; i += 2) opt[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];

const textBuf = fs.readFileSync(opt.text);
const text = textBuf.toString("utf8");
let encode, release = () => {};
const t0 = performance.now();
if (opt.impl === "tiktoken") {
  const { get_encoding } = await import("tiktoken");
  const enc = get_encoding(opt.encoding);
  encode = (s) => enc.encode_ordinary(s);
  release = () => enc.free();
} else if (opt.impl === "hf") {
  const { Tokenizer } = await import("@huggingface/tokenizers");
  const read = (f) => (fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) : {});
  const tok = new Tokenizer(read(path.join(opt.tokenizer, "tokenizer.json")), read(path.join(opt.tokenizer, "tokenizer_config.json")));
  encode = (s) => tok.encode(s, { add_special_tokens: false }).ids;
} else {
  throw new Error("--impl tiktoken|hf");
}
const load_s = (performance.now() - t0) / 1000;

const encode_s = [];
let ids = [];
for (let r = 0; r < Number(opt.repeat); r++) {
  const a = performance.now();
  ids = encode(text);
  encode_s.push((performance.now() - a) / 1000);
}
release();
if (opt.ids) fs.writeFileSync(opt.ids, Buffer.from(Int32Array.from(ids).buffer));
console.log(JSON.stringify({ bytes: textBuf.length, ids: ids.length, load_s, encode_s }));
