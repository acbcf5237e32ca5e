#!/usr/bin/env python3
"""make_tokenizer_corpus.py: writes tokenizer_corpus.jsonl, the hostile texts of
tests/tokenizer.py (issue #14): one JSON object a line, {"name": ..., "text": ...}.

Each text aims at a place where a tokenizer can go wrong: runs of spaces, tabs and
newlines (GPT-2's \\s+(?!\\S)), contractions (the patterns' 's|'t|... and Llama 3's
case-insensitive group), long digit runs (\\p{N}{1,3} against \\p{N}+), code, URLs,
emoji with ZWJ sequences and skin tones (multi-code-point clusters, byte fallback),
CJK, Korean, Arabic, Devanagari with combining marks, Thai (scripts without spaces,
marks that are not letters), NFD accents (NFC in Qwen2's normalizer), U+FFFD, zero-width
characters, control characters, special-token strings inside text (the added-token
split), a long paragraph, words longer than the encoder's cache, and the empty string.
Deterministic: the same file on every run (no randomness). Run it after changing a text:

    /usr/bin/python3 tests/data/make_tokenizer_corpus.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

PARAGRAPH = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way -- in short, the period was so far like the present period, that some of its "
    "noisiest authorities insisted on its being received, for good or for evil, in the superlative degree "
    "of comparison only. There were a king with a large jaw and a queen with a plain face, on the throne "
    "of England; there were a king with a large jaw and a queen with a fair face, on the throne of France. "
    "In both countries it was clearer than crystal to the lords of the State preserves of loaves and "
    "fishes, that things in general were settled for ever.\n\n"
    "It was the year of Our Lord one thousand seven hundred and seventy-five (1775). Spiritual revelations "
    "were conceded to England at that favoured period, as at this. Mrs. Southcott had recently attained "
    "her five-and-twentieth blessed birthday, of whom a prophetic private in the Life Guards had heralded "
    "the sublime appearance by announcing that arrangements were made for the swallowing up of London "
    "and Westminster. Even the Cock-lane ghost had been laid only a round dozen of years, after rapping "
    "out its messages, as the spirits of this very year last past (supernaturally deficient in "
    "originality) rapped out theirs.\n"
)

CODE_PY = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
\tprint({k: fib(k) for k in range(10)})  # tab-indented on purpose
'''

CODE_C = '''#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("%d: %s\\n", i, argv[i]);
    return argc > 1 && argv[1][0] == '-' ? 2 : 0; /* x->y, a<<=3, b>>=1, c!=d, e&&f||g */
}
'''

TEXTS = [
    ("empty", ""),
    ("one_space", " "),
    ("spaces_run", "          "),
    ("spaces_between", "a  b   c    d     e      f"),
    ("spaces_leading_trailing", "   leading and trailing   "),
    ("tab", "\t"),
    ("tabs", "\tone\t\ttwo\t\t\tthree \t four\t "),
    ("newline", "\n"),
    ("newlines", "line one\nline two\r\nline three\n\n\nafter three\r\r\n  \n \t\n"),
    ("whitespace_unicode", "nbsp\u00a0here, ideographic\u3000space, en\u2002em\u2003thin\u2009, line\u2028para\u2029next"),
    ("contractions", "I'm sure you're right: we've seen it, they'd say, she'll go, it's his, don't, can't, won't."),
    ("contractions_upper", "I'M SURE YOU'RE RIGHT: WE'VE SEEN IT, THEY'D SAY, SHE'LL GO, IT'S HIS, DON'T."),
    ("contractions_odd", "don\u2019t rock 'n' roll ''quoted'' 'tis o'clock 's 't 're x'y '"),
    ("digits_long", "1234567890123456789012345678901234567890"),
    ("digits_mixed", "3.14159 2,000,000 1e-10 0x1F 007 12:30:45 2024-02-29 v1.2.3 #42 -17 +3"),
    ("digits_unicode", "\u0661\u0662\u0663 \u0967\u0968\u0969 \u00b2\u00b3 \u00bd \u216b \uff11\uff12\uff13"),
    ("code_python", CODE_PY),
    ("code_c", CODE_C),
    ("code_json_shell", '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}\n$ ls -la | grep "x" && echo $((1+2)) > /dev/null 2>&1'),
    ("urls", "See https://example.com/path/to/page?q=1&r=two#frag or http://[::1]:8080/ and mailto:someone@example.org."),
    ("emoji", "thumbs \U0001F44D\U0001F3FD family \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 "
              "flag \U0001F3F3\ufe0f\u200d\U0001F308 heart \u2764\ufe0f japan \U0001F1EF\U0001F1F5 \U0001F917\U0001F917"),
    ("emoji_only", "\U0001F600\U0001F603\U0001F604\U0001F601\U0001F606\U0001F605\U0001F923\U0001F602"),
    ("cjk_japanese", "日本語のテキストと漢字、ひらがな、カタカナ。東京は晴れです。"),
    ("cjk_chinese", "中文文本，包括标点符号：“引号”和（括号）。繁體中文也在這裡。"),
    ("korean", "안녕하세요, 세계! 한국어 문장입니다. 조합형: \u1100\u1161\u11a8"),
    ("arabic", "مرحبا بالعالم. السَّلَامُ عَلَيْكُمْ وَرَحْمَةُ اللهِ ١٢٣"),
    ("devanagari", "नमस्ते दुनिया। क्षत्रिय, ज्ञान, श्री, हिंदी में लिखा गया।"),
    ("thai", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ"),
    ("nfd_accents", "Cafe\u0301 re\u0301sume\u0301 nai\u0308ve A\u030angstro\u0308m n\u0303 e\u0301te\u0301"),
    ("nfc_accents", "Café résumé naïve Ångström ñ été Ǆ ǅ ǆ ß ẞ İstanbul"),
    ("compat_forms", "ﬁne ﬂow ｆｕｌｌｗｉｄｔｈ ＡＢＣ ㎞ ℌ ① ™ …"),
    ("replacement_char", "bad \ufffd char \ufffd\ufffd end\ufffd"),
    ("zero_width", "zero\u200bwidth non\u200cjoiner joi\u200dner word\u2060joiner \ufeffbom soft\u00adhyphen"),
    ("controls", "nul\u0000in text, bell\u0007, escape\u001b[31m, del\u007f, \u0085next line"),
    ("rare_chars", "\U0001D518\U0001D52B\U0001D526\U0001D520\U0001D52C\U0001D521\U0001D522 \U00013000 \ue000 \U0010fffd \u0378"),
    ("special_gpt2", "before<|endoftext|>after <|endoftext|> spaced<|endoftext|><|endoftext|>"),
    ("special_llama2", "<s>start</s> <unk> middle<s> </s>end"),
    ("special_llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"),
    ("special_qwen", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|><|endoftext|>"),
    ("special_gemma", "<bos><start_of_turn>user\nhi<end_of_turn>\n<eos>"),
    ("special_partial", "<|endoftext| <|endoftext <s < s> </ s> <|im_start <<s>> <|begin_of_text|"),
    ("special_leading", " <s> spaced </s> "),
    ("paragraph", PARAGRAPH),
    ("long_word", "a" * 300 + " " + "supercalifragilisticexpialidocious" * 8),
    ("long_digits", "9876543210" * 30),
    ("long_whitespace", " " * 200 + "\n" * 50 + "\t" * 30 + "x"),
    ("long_unique", "".join(chr(0x4E00 + (i * 37) % 2000) for i in range(400))),
    ("mixed_scripts", "English, Ελληνικά, Русский, עברית, ქართული, Հայերեն, 日本, 한국, ไทย, हिन्दी, العربية."),
]


def main():
    names = [n for n, _ in TEXTS]
    assert len(names) == len(set(names)), "two texts share a name"
    path = os.path.join(HERE, "tokenizer_corpus.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for name, text in TEXTS:
            f.write(json.dumps({"name": name, "text": text}, ensure_ascii=False) + "\n")
    print(f"wrote {path}: {len(TEXTS)} texts")


if __name__ == "__main__":
    main()
