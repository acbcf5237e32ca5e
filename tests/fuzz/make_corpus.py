#!/usr/bin/env python3
"""make_corpus.py: writes the seed corpora of the fuzz targets into corpus/<target>/.

A few small valid inputs and a few invalid ones per target, each under a few hundred
bytes (the .bin shards need their 1 KB header). Run it from anywhere; it rewrites the
files it owns and leaves others alone. Only the standard library is used: the JobSpec
seeds are encoded by hand from proto/lorad.proto's field numbers.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors ----

def safetensors(tensors, meta=None, raw_header=None, tail=b""):
    """tensors: [(name, dtype, shape, bytes)] laid out in order."""
    header, blobs, off = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs) + tail


f32 = struct.pack("<4f", 1.0, -2.5, 0.0, 3.25)
put("fuzz_safetensors", "valid_f32", safetensors([("w", "F32", [2, 2], f32)], meta={"format": "pt"}))
put("fuzz_safetensors", "valid_mixed", safetensors([
    ("a.weight", "F16", [3], struct.pack("<3H", 0x3C00, 0x8001, 0x7C00)),
    ("b.weight", "BF16", [1, 2], struct.pack("<2H", 0x3F80, 0xFFC1)),
    ("c", "F64", [1], struct.pack("<d", 1e300)),
    ("d", "I64", [1], struct.pack("<q", -7)),
    ("e", "U8", [0], b""),
    ("f", "BOOL", [], b"\x01"),
]))
put("fuzz_safetensors", "empty_header", safetensors([]))
put("fuzz_safetensors", "bad_overlap", safetensors([], raw_header=b'{"x":{"dtype":"F32","shape":[1],'
                        b'"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}',
                        tail=b"\0" * 6))
put("fuzz_safetensors", "bad_gap", safetensors([], raw_header=b'{"x":{"dtype":"I8","shape":[1],'
                        b'"data_offsets":[1,2]}}', tail=b"\0\0"))
put("fuzz_safetensors", "bad_header_len", struct.pack("<Q", 1 << 40) + b"{}")
put("fuzz_safetensors", "bad_json", struct.pack("<Q", 5) + b'{"x":')

# ---- token shards (llm.c .bin) ----

def shard(tokens, magic=20240520, count=None, T=0, vocab=0, token_fmt=None):
    h = [0] * 256
    h[0], h[1], h[2] = magic, 1, len(tokens) if count is None else count
    h[3], h[4] = T, vocab  # unused by the format: the fuzz target's sequence length and vocabulary
    fmt = token_fmt or ("<%dH" if magic == 20240520 else "<%dI")
    return struct.pack("<256i", *h) + struct.pack(fmt % len(tokens), *tokens)


put("fuzz_tokens", "valid_u16", shard([1, 2, 3, 4, 5, 6, 7, 8, 9], T=3, vocab=10))
put("fuzz_tokens", "valid_u32", shard([0, 70000, 5, 0xFFFFFFFF, 2], magic=20240801, T=1, vocab=0))
put("fuzz_tokens", "bad_vocab", shard([1, 2, 300], T=1, vocab=256))
put("fuzz_tokens", "bad_count", shard([1, 2, 3], count=4))
put("fuzz_tokens", "bad_magic", struct.pack("<3i", 20240521, 1, 0) + b"\0" * 1012)

# ---- config.json ----

gpt2 = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
    "n_inner": None, "n_layer": 12, "n_positions": 1024, "scale_attn_weights": True,
    "tie_word_embeddings": True, "vocab_size": 50257,
}
put("fuzz_hf_config", "valid_gpt2.json", json.dumps(gpt2, indent=2))
put("fuzz_hf_config", "valid_tiny.json", '{"n_embd":8,"n_head":2,"n_layer":1,"n_positions":16,'
    '"vocab_size":32,"n_inner":24,"layer_norm_epsilon":0.001,"activation_function":"gelu_pytorch_tanh"}')
llama = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 40,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "vocab_size": 100, "rms_norm_eps": 1e-06, "rope_theta": 500000.0, "hidden_act": "silu",
    "tie_word_embeddings": True, "attention_bias": False,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 32},
}
put("fuzz_hf_config", "valid_llama.json", json.dumps(llama, separators=(",", ":")))
put("fuzz_hf_config", "valid_qwen2.json", '{"model_type":"qwen2","hidden_size":8,"intermediate_size":16,'
    '"num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":16,"vocab_size":32,'
    '"use_sliding_window":true,"sliding_window":4,"rope_parameters":{"rope_theta":1e6,"rope_type":"default"}}')
put("fuzz_hf_config", "bad_arch.json", '{"model_type":"falcon","n_embd":8}')
put("fuzz_hf_config", "bad_heads.json", '{"n_embd":10,"n_head":3,"n_layer":1,"n_positions":16,"vocab_size":32}')
put("fuzz_hf_config", "bad_type.json", '{"n_embd":"8","n_head":2,"n_layer":1e3,"n_positions":-1}')
put("fuzz_hf_config", "bad_json.json", '{"n_embd": 8,, }')

# ---- adapter_config.json ----

peft = {
    "alpha_pattern": {"h.1.attn.c_attn": 4.5}, "auto_mapping": None, "base_model_name_or_path": "gpt2",
    "bias": "none", "fan_in_fan_out": True, "inference_mode": True, "init_lora_weights": True,
    "layers_to_transform": None, "lora_alpha": 16, "lora_dropout": 0.05, "modules_to_save": None,
    "peft_type": "LORA", "r": 8, "rank_pattern": {"transformer.h.0.attn.c_attn": 4},
    "target_modules": ["c_attn", "c_proj"], "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": True,
}
put("fuzz_peft_config", "valid_peft.json", json.dumps(peft, indent=2))
put("fuzz_peft_config", "valid_min.json", '{"peft_type":"LORA","target_modules":["mlp.c_fc"],"lora_alpha":0.5}')
put("fuzz_peft_config", "bad_regex.json", '{"peft_type":"LORA","target_modules":".*attn"}')
put("fuzz_peft_config", "bad_dora.json", '{"peft_type":"LORA","target_modules":["c_attn"],"use_dora":true}')
put("fuzz_peft_config", "bad_pattern.json", '{"peft_type":"LORA","target_modules":["c_attn"],'
    '"rank_pattern":{"h.(0|1)":4},"alpha_pattern":{"c_attn":0}}')

# ---- tokenizer.json, a NUL byte, then the text to encode ----

def byte_chars():
    """GPT-2's bytes_to_unicode: each byte's printable stand-in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    extra = iter(range(256, 256 + 256))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


