#!/usr/bin/env python3
"""A hostile UTF-8 text for the tokenizer comparison (deterministic: seeded).

usage: hostile_text.py OUT [TOKENIZER_DIR ...] [--jsonl OUT.jsonl --jsonl-text FILE]

OUT holds: emoji with ZWJ and skin tones, flags, CJK, kana, Hangul syllables and
conjoining jamo, combining marks (and a Zalgo run), Arabic and Hebrew with their marks and
bidi controls, zero-width and control characters (C0 incl. NUL, DEL, C1), NBSP and every
other Unicode space (U+0085, U+1680, U+180E, U+2000-U+200A, U+2028/9, U+202F, U+205F,
U+3000, U+FEFF), a run of 10,000 spaces and one of 10,000 digits, contractions with
typographic and ASCII apostrophes in both cases ('S 'LL ’RE), case-mapping oddities
(İ ı ß ẞ final sigma ǅ), compatibility forms (ligatures, fullwidth, superscripts, Roman
numerals), CRLF / CR / LF runs, and every added token of the given tokenizers glued to
letters, between spaces, doubled, at line starts and ends; then a seeded random
mix of all of that and of code points from many blocks (noncharacters and
private use included). The text ends on an added token.
--jsonl: also a JSON Lines file of documents (field "text", with another field before
it), ASCII-escaped so that \\uXXXX and surrogate pairs appear, with empty strings and
blank lines among them, from the lines of --jsonl-text and pieces of the hostile text.
"""
import json
import os
import random
import sys

SPACES = ["\u0020", "\u00a0", "\u0085", "\u1680", "\u180e"] + [chr(c) for c in range(0x2000, 0x200b)] + \
         ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff", "\t", "\x0b", "\x0c", "\r", "\n"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c",
              "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u00ad", "\u034f", "\u061c"]
CONTROLS = [chr(c) for c in range(0, 0x20) if chr(c) not in "\n"] + ["\x7f"] + [chr(c) for c in range(0x80, 0xa0)]
EMOJI = ["👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "👍🏿", "👍🏻", "🧑🏾‍🤝‍🧑🏼", "🇫🇷", "🇯🇵", "❤️", "☺︎", "🫠", "😀",
         "👁️‍🗨️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "#️⃣", "1️⃣", "🤷‍♀️", "🙋🏽‍♂️"]
SCRIPTS = [
    "中文字符和标点：“你好”，世界！", "日本語のひらがなとカタカナ、漢字。ｶﾀｶﾅ", "한국어 문장입니다. 안녕하세요!",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af \u3131\u314f",  # conjoining and compatibility jamo
    "e\u0301 a\u0308\u0323 n\u0303 Å Å \u0041\u030a o\u0338 q\u0307\u0323",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u0334\u0335"
    "\u031c\u0330\u0354\u036bL\u0328\u0337\u0334\u0327G\u0336\u0337O\u0489",
    "العربية: مَرْحَبًا بِالعَالَم ١٢٣٤ ٫ ؟", "עברית: שָׁלוֹם עוֹלָם 123",
    "\u202eevil\u202c \u2067rtl\u2069 \u200fmark\u200e", "ελληνικά ΟΔΟΣ ΣΑΣ ὈΔΥΣΣΕΎΣ", "кириллица Ёжик",
    "हिन्दी देवनागरी क्षत्रिय", "ไทย ภาษาไทย", "ქართული", "Ꭰ Ꮳ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕿𝖊𝖝𝖙 𝟘𝟙𝟚",
    "İstanbul ıi ß ẞ STRASSE ǅ ǈ ǋ ŉ ﬁx ﬀ ﬃ ﬆ Ａｂｃ１２３ ² ³ ½ ⅓ Ⅻ ⅻ ① ㍻ ㎏ ™ ℃ K Å",
    "\ufffd \ufffe \uffff \U0010ffff \ue000 \U000f0000 \u0378 \U000e0001",
]
CONTRACTIONS = ["don't", "don’t", "it's", "it’s", "IT'S", "IT’S", "WE'LL", "WE’LL", "'S 'LL 'RE 'VE 'M 'D 'T",
                "’S ’LL ’RE ’VE ’M ’D ’T", "'s'll're've'm'd't", "I’m", "‘quoted’", "he'd", "o'clock",
                "rock 'n' roll", "''", "'''", "’’’", " 's", "x'S", "ʼn", "Mary's ’s"]
NUMBERS = ["1,234.56", "3.14159", "-42", "1e10", "0x1F", "2024-12-04", "10:45", "$9.99", "99%",
           "١٢٣", "１２３", "٣.١٤", "12345678901234567890", "1 2 3", "v1.2.3-rc4"]
BLOCKS = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff),
          (0x600, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x1e00, 0x1fff),
          (0x2000, 0x206f), (0x20a0, 0x20cf), (0x2100, 0x214f), (0x2190, 0x21ff), (0x2460, 0x24ff),
          (0x3000, 0x30ff), (0x4e00, 0x4fff), (0xac00, 0xae00), (0xfb00, 0xfb4f), (0xfe00, 0xfe0f),
          (0xff00, 0xffef), (0x1f300, 0x1f6ff), (0x1f900, 0x1f9ff), (0x1d400, 0x1d7ff), (0x10000, 0x1007f),
          (0xe0000, 0xe007f), (0xf0000, 0xf00ff)]


