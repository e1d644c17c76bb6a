#!/usr/bin/env bash
# Text in, as a user runs it on the bundled model: fptq tokenize writes what
# fptq eval --text and quantize --calib-text use (same ids, same perplexity,
# same checkpoint digest as the .npy route); the provenance of a text
# calibration; --resume refusing another tokenizer, BOS policy, separator or
# text; and bad input, each with its message (file, byte offset, counts).
# Equality with Hugging Face tokenizers is tests/tokenizer/run.sh's.
# usage: cli_text.sh FPTQ_BIN EXAMPLES_DIR
set -u
fptq=$1
ex=$2
. "$(dirname "$0")/testlib.sh"
export OPENBLAS_NUM_THREADS=1

S="$ex/stories260K"
txt="$ex/tinystories.txt"

# --- tokenize: the bundled token file is tinystories.txt, a BOS per line ---------
"$fptq" tokenize --model "$S" --text "$txt" --doc-sep '\n' --bos yes --out "$tmp/lines.npy" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "tokenize exits 0" $rc "$(cat "$tmp/out" "$tmp/err")"
grep -q "^tokenize: $txt: 197290 bytes, 1273 documents, 98863 tokens, .* tokens/s" "$tmp/out"
check "tokenize summary line (bytes, documents, tokens, tokens/s)" $? "$(cat "$tmp/out")"
# The bundled token file was made by another encoder: it differs from
# SentencePiece's own encode (and tokenizers', and fptq's) in one place, a
# line that starts with a space, where it has two "▁" (id 410) instead of
# one. Everything else must be the same ids.
python3 - "$tmp/lines.npy" "$ex/tinystories.tok512.npy" <<'PY'
import array, sys
def ids(p):
    a = array.array("i")
    with open(p, "rb") as f:
        f.seek(128)  # both headers are 128 bytes (format 1.0)
        a.frombytes(f.read())
    return a.tolist()
got, bundled = ids(sys.argv[1]), ids(sys.argv[2])
assert len(bundled) == len(got) + 1, (len(got), len(bundled))
i = next(i for i in range(len(got)) if got[i] != bundled[i])
assert bundled[i - 1:i + 1] == [410, 410] and got[i - 1] == 410, (i, got[i - 3:i + 3], bundled[i - 3:i + 4])
assert got[i:] == bundled[i + 1:] and got[:i] == bundled[:i], i
print(f"identical but for the second 410 at {i}")
PY
check "tokenize --doc-sep '\\n' --bos yes == examples/tinystories.tok512.npy but for its one extra \"▁\" (line 330)" $? \
    "$(ls -l "$tmp/lines.npy" "$ex/tinystories.tok512.npy")"
"$fptq" tokenize --model "$S" --text "$txt" --doc-sep '\n' --bos yes --out "$tmp/lines.json.npy" --json >"$tmp/json" 2>/dev/null
python3 - "$tmp/json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["tokens"] == 98863 and o["bytes"] == 197290 and o["bos"] == "yes", o
assert len(o["tokenizer_sha256"]) == 64 and len(o["text_sha256"]) == 64, o
PY
check "tokenize --json" $? "$(cat "$tmp/json")"

# --- eval --text == eval --tokens on what tokenize wrote ----------------------------
ev=(--seqlen 256 --windows 4 --start 40960 --quiet)
a=$("$fptq" eval --model "$S" --text "$txt" --doc-sep '\n' --bos yes "${ev[@]}" 2>&1)
b=$("$fptq" eval --model "$S" --tokens "$tmp/lines.npy" "${ev[@]}" 2>&1)
[ -n "$a" ] && [ "$a" = "$b" ]
check "eval --text == eval --tokens of fptq tokenize's ids" $? "text: $a / tokens: $b"
# the whole file as one document (auto: this tokenizer adds no BOS)
"$fptq" tokenize --model "$S" --text "$txt" --out "$tmp/one.npy" --quiet >/dev/null 2>&1
a=$("$fptq" eval --model "$S" --text "$txt" "${ev[@]}" 2>&1)
b=$("$fptq" eval --model "$S" --tokens "$tmp/one.npy" "${ev[@]}" 2>&1)
[ -n "$a" ] && [ "$a" = "$b" ]
check "eval --text (one document) == eval --tokens" $? "text: $a / tokens: $b"
# JSON Lines: one document per line, as --doc-sep '\n'
python3 - "$txt" "$tmp/docs.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8", newline="") as f, open(sys.argv[2], "w", encoding="utf-8") as o:
    for line in f.read().split("\n"):
        o.write(json.dumps({"id": 1, "text": line}) + "\n")