def added(id_, content, special=True, **kw):
    return dict({"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": not special, "special": special}, **kw)


def template(token, id_):
    return {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": token, "type_id": 0}},
                                                     {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {token: {"id": token, "ids": [id_], "tokens": [token]}}}


def tokenizer_seed(model, text, added_tokens=(), **parts):
    j = {"version": "1.0", "added_tokens": list(added_tokens), "normalizer": None, "pre_tokenizer": None,
         "post_processor": None, "decoder": None, "model": dict({"type": "BPE", "dropout": None}, **model)}
    j.update(parts)
    return json.dumps(j, ensure_ascii=False).encode() + b"\0" + text.encode()


# byte-level, GPT-2's way: every byte a token, a few merges, <|endoftext|> special
bc = byte_chars()
bl_vocab = {bc[b]: b for b in range(256)}
for pair in ["\u0120 t", "h e", "\u0120t he", "l l", "o \u0120", "1 2"]:
    bl_vocab.setdefault(pair.replace(" ", ""), len(bl_vocab))
bl_merges = ["\u0120 t", "h e", "\u0120t he", "l l", "1 2"]
bl_vocab["<|endoftext|>"] = len(bl_vocab)
put("fuzz_tokenizer", "valid_gpt2", tokenizer_seed(
    {"vocab": bl_vocab, "merges": bl_merges}, "the hello  12345 <|endoftext|> caf\u00e9 \U0001F44D\u200d\t\n",
    [added(bl_vocab["<|endoftext|>"], "<|endoftext|>")],
    pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    post_processor={"type": "ByteLevel"}, decoder={"type": "ByteLevel"}))
# Llama 3's way: a Split regex, then ByteLevel without its own; merges as pairs, ignore_merges
LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
put("fuzz_tokenizer", "valid_llama3", tokenizer_seed(
    {"vocab": bl_vocab, "merges": [m.split(" ") for m in bl_merges], "ignore_merges": True},
    "<|begin_of_text|>He'LL say 1234567 \r\n\r\n  x",
    [added(len(bl_vocab), "<|begin_of_text|>")],
    pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
    post_processor={"type": "Sequence", "processors": [{"type": "ByteLevel"}, template("<|begin_of_text|>", len(bl_vocab))]},
    decoder={"type": "ByteLevel"}))
# SentencePiece's way (Llama 2): Prepend + Replace, byte fallback, the decoder chain
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    sp_vocab["<0x%02X>" % b] = len(sp_vocab)
for t in ["\u2581", "a", "b", "c", "\u2581a", "ab", "\u2581ab", "\u00e9"]:
    sp_vocab[t] = len(sp_vocab)
sp_model = {"vocab": sp_vocab, "merges": ["\u2581 a", "a b", "\u2581a b"], "unk_token": "<unk>", "fuse_unk": True,
            "byte_fallback": True}
sp_decoder = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                               {"type": "ByteFallback"}, {"type": "Fuse"},
                                               {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
put("fuzz_tokenizer", "valid_llama2", tokenizer_seed(
    sp_model, "ab  abc <s>x</s> \u00e9\u65e5 \u2581", [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
    normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                     {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    post_processor=template("<s>", 1), decoder=sp_decoder))
# Mistral v0.3's way: Metaspace, prepend_scheme first; and split on, with a Metaspace decoder
put("fuzz_tokenizer", "valid_metaspace", tokenizer_seed(
    sp_model, " ab ab</s>ab", [added(2, "</s>", rstrip=True)],
    pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
    post_processor=template("<s>", 1), decoder=sp_decoder))
put("fuzz_tokenizer", "valid_metaspace_split", tokenizer_seed(
    dict(sp_model, byte_fallback=False), "a b  c\u00e9", [],
    pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True, "split": True},
    decoder={"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}))
# word-level pieces: the other pre-tokenizers and normalizers, affixes, unk, lstrip/single_word
wp_vocab = {"[UNK]": 0, "h": 1, "##i": 2, "hi</w>": 3, "i": 4, "##i</w>": 5, "<mask>": 6, "1": 7, "!": 8}
put("fuzz_tokenizer", "valid_pieces", tokenizer_seed(
    {"vocab": wp_vocab, "merges": ["h ##i</w>"], "unk_token": "[UNK]", "continuing_subword_prefix": "##",
     "end_of_word_suffix": "</w>"},
    "HI hi! 123 \u00c5ngstr\u00f6m  <mask> x<mask>y \uff48\uff49", [added(6, "<mask>", lstrip=True, single_word=True)],
    normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
                                                     {"type": "Strip", "strip_left": True, "strip_right": True}]},
    pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Isolated"},
        {"type": "Digits", "individual_digits": True},
        {"type": "Split", "pattern": {"String": "i"}, "behavior": "MergedWithPrevious", "invert": False}]},
    decoder={"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"Regex": "</w>"}, "content": " "},
                                               {"type": "Strip", "content": " ", "start": 0, "stop": 1}]}))
put("fuzz_tokenizer", "valid_whitespace", tokenizer_seed(
    {"vocab": wp_vocab, "merges": [], "unk_token": "[UNK]", "fuse_unk": True}, "hi there, NFD e\u0301 h\u00a0i",
    normalizer={"type": "NFD"}, pre_tokenizer={"type": "Whitespace"},
    post_processor={"type": "Sequence", "processors": [template("h", 1), template("i", 4)]}))
put("fuzz_tokenizer", "bad_unigram", b'{"model": {"type": "Unigram", "vocab": [["a", -1.0]]}}\0a')
put("fuzz_tokenizer", "bad_truncated", tokenizer_seed(sp_model, "ab")[:300])
put("fuzz_tokenizer", "bad_text", tokenizer_seed(sp_model, "ab").replace(b"\0ab", b"\0a\xff\xc3(b"))

# ---- adapter_model.safetensors (the harness's adapter_config.json: r 2, c_attn r 4) ----

def lora(module, a_shape, b_shape, b_values=None):
    """The A and B tensors of MODULE, F32; B's values default to 0.5, 1.5, ..."""
    na, nb = a_shape[0] * a_shape[1], b_shape[0] * b_shape[1]
    bv = b_values if b_values is not None else [0.5 + i for i in range(nb)]
    return [(f"base_model.model.{module}.lora_A.weight", "F32", a_shape,
             struct.pack(f"<{na}f", *[(-1) ** i * (i + 1) / 7 for i in range(na)])),
            (f"base_model.model.{module}.lora_B.weight", "F32", b_shape, struct.pack(f"<{nb}f", *bv))]


# c_attn of width 2 (out 6) as lorad exports q and v slices: B's q rows use columns 0-1, v's 2-3
blocks = [0.0] * 24
for row, col in ((0, 0), (1, 1), (4, 2), (5, 3), (0, 1)):
    blocks[row * 4 + col] = 1.0 + row + col
put("fuzz_adapter", "valid_slices", safetensors(lora("h.0.attn.c_attn", [4, 2], [6, 4], blocks)))
put("fuzz_adapter", "valid_two", safetensors(lora("model.layers.0.self_attn.q_proj", [2, 3], [3, 2]) +
                                             lora("h.1.attn.c_attn", [4, 2], [6, 4])))
put("fuzz_adapter", "bad_rank", safetensors(lora("x.q_proj", [3, 2], [2, 3])))
put("fuzz_adapter", "bad_lonely", safetensors(lora("x.q_proj", [2, 2], [2, 2])[1:]))
put("fuzz_adapter", "bad_nan", safetensors(lora("x.q_proj", [2, 2], [2, 2], [0.0, float("nan"), 1.0, 2.0])))

# ---- model.safetensors.index.json (the harness provides a.safetensors {x, y}, b.safetensors {z}) ----

put("fuzz_st_index", "valid_two.json", json.dumps({"metadata": {"total_size": 24}, "weight_map": {
    "x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}, indent=2))
put("fuzz_st_index", "valid_one.json", '{"weight_map":{"z":"b.safetensors"}}')
put("fuzz_st_index", "bad_escape.json", '{"weight_map":{"x":"../a.safetensors","y":".."}}')
put("fuzz_st_index", "bad_missing.json", '{"weight_map":{"x":"b.safetensors"}}')
put("fuzz_st_index", "bad_empty.json", '{"weight_map":{}}')

# ---- JobSpec protobuf ----

def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def f_int(n, v):
    return varint(n << 3) + varint(v)


def f_str(n, s):
    s = s.encode() if isinstance(s, str) else s
    return varint(n << 3 | 2) + varint(len(s)) + s


def f_dbl(n, d):
    return varint(n << 3 | 1) + struct.pack("<d", d)


job = (f_str(1, "/models/gpt2") + f_str(2, "/data/train.bin") + f_str(3, "/runs/a") + f_str(5, "c_attn")
       + f_str(5, "c_proj") + f_int(6, 8) + f_dbl(7, 16.0) + f_int(13, 1000) + f_int(14, 8) + f_int(15, 2)
       + f_int(16, 256) + f_dbl(17, 2e-4) + f_int(18, 2) + f_int(19, 100) + f_dbl(21, 0.9) + f_dbl(22, 0.999)
       + f_dbl(23, 1e-8) + f_dbl(24, 1.0) + f_int(25, 42) + f_int(26, 1) + f_int(28, 10) + f_int(31, 100)
       + f_int(33, 500) + f_int(35, 3))
put("fuzz_job_spec", "valid_lora", job)
put("fuzz_job_spec", "valid_full", f_str(1, "m") + f_str(2, "d") + f_str(3, "o") + f_int(6, 1) + f_dbl(7, 1.0)
    + f_int(12, 1) + f_int(13, 5) + f_int(14, 4) + f_int(16, 8) + f_dbl(17, 0.1) + f_int(18, 1) + f_dbl(22, 0.5)
    + f_dbl(23, 1e-6) + f_int(28, 1) + f_dbl(34, 60.0) + f_str(32, "auto"))
put("fuzz_job_spec", "bad_ranges", f_str(1, "m") + f_str(2, "d") + f_str(3, "o") + f_int(6, -1) + f_dbl(7, float("nan")))
put("fuzz_job_spec", "bad_micro", job + f_int(15, 3))
put("fuzz_job_spec", "bad_truncated", job[:37])
put("fuzz_job_spec", "bad_utf8", f_str(1, b"\xff\xfe") + f_str(5, b"\xc3"))

# ---- --config FILE.json (the first byte: 0 reads it for train, 1 for submit) ----

def config(cmd, text):
    return bytes([cmd]) + text.encode()


put("fuzz_config", "train_full", config(0, json.dumps({
    "model": "m", "data": "d", "out": "o", "targets": ["c_attn", "mlp.c_fc"], "rank": 4, "alpha": 16.5,
    "shuffle": False, "micro-batch": 1, "lr": 2e-4, "mode": "lora", "rank_pattern": "c_attn=2"}, indent=1)))
put("fuzz_config", "submit_pair", config(1, '{"socket": "/s", "json": true, "steps": 5, "seq": 0}'))
put("fuzz_config", "bad_unknown", config(0, '{"lrr": 1e-3}'))
put("fuzz_config", "bad_range", config(0, '{"beta1": 1.0, "eps": 1e-50}'))
put("fuzz_config", "bad_types", config(0, '{"steps": "x", "targets": [1], "shuffle": 3}'))
put("fuzz_config", "bad_not_taken", config(1, '{"out": "o", "follow": true}'))
put("fuzz_config", "bad_syntax", config(0, '{"steps": 2,,'))
put("fuzz_config", "bad_array", config(0, "[1, 2]"))


# ---- control frames (lorad.Request, a 4-byte big-endian length first) ----

def frame(msg):
    return struct.pack(">I", len(msg)) + msg


def req(command, version=1, **kw):
    m = f_int(1, version) + f_int(2, command)
    if "token" in kw:
        m += f_str(3, kw["token"])
    if "spec" in kw:
        m += f_str(4, kw["spec"])
    if "job" in kw:
        m += f_int(5, kw["job"])
    if "offset" in kw:
        m += f_int(6, kw["offset"])
    if kw.get("now"):
        m += f_int(7, 1)
    if kw.get("metrics"):
        m += f_int(8, 1)
    return frame(m)


put("fuzz_frame", "status_daemon", req(0))
put("fuzz_frame", "status_job", req(0, job=1))
put("fuzz_frame", "list_then_logs", req(2) + req(4, job=1, offset=5) + req(4, job=1, metrics=True))
put("fuzz_frame", "logs_far", req(4, job=1, offset=1 << 62))
put("fuzz_frame", "cancel_missing", req(3, job=77) + req(3))
put("fuzz_frame", "submit", req(1, spec=job))
put("fuzz_frame", "shutdown_now", req(5, now=True, token="t"))
put("fuzz_frame", "bad_version", req(0, version=2))
put("fuzz_frame", "bad_command", req(42))
put("fuzz_frame", "bad_oversized", struct.pack(">I", 0x7FFFFFFF) + b"\x08\x01")
put("fuzz_frame", "bad_empty", struct.pack(">I", 0))
put("fuzz_frame", "bad_truncated", req(2)[:5])
put("fuzz_frame", "bad_garbage", frame(bytes(range(200, 256))))


# ---- lorad prep inputs: .jsonl lines, also cut as .txt documents between blank lines ----

def jsonl(*objs):
    return "\n".join(o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objs) + "\n"


put("fuzz_prep", "text", jsonl({"text": "hello world"}, {"text": "caf\u00e9 \U0001F600", "id": 3}))
put("fuzz_prep", "completion", jsonl({"prompt": "Q: 2+2?\nA:", "completion": " 4"}, {"prompt": "", "completion": ""}))
put("fuzz_prep", "alpaca", jsonl({"instruction": "Add.", "input": "2 2", "output": "4"},
                                 {"instruction": "Greet.", "input": None, "output": "Hi", "text": "x"}))
put("fuzz_prep", "chat", jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
                               {"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "assistant",
                                                                                             "content": "b"}]}))
put("fuzz_prep", "chat_turns", jsonl(
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}, {"role": "user", "content": "\n"},
                  {"role": "assistant", "content": ""}, {"role": "tool", "content": None}]},
    {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"},
                                                                  {"role": "user", "content": ["part"]}]},
    {"messages": [{"role": 1}]}, {"messages": []}, {"prompt": [], "completion": "x"}))