def added_tokens(dirs):
    lists = []
    for d in dirs:
        try:
            j = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
        except (OSError, ValueError):
            continue
        lists.append([a["content"] for a in j.get("added_tokens", [])])
    out = [t for lst in sorted(lists, key=len) for t in lst]  # the small vocabularies' first
    seen, uniq = set(), []
    for t in out:
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


def build(dirs, rng):
    parts = []
    parts.append("Plain start. The quick brown fox jumps over the lazy dog; Once upon a time, Tom and Lily...\n")
    parts.append(" leading space line\n  two leading spaces\n\ttab lead\n")
    parts.append(" ".join(EMOJI) + "\n" + "".join(EMOJI) + "\n")
    parts.append("\n".join(SCRIPTS) + "\n")
    parts.append("spaces:" + "".join("a%sb" % s for s in SPACES) + "\n")
    parts.append("space runs:" + "".join("x" + s * 3 + "y" for s in SPACES) + "\n")
    parts.append("zero width:" + "".join("c%sd" % z for z in ZERO_WIDTH) + "\n")
    parts.append("controls:" + "".join("e%sf" % c for c in CONTROLS) + "\n")
    parts.append(" ".join(CONTRACTIONS) + "\n" + "".join(CONTRACTIONS) + "\n")
    parts.append(" ".join(NUMBERS) + "\n" + "".join(NUMBERS) + "\n")
    parts.append("crlf\r\nlone cr\rthree lf\n\n\nmixed \r\n\r\n \n \r \n")
    parts.append("ten thousand spaces:" + " " * 10000 + "end\n")
    parts.append("ten thousand digits:" + "".join(str(rng.randrange(10)) for _ in range(10000)) + "\n")
    parts.append(" " * 10000 + "\n")
    parts.append("a" * 3000 + " " + "ab" * 1500 + "\n")
    parts.append("\u2581 \u2581\u2581x ▁lower one eighth block, Ġ Ċ (byte-level look-alikes) <0x41> <unk> [UNK]\n")
    toks = added_tokens(dirs)
    for k, t in enumerate(toks):
        if k < 400:  # all of the small tokenizers', and Gemma's first (its other 6,000 more briefly)
            parts.append("abc%sdef %s %s%s x%s\n%s" % (t, t, t, t, t, t))
            parts.append("  %s  Hello%sWorld\t%s\u00a0" % (t, t, t))
        else:
            parts.append("q%sr %s " % (t, t))
    # case and normalization forms of added tokens (normalized=true matching)
    for t in toks[:200]:
        parts.append(" %s %s %s" % (t.upper(), t.lower(), t.title()))
    parts.append("\nHELLO hello Hello WORD word sword words ÉCOLE école ﬁx fix FIX Once Upon once upon Tom tom Tommy\n")
    # the seeded mix
    pool = EMOJI + SCRIPTS + CONTRACTIONS + NUMBERS + SPACES + ZERO_WIDTH + CONTROLS + toks[:500] + \
        ["the", "The", " ", "  ", "\n", "Lily", "’", "'"]
    for _ in range(4000):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(pool))
        elif r < 0.8:
            lo, hi = rng.choice(BLOCKS)
            parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
        else:
            parts.append(rng.choice([" ", "", "\n", "x", "é"]))
    text = "".join(parts)
    # no surrogates (not UTF-8 encodable) can be in it; end on an added token (or a mark)
    return text + "\nlast line " + (toks[0] if toks else "\u0301")


def jsonl(text_file, hostile, rng):
    lines = open(text_file, encoding="utf-8").read().split("\n")
    rows = []
    for i, l in enumerate(lines[:400]):
        rows.append(json.dumps({"id": i, "text": l}, ensure_ascii=bool(i % 2)))
    for k in range(60):
        a = rng.randrange(len(hostile))
        rows.append(json.dumps({"meta": {"k": [k, "x"]}, "text": hostile[a:a + rng.randint(0, 400)]},
                               ensure_ascii=True))
    rows.insert(3, "")
    rows.insert(7, "   ")
    rows.insert(11, json.dumps({"text": ""}))
    rows.insert(12, json.dumps({"text": "controls inside: before\u0001after \u001f"}))
    rows.insert(13, json.dumps({"text": "tab\tand \"quotes\" \\ slash \\/ \b\f \u00e9 \ud83d\ude00"}))
    return "\n".join(rows) + "\n"


def main():
    args = sys.argv[1:]
    jl = jt = None
    if "--jsonl" in args:
        i = args.index("--jsonl")
        jl = args[i + 1]
        del args[i:i + 2]
    if "--jsonl-text" in args:
        i = args.index("--jsonl-text")
        jt = args[i + 1]
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    out, dirs = args[0], args[1:]
    rng = random.Random(20261204)
    text = build(dirs, rng)
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print("%s: %d characters, %d bytes, %d added tokens" % (out, len(text), len(text.encode()),
                                                           len(added_tokens(dirs))))
    if jl:
        with open(jl, "w", encoding="utf-8", newline="") as f:
            f.write(jsonl(jt, text, random.Random(7)))


if __name__ == "__main__":
    main()
