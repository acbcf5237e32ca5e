/*
 * flag_table.c: the flag table itself (flags.h): one row per field of every command's
 * spec message, in --help order. Defaults follow PEFT and the Hugging Face Trainer
 * where they have one. A field without a row is a bug that tests/test_flags.c finds.
 */
#include "flags.h"

#include "lorad.pb-c.h"
#include "model.h"

#define JOB &lorad__job_spec__descriptor
#define PREP &lorad__prep_spec__descriptor
#define TOKENIZE &lorad__tokenize_spec__descriptor
#define TEMPLATE &lorad__template_spec__descriptor
#define INIT_MODEL &lorad__init_model_spec__descriptor
#define INIT_TOKENIZER &lorad__init_tokenizer_spec__descriptor
#define CKPT &lorad__checkpoint_spec__descriptor
#define EVAL &lorad__eval_spec__descriptor
#define MERGE &lorad__merge_spec__descriptor
#define GENERATE &lorad__generate_spec__descriptor
#define ANALYZE &lorad__analyze_spec__descriptor
#define SERVE &lorad__serve_spec__descriptor
#define CLIENT &lorad__client_spec__descriptor

#define CORES "uses the node's cores over its ranks"
#define TEXT(x) #x
#define NUMBER(x) TEXT(x)
#define SEQ_ZERO "takes the model's context (n_positions or sliding_window), at most " NUMBER(MODEL_SEQ_DEFAULT)
/* The flags of .jsonl and .txt data that train and eval prepare as lorad prep does. */
#define TEXT_DATA "Text and JSONL data (as lorad prep)"
#define FORMAT_HELP "what a .jsonl line of the data holds; auto: from the keys of the first line"
#define SPLIT_HELP "a .txt file is one document, or documents between blank lines"
#define TRAIN_ON_HELP                                                                                          \
    "tokens counted in the loss; auto: the completion (prompt/completion, Alpaca), the assistant's turns (chat "  \
    "messages), everything (text)"
#define ADD_EOS_HELP                                                                                           \
    "end every example with the EOS token, counted in the loss (TRL's default); chat examples end with the "     \
    "template's own end of turn instead"
#define MAX_LEN_HELP "cut an example (BOS and EOS included) to its first N tokens"
#define CHAT_TEMPLATE_HELP "which of the model's named chat templates renders chat data; none: \"default\""
#define TEXT_DATA_ROWS(SPEC)                                                                                      \
    {SPEC, "format", .topic = TEXT_DATA, .help = FORMAT_HELP},                                                    \
    {SPEC, "split", .topic = TEXT_DATA, .help = SPLIT_HELP},                                                      \
    {SPEC, "train_on", .topic = TEXT_DATA, .help = TRAIN_ON_HELP},                                                \
    {SPEC, "add_eos", .value = "on", .topic = TEXT_DATA, .help = ADD_EOS_HELP},                                   \
    {SPEC, "max_len", "N", .value = "0", .range = "[0,)", .zero = "keeps every token", .topic = TEXT_DATA,      \
     .help = MAX_LEN_HELP},                                                                                       \
    {SPEC, "template", "NAME", .topic = TEXT_DATA, .help = CHAT_TEMPLATE_HELP}

/* How data with /doc_offsets (lorad prep's) becomes samples (storage/packing.h). */
#define PACKING_HELP                                                                                          \
    "data whose examples are known (lorad prep's): pack whole examples into each sample, first-fit decreasing, " \
    "each attending within itself with its own positions; off: one example a sample, padded"
#define TRUNCATE_HELP \
    "an example longer than --seq + 1 tokens keeps its first --seq + 1; off: it is split into pieces, each target in one"
#define PACKING_ROWS(SPEC, RESUME)                                                                           \
    {SPEC, "packing", .value = "on", .resume = RESUME, .topic = "Model and data", .help = PACKING_HELP},    \
    {SPEC, "truncate", .resume = RESUME, .topic = "Model and data", .help = TRUNCATE_HELP}