put("fuzz_prep", "blank_lines", "doc one\nline two\n\n \t\r\ndoc two\n\n\n{\"text\": \"three\"}")
put("fuzz_prep", "bad_lines", jsonl('{"prompt": "a"', '[1, 2]', '{"text": 7}', '{"a": 1, "a": 2}',
                                    '{"prompt": "a", "completion": null}', '"just a string"'))
put("fuzz_prep", "bad_utf8", b'{"text": "caf\xc3"}\n\xff\xfe\n{"text": "ok"}\r\n')
put("fuzz_prep", "nul", b'{"text": "a\\u0000b"}\n\x00\n')

# ---- lorad generate --prompts: one {"prompt", "adapter"} object a line ----
put("fuzz_prompts", "mixed", jsonl({"prompt": "Once upon", "adapter": "math"}, {"prompt": "caf\u00e9", "adapter": None},
                                   {"prompt": "x", "note": 1}))
put("fuzz_prompts", "blank_crlf", '{"prompt": "a"}\r\n\n  \n{"prompt": "b", "adapter": "x"}\r\n')
put("fuzz_prompts", "bad_lines", jsonl('{"prompt": 3}', '{"adapter": "a"}', '{"prompt": "a", "adapter": 2}', "[1]",
                                       '{"prompt": "a\\u0000b"}'))