PY
"$fptq" tokenize --model "$S" --jsonl "$tmp/docs.jsonl" --field text --bos yes --out "$tmp/jl.npy" --quiet >/dev/null 2>&1
cmp -s "$tmp/jl.npy" "$tmp/lines.npy"
check "--jsonl --field text == --text --doc-sep '\\n'" $? "$(ls -l "$tmp/jl.npy" "$tmp/lines.npy")"

# --- quantize --calib-text == quantize --calib of the same ids ------------------------
q=(--model "$S" --calib-samples 32 --calib-seqlen 256 --scheme w4a16 --method gptq --group-size 0 --quiet)
"$fptq" quantize "${q[@]}" --calib-text "$txt" --doc-sep '\n' --bos yes --out "$tmp/ct" >"$tmp/ct.log" 2>&1
check "quantize --calib-text" $? "$(tail -3 "$tmp/ct.log")"
"$fptq" quantize "${q[@]}" --calib "$tmp/lines.npy" --out "$tmp/cn" >"$tmp/cn.log" 2>&1
d1=$(sed -n 's/.*digest \([0-9a-f]*\)$/\1/p' "$tmp/ct.log")
d2=$(sed -n 's/.*digest \([0-9a-f]*\)$/\1/p' "$tmp/cn.log")
[ -n "$d1" ] && [ "$d1" = "$d2" ]
check "quantize --calib-text gives the digest of --calib on fptq tokenize's ids" $? "text $d1 / npy $d2"
"$fptq" inspect "$tmp/ct" --json >"$tmp/inspect.json" 2>&1
python3 - "$tmp/inspect.json" "$txt" "$S/tokenizer.json" <<'PY'
import hashlib, json, sys
o = json.load(open(sys.argv[1]))
p = o["provenance"] if "provenance" in o else o
if isinstance(p, str):
    p = json.loads(p)
sha = lambda f: hashlib.sha256(open(f, "rb").read()).hexdigest()
assert p["calib_format"] == "text", p
assert p["calib_sha256"] == sha(sys.argv[2]), p
assert p["tokenizer_sha256"] == sha(sys.argv[3]), p
assert p["calib_bos"] == "yes" and p["calib_doc_sep"] == "\n", p
PY
check "provenance: text and tokenizer.json sha256, BOS policy, separator" $? "$(head -c 800 "$tmp/inspect.json")"
"$fptq" eval --checkpoint "$tmp/ct" --text "$txt" --doc-sep '\n' --bos yes "${ev[@]}" >"$tmp/e1" 2>&1
check "eval --checkpoint --text (the tokenizer of the checkpoint's model directory)" $? "$(cat "$tmp/e1")"