const struct flag flag_rows[] = {
    /* lorad train and lorad submit */
    {JOB, "model", "DIR", .required = 1, .topic = "Model and data",
     .help = "the Hugging Face model directory; a resumed run checks it is the same base"},
    {JOB, "data", "FILE", .required = 1, .topic = "Model and data",
     .help = "the token dataset (llm.c .bin or HDF5), or .jsonl/.txt prepared into OUT/data/ first"},
    {JOB, "val", "FILE", .topic = "Model and data",
     .help = "a validation dataset (as --data), evaluated before training and after"},
    {JOB, "out", "DIR", .required = 1, .commands = "train", .topic = "Model and data",
     .help = "the run directory: metrics, log, checkpoints, adapter"},
    {JOB, "seq", "T", .value = "0", .range = "[0,)", .zero = SEQ_ZERO, .resume = FLAG_RESUME_KEPT,
     .topic = "Model and data", .help = "tokens per sample"},
    PACKING_ROWS(JOB, FLAG_RESUME_KEPT),
    {JOB, "mode", .resume = FLAG_RESUME_KEPT, .topic = "Adapters",
     .help = "lora trains adapters on the frozen base; full trains every weight"},
    {JOB, "targets", "LIST", .resume = FLAG_RESUME_KEPT_LORA, .topic = "Adapters",
     .help = "modules to adapt, PEFT's names (all-linear; GPT-2 also q,k,v); none: the family's PEFT default"},
    {JOB, "rank", "R", .value = "8", .range = "[1,)", .resume = FLAG_RESUME_KEPT_LORA, .topic = "Adapters",
     .help = "LoRA rank r"},
    {JOB, "alpha", "A", .value = "8", .range = "(0,)", .resume = FLAG_RESUME_KEPT_LORA, .topic = "Adapters",
     .help = "LoRA alpha: the update is scaled by alpha/r"},
    {JOB, "rslora", .resume = FLAG_RESUME_KEPT_LORA, .topic = "Adapters",
     .help = "rank-stabilised scale alpha/sqrt(r)"},
    {JOB, "dropout", "P", .value = "0", .range = "[0,1)", .topic = "Adapters",
     .help = "dropout on the adapters' input (PEFT's lora_dropout)"},
    {JOB, "init", .topic = "Adapters", .help = "A's init: PEFT's kaiming-uniform, or gaussian N(0, 1/r^2); B starts at 0"},
    {JOB, "init_adapter", "DIR", .topic = "Adapters", .help = "start from this PEFT adapter instead"},
    {JOB, "rank_pattern", "MODULE=R,...", .resume = FLAG_RESUME_KEPT_LORA, .topic = "Adapters",
     .help = "per-module ranks, PEFT's rank_pattern (first match wins)"},
    {JOB, "alpha_pattern", "MODULE=A,...", .resume = FLAG_RESUME_KEPT_LORA, .topic = "Adapters",
     .help = "per-module alphas, PEFT's alpha_pattern"},
    {JOB, "steps", "N", .value = "1000", .range = "[1,)", .topic = "Optimization", .help = "optimizer steps"},
    {JOB, "batch", "G", .value = "8", .range = "[1,)", .topic = "Optimization",
     .help = "the global batch in sequences, split over the ranks"},
    {JOB, "micro_batch", "M", .value = "0", .range = "[0,)", .zero = "takes the whole batch", .topic = "Optimization",
     .help = "sequences per forward and backward (gradient accumulation); must divide --batch"},
    {JOB, "lr", "LR", .value = "2e-4", .range = "[0,)", .topic = "Optimization", .help = "peak learning rate"},
    {JOB, "schedule", .value = "linear", .topic = "Optimization",
     .help = "learning-rate schedule after the warmup, as Hugging Face's get_*_schedule_with_warmup"},
    {JOB, "warmup", "N", .value = "0", .range = "[0,)", .topic = "Optimization", .help = "linear warmup steps"},
    {JOB, "weight_decay", "WD", .value = "0", .range = "[0,)", .topic = "Optimization",
     .help = "AdamW's decoupled weight decay"},
    {JOB, "beta1", "B1", .value = "0.9", .range = "[0,1)", .topic = "Optimization", .help = "AdamW's beta1"},
    {JOB, "beta2", "B2", .value = "0.999", .range = "[0,1)", .topic = "Optimization", .help = "AdamW's beta2"},
    {JOB, "eps", "E", .value = "1e-8", .range = "(0,)", .topic = "Optimization", .help = "AdamW's epsilon"},
    {JOB, "clip", "C", .value = "1", .range = "[0,)", .zero = "turns clipping off", .topic = "Optimization",
     .help = "clip the global gradient norm to this"},
    {JOB, "seed", "S", .value = "42", .topic = "Optimization", .help = "seeds the adapters' init, dropout and shuffle"},
    {JOB, "shuffle", .value = "on", .topic = "Optimization", .help = "shuffle the samples every epoch"},
    {JOB, "log_every", "N", .value = "10", .range = "[1,)", .topic = "Evaluation and logging",
     .help = "steps between log lines (metrics.jsonl has every step)"},
    {JOB, "eval_every", "N", .value = "0", .range = "[0,)", .zero = "evaluates only at the end",
     .topic = "Evaluation and logging", .help = "steps between validation losses"},
    {JOB, "eval_batches", "N", .value = "0", .range = "[0,)", .zero = "takes the whole validation set",
     .topic = "Evaluation and logging", .help = "micro-batches of --val per evaluation"},
    {JOB, "profile", .topic = "Evaluation and logging",
     .help = "write OUT/profile.jsonl: each product shape's calls and time after the first step"},
    {JOB, "resume", "auto|PATH", .commands = "train", .topic = "Checkpoints and resume",
     .help = "continue a run: auto takes OUT/checkpoints/latest if any, or give a checkpoint"},
    {JOB, "ckpt_every", "N", .value = "500", .range = "[0,)", .zero = "checkpoints only at the end and on signals",
     .topic = "Checkpoints and resume", .help = "steps between checkpoints"},
    {JOB, "ckpt_every_seconds", "S", .value = "0", .range = "[0,)", .zero = "turns it off",
     .topic = "Checkpoints and resume", .help = "also checkpoint when this much time has passed"},
    {JOB, "keep", "K", .value = "3", .range = "[0,)", .zero = "keeps all", .topic = "Checkpoints and resume",
     .help = "checkpoints kept, the oldest deleted first"},
    {JOB, "overwrite", .topic = "Checkpoints and resume",
     .help = "OUT holds another run: remove its files (only lorad's) and start again"},
    {JOB, "threads", "N", .value = "0", .range = "[0,)", .zero = CORES, .topic = "Performance",
     .help = "threads per rank"},
    {JOB, "base_dtype", .topic = "Performance",
     .help = "frozen product weights: f32; bf16 on oneDNN's bf16 matmul with f32 accumulation; int8 (absmax per "
             "block of 64) or nf4 (QLoRA's NormalFloat4, blocks of 64), quantized at load and dequantized in tiles "
             "inside the product (LoRA only)"},
    {JOB, "recompute", .topic = "Performance",
     .help = "keep only each layer's input and recompute the layer in the backward: less activation memory, the "
             "same bits"},
    {JOB, "gemm", .topic = "Performance", .help = "the library of the f32 products"},
    {JOB, "replica_check_every", "N", .value = "100", .range = "[0,)", .zero = "checks only at the end",
     .topic = "Performance", .help = "steps between checksums that the ranks' adapters agree"},
    TEXT_DATA_ROWS(JOB),

    /* lorad prep */
    {PREP, "model", "DIR", .topic = "Tokenizer", .help = "the model directory whose tokenizer and EOS to use"},
    {PREP, "tokenizer", "DIR", .topic = "Tokenizer",
     .help = "a directory with tokenizer.json (or vocab.json + merges.txt) instead of --model"},
    {PREP, "data", "FILE,...", .topic = "Input and output",
     .help = ".txt documents or .jsonl examples (text, prompt/completion, Alpaca, chat messages), in this order"},
    {PREP, "text", "FILE", .topic = "Input and output",
     .help = "instead of --data and a tokenizer: one byte-level token per byte of FILE (0..255)"},
    {PREP, "out", "FILE.h5", .required = 1, .topic = "Input and output", .help = "the HDF5 token dataset to write"},
    {PREP, "val_split", "F", .value = "0", .range = "[0,1)", .zero = "keeps every example in OUT",
     .topic = "Input and output", .help = "send this fraction of the examples, evenly spread, to --val-out"},
    {PREP, "val_out", "FILE.h5", .topic = "Input and output", .help = "the validation dataset of --val-split"},
    {PREP, "overwrite", .topic = "Input and output", .help = "replace an existing OUT (and --val-out)"},
    {PREP, "skip_bad", .topic = "Input and output",
     .help = "count and skip malformed lines instead of stopping at the first"},
    {PREP, "format", .topic = "Examples", .help = FORMAT_HELP},
    {PREP, "split", .topic = "Examples", .help = SPLIT_HELP},
    {PREP, "train_on", .topic = "Examples", .help = TRAIN_ON_HELP},
    {PREP, "add_eos", .value = "on", .topic = "Examples", .help = ADD_EOS_HELP},
    {PREP, "max_len", "N", .value = "0", .range = "[0,)", .zero = "keeps every token", .topic = "Examples",
     .help = MAX_LEN_HELP},
    {PREP, "template", "NAME", .topic = "Examples", .help = CHAT_TEMPLATE_HELP},
    {PREP, "threads", "N", .value = "0", .range = "[0,)", .zero = "uses every core", .topic = "Performance",
     .help = "tokenizing threads, at most one per 256 examples; the output is the same for any number"},

    /* lorad tokenize */
    {TOKENIZE, "model", "DIR", .topic = "Tokenizer", .help = "the model directory whose tokenizer to use"},
    {TOKENIZE, "tokenizer", "DIR", .topic = "Tokenizer",
     .help = "a directory with tokenizer.json (or vocab.json + merges.txt) instead of --model"},
    {TOKENIZE, "text", "TEXT", .topic = "Input", .help = "the text to encode"},
    {TOKENIZE, "file", "FILE", .topic = "Input", .help = "encode this file's text, as one input"},
    {TOKENIZE, "jsonl", "FILE", .topic = "Input", .help = "encode each line of FILE, a JSON string; each output line a JSON array of ids"},
    {TOKENIZE, "add_special", .value = "on", .topic = "Output",
     .help = "add the special tokens of the tokenizer's post-processor, as Hugging Face's encode does"},
    {TOKENIZE, "json", .topic = "Output", .help = "print {\"ids\", \"tokens\", \"decoded\"} per input instead of ids"},

    /* lorad template */
    {TEMPLATE, "model", "DIR", .required = 1, .topic = "Input",
     .help = "the model directory: tokenizer_config.json (or chat_template.jinja) holds the chat template"},
    {TEMPLATE, "messages", "FILE.json", .required = 1, .topic = "Input",
     .help = "a JSON list of {\"role\", \"content\"} messages to render"},
    {TEMPLATE, "generation_prompt", .topic = "Input",
     .help = "end with the prompt of the assistant's turn (add_generation_prompt)"},
    {TEMPLATE, "template", "NAME", .topic = "Input",
     .help = "which of the model's named chat templates to render; none: \"default\""},
    {TEMPLATE, "json", .topic = "Output",
     .help = "print {\"text\", \"generation\": [[start, end], ...]} (the byte spans {% generation %} produced), "
             "and with a tokenizer in DIR the special tokens' ids and \"stop_ids\""},

    /* lorad init-model */
    {INIT_MODEL, "out", "DIR", .required = 1, .topic = "Model", .help = "the model directory to write"},
    {INIT_MODEL, "layers", "N", .value = "4", .range = "[1,256]", .topic = "Model", .help = "transformer blocks (n_layer)"},
    {INIT_MODEL, "dim", "N", .value = "128", .range = "[1,16384]", .topic = "Model",
     .help = "width (n_embd), a multiple of --heads"},
    {INIT_MODEL, "heads", "N", .value = "4", .range = "[1,256]", .topic = "Model", .help = "attention heads (n_head)"},
    {INIT_MODEL, "vocab", "N", .value = "256", .range = "[1,1048576]", .topic = "Model",
     .help = "vocabulary size; 256 is a byte-level model, written with its tokenizer files (lorad init-tokenizer)"},
    {INIT_MODEL, "positions", "N", .value = "256", .range = "[1,65536]", .topic = "Model",
     .help = "context length (n_positions)"},
    {INIT_MODEL, "seed", "S", .value = "42", .topic = "Model", .help = "seeds GPT-2's random init"},

    /* lorad init-tokenizer */
    {INIT_TOKENIZER, "model", "DIR", .required = 1, .topic = "Model",
     .help = "the byte-level model (config.json vocab_size 256) to write tokenizer.json and tokenizer_config.json for"},
    {INIT_TOKENIZER, "overwrite", .topic = "Model", .help = "replace the tokenizer files DIR holds"},

    /* lorad inspect and lorad export */
    {CKPT, "checkpoint", "CKPT", .required = 1, .topic = "Checkpoint",
     .help = "the checkpoint file (also the first argument)"},
    {CKPT, "out", "DIR", .required = 1, .commands = "export", .topic = "Checkpoint",
     .help = "the directory to write the adapter (or, --mode full, the model) to"},
    {CKPT, "overwrite", .commands = "export", .topic = "Checkpoint", .help = "replace the adapter or model OUT holds"},

    /* lorad eval */
    {EVAL, "model", "DIR", .required = 1, .topic = "Model and data", .help = "the Hugging Face model directory"},
    {EVAL, "adapter", "DIR,...", .repeat = 1, .topic = "Model and data",
     .help = "a PEFT adapter to merge into a copy of the weights; several (repeat the flag) each get their loss "
             "from one pass, unmerged"},
    {EVAL, "data", "FILE", .required = 1, .topic = "Model and data",
     .help = "the token dataset, or .jsonl/.txt prepared in this process first"},
    {EVAL, "batch", "B", .value = "8", .range = "[1,)", .topic = "Model and data", .help = "sequences per forward"},
    {EVAL, "seq", "T", .value = "0", .range = "[0,)", .zero = SEQ_ZERO, .topic = "Model and data",
     .help = "tokens per sample"},
    PACKING_ROWS(EVAL, FLAG_RESUME_FREE),
    {EVAL, "max_batches", "N", .value = "0", .range = "[0,)", .zero = "takes the whole dataset",
     .topic = "Model and data", .help = "batches evaluated"},
    {EVAL, "threads", "N", .value = "0", .range = "[0,)", .zero = CORES, .topic = "Output",
     .help = "threads per rank"},
    {EVAL, "json", .topic = "Output", .help = "print one JSON object"},
    {EVAL, "logits", "FILE", .topic = "Output",
     .help = "also write the evaluated samples' logits, float32 (N,T,V) (one process)"},
    TEXT_DATA_ROWS(EVAL),

    /* lorad merge */
    {MERGE, "model", "DIR", .required = 1, .topic = "Merge", .help = "the base model directory"},
    {MERGE, "adapter", "DIR", .required = 1, .topic = "Merge", .help = "the PEFT adapter to merge"},
    {MERGE, "out", "DIR", .required = 1, .topic = "Merge", .help = "the merged model directory to write"},
    {MERGE, "dtype", .topic = "Merge", .help = "the merged weights' dtype"},
    {MERGE, "max_shard_mb", "MIB", .value = "5000", .range = "(0,)", .topic = "Merge",
     .help = "shard the weights above this size, with an index (Hugging Face's 5GB)"},
    {MERGE, "overwrite", .topic = "Merge", .help = "replace the merged model OUT holds"},

    /* lorad generate */
    {GENERATE, "model", "DIR", .required = 1, .topic = "Generation", .help = "the model directory"},
    {GENERATE, "adapter", "DIR", .repeat = 1, .topic = "Generation",
     .help = "a PEFT adapter to merge into a copy of the weights; with --prompts, NAME=DIR (repeat the flag), "
             "each unmerged, for the lines that name it"},
    {GENERATE, "prompt", "TEXT", .topic = "Generation",
     .help = "the prompt: encoded by the model's tokenizer, with its special tokens (a byte-level model: its bytes)"},
    {GENERATE, "prompts", "FILE.jsonl", .topic = "Generation",
     .help = "instead of --prompt: lines of {\"prompt\": TEXT, \"adapter\": NAME or null}, decoded together; "
             "one JSON line out for each"},
    {GENERATE, "batch", "N", .value = "8", .range = "[1,)", .topic = "Generation",
     .help = "with --prompts, the prompts decoded at once (the next takes the place of one that ends)"},
    {GENERATE, "chat", .topic = "Generation",
     .help = "send --prompt as a user's message through the chat template, with the assistant's turn prompt"},
    {GENERATE, "template", "NAME", .topic = "Generation",
     .help = "with --chat, which of the model's named chat templates; none: \"default\""},
    {GENERATE, "stop", "TEXT,...", .topic = "Generation",
     .help = "also end when the text holds one of these; the text ends before it (as vLLM's stop)"},
    {GENERATE, "max_new", "N", .value = "200", .range = "[0,)", .topic = "Generation",
     .help = "new tokens at most (the model's context ends it sooner)"},
    {GENERATE, "temperature", "X", .value = "0.8", .range = "[0,)", .zero = "is greedy", .topic = "Generation",
     .help = "sampling temperature"},
    {GENERATE, "top_k", "K", .value = "40", .range = "[0,)", .zero = "keeps every token", .topic = "Generation",
     .help = "sample from the K most likely tokens"},
    {GENERATE, "seed", "S", .value = "42", .topic = "Generation", .help = "the sampler's seed (a seed reproduces its text)"},
    {GENERATE, "ids", .topic = "Generation", .help = "print token ids instead of text (the EOS that ends it too)"},
    {GENERATE, "threads", "N", .value = "0", .range = "[0,)", .zero = CORES, .topic = "Generation",
     .help = "threads"},

    /* lorad analyze */
    {ANALYZE, "adapter", "DIR", .required = 1, .topic = "Analysis", .help = "the PEFT adapter to analyze"},
    {ANALYZE, "against", "DIR", .topic = "Analysis",
     .help = "a second adapter of the same modules: the subspace similarity of their A and B factors"},
    {ANALYZE, "model", "DIR", .topic = "Analysis",
     .help = "the base model: how each update relates to its weight W (the paper's amplification)"},
    {ANALYZE, "seed", "S", .value = "42", .topic = "Analysis", .help = "seeds the random directions W is projected on"},
    {ANALYZE, "out", "DIR", .topic = "Output", .help = "write analysis.json and the plots (PNG) here"},
    {ANALYZE, "json", .topic = "Output", .help = "print the analysis as JSON instead of tables"},
    {ANALYZE, "plots", .value = "on", .topic = "Output",
     .help = "with --out, draw the spectra and the similarity heatmaps with gnuplot"},
    {ANALYZE, "overwrite", .topic = "Output", .help = "replace the analysis OUT holds"},

    /* lorad serve */
    {SERVE, "state", "DIR", .required = 1, .topic = "Daemon", .help = "the daemon's directory of job records and outputs"},
    {SERVE, "socket", "PATH", .topic = "Daemon", .help = "the control socket; none: STATE/lorad.sock"},
    {SERVE, "listen", "HOST:PORT", .topic = "Daemon", .help = "also accept TCP clients here (needs --token-file)"},
    {SERVE, "token_file", "FILE", .topic = "Daemon", .help = "the token TCP clients must send"},

    /* the client commands: submit, status, list, cancel, logs, shutdown */
    {CLIENT, "socket", "PATH", .topic = "Daemon", .help = "the daemon's Unix socket; none: $LORAD_SOCKET"},
    {CLIENT, "connect", "HOST:PORT", .topic = "Daemon", .help = "a daemon's TCP listener instead (needs --token-file)"},
    {CLIENT, "token_file", "FILE", .topic = "Daemon", .help = "the file holding the daemon's token, for --connect"},
    {CLIENT, "job", "JOB", .commands = "status cancel logs", .topic = "Daemon",
     .help = "the job (also the first argument)"},
    {CLIENT, "json", .topic = "Daemon", .help = "machine-readable output (logs: the metrics rows)"},
    {CLIENT, "follow", .commands = "logs", .topic = "Daemon", .help = "keep streaming until the job ends"},
    {CLIENT, "now", .commands = "shutdown", .topic = "Daemon",
     .help = "stop the running job at its next step (checkpointed; it resumes at the next start)"},
};

const size_t flag_count = sizeof flag_rows / sizeof flag_rows[0];