put("fuzz_prompts", "empty", "\n\n")
# ---- chat templates (the template, a NUL, the messages JSON) ----

def chat(template, messages):
    return template.encode() + b"\0" + json.dumps(messages).encode()


TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ü 🤖"},
         {"role": "assistant", "content": " Hello! "}, {"role": "user", "content": "Bye"}]
with open(os.path.join(HERE, "..", "data", "templates", "zephyr-7b-beta.jinja")) as f:
    put("fuzz_jinja", "zephyr", chat(f.read(), TURNS))
with open(os.path.join(HERE, "..", "data", "templates", "mistral-7b-instruct-v0.3.jinja")) as f:
    put("fuzz_jinja", "mistral_v03", chat(f.read(), TURNS[1:]))
put("fuzz_jinja", "chatml", chat(
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + "
    "'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", TURNS))
put("fuzz_jinja", "generation", chat(
    "{{ bos_token }}{%- for m in messages -%}{% if m.role == 'assistant' %}{% generation %}{{ m.content + eos_token }}"
    "{% endgeneration %}{% else %}[{{ m.role | upper }}] {{ m['content'][::-1] }}{% endif %}\n{% endfor %}", TURNS))
put("fuzz_jinja", "namespace_loop", chat(
    "{% set ns = namespace(i=0) %}{% for m in messages if m.role != 'system' %}{% set ns.i = ns.i + 1 %}"
    "{{ loop.index0 }}/{{ loop.length }} {{ m | tojson(indent=2, sort_keys=true) }}{% if loop.last %}{% break %}"
    "{% endif %}{% endfor %}{{ ns.i }} {{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') "
    "| join(', ') }}{{ 'x' if ns.i > 1 else raise_exception('short') }}", TURNS))
put("fuzz_jinja", "raw_comment", chat("  {#- note -#}\n  {% raw %}{{ x }}{% endraw %}\n{{- ' a ' ~ 1.5e3 ~ none -}}", []))
put("fuzz_jinja", "bad_unclosed", chat("{% if messages %}{{ messages[0].role", TURNS))
put("fuzz_jinja", "bad_macro", chat("{% macro m() %}{% endmacro %}", TURNS))
put("fuzz_jinja", "bad_messages", b"{{ messages }}\0[{\"role\": ")