# --- --resume refuses another tokenization of the calibration -------------------------
refuse_resume() { # name pattern args...
    local name=$1 pat=$2
    shift 2
    "$fptq" quantize "${q[@]}" "$@" --out "$tmp/ct" --resume >"$tmp/r.log" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && grep -q -- "$pat" "$tmp/r.log"
    check "--resume refuses $name" $? "rc=$rc $(cat "$tmp/r.log")"
}
refuse_resume "another BOS policy" "BOS policy (--bos) differs" --calib-text "$txt" --doc-sep '\n' --bos no
refuse_resume "another separator" "document separator (--doc-sep) differs" --calib-text "$txt" --bos yes
refuse_resume "the .npy of the same ids" "calibration tokens differ (sha256)" --calib "$tmp/lines.npy"
head -c 150000 "$txt" >"$tmp/short.txt"
refuse_resume "another text" "calibration text differs (sha256)" --calib-text "$tmp/short.txt" --doc-sep '\n' --bos yes
cp -r "$S" "$tmp/s2"
python3 - "$tmp/s2/tokenizer.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["decoder"] = None  # a change the encoder never sees, but another file
json.dump(d, open(sys.argv[1], "w"))
PY
"$fptq" quantize "${q[@]/$S/$tmp/s2}" --calib-text "$txt" --doc-sep '\n' --bos yes --out "$tmp/ct" --resume >"$tmp/r.log" 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "tokenizer.json (sha256) differs" "$tmp/r.log"
check "--resume refuses another tokenizer.json" $? "rc=$rc $(cat "$tmp/r.log")"
"$fptq" quantize "${q[@]}" --calib-text "$txt" --doc-sep '\n' --bos yes --out "$tmp/ct" --resume >"$tmp/r.log" 2>&1
check "--resume with the same text, tokenizer and policy" $? "$(cat "$tmp/r.log")"

# --- bad input ------------------------------------------------------------------------
bad() { # name exit-pattern message-pattern command...
    local name=$1 pat=$2
    shift 2
    "$@" >"$tmp/b.out" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$pat" "$tmp/b.out"
    check "$name" $? "rc=$rc $(cat "$tmp/b.out")"
}
printf 'Once upon a time\nthere was \xc3\x28 a cat\n' >"$tmp/badutf8.txt"
bad "invalid UTF-8: the byte offset" "badutf8.txt: document 1 (byte 17 of the file): invalid UTF-8 at byte offset 10 (byte 0xC3)" \
    "$fptq" tokenize --model "$S" --text "$tmp/badutf8.txt" --doc-sep '\n' --out "$tmp/x.npy"
: >"$tmp/empty.txt"
bad "an empty text" "empty.txt: text is empty" "$fptq" eval --model "$S" --text "$tmp/empty.txt" --quiet
head -c 20000 "$txt" >"$tmp/shorter.txt"
bad "a text shorter than the calibration asks for" "shorter.txt (tokenized): --calib-samples 256 x --calib-seqlen 256 needs 65536 tokens, the file has 9496" \
    "$fptq" quantize --model "$S" --calib-text "$tmp/shorter.txt" --calib-samples 256 --calib-seqlen 256 --out "$tmp/short"
[ ! -e "$tmp/short" ]
check "the short-text refusal leaves no checkpoint" $? "$(ls "$tmp/short" 2>&1)"
bad "--calib-jsonl without --field" "needs --field" \
    "$fptq" quantize --model "$S" --calib-jsonl "$tmp/docs.jsonl" --out "$tmp/nofield"
bad "two calibration inputs" "one of --calib / --calib-text / --calib-jsonl" \
    "$fptq" quantize --model "$S" --calib "$tmp/lines.npy" --calib-text "$txt" --out "$tmp/two"
bad "--bos with a .npy" "--bos and --tokenizer go with" "$fptq" eval --model "$S" --tokens "$tmp/lines.npy" --bos yes
bad "an unknown --bos" "expected auto, yes or no" "$fptq" tokenize --model "$S" --text "$txt" --bos maybe --out "$tmp/x.npy"
bad "an unknown --doc-sep escape" "unknown escape" "$fptq" tokenize --model "$S" --text "$txt" --doc-sep '\q' --out "$tmp/x.npy"
bad "a model directory without tokenizer.json" "tokenizer.json: cannot open tokenizer.json" \
    "$fptq" eval --model "$ex/stories260K-bf16-sharded" --text "$txt" --quiet
printf '{"text": "Once"}\n[1, 2]\n' >"$tmp/badline.jsonl"
bad "a JSON Lines line that is not an object" "badline.jsonl: line 2 is not a JSON object" \
    "$fptq" tokenize --model "$S" --jsonl "$tmp/badline.jsonl" --field text --out "$tmp/x.npy"
"$fptq" tokenize --help >"$tmp/h" 2>&1 && grep -q -- "--doc-sep" "$tmp/h"
check "tokenize --help" $? "$(cat "$tmp/h")"
finish
