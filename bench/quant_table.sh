#!/usr/bin/env bash
# Perplexity of stories260K under every scheme and method, on the golden
# protocol (16 windows x 256 tokens from 40960), calibrated on 128 x 256
# tokens from [0, 32768). Prints a Markdown table; with --update-readme,
# writes it into README.md between the quant-table markers.
# usage: bench/quant_table.sh [BUILD_DIR] [--update-readme]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
fptq=$build/fptq
ex=$root/examples
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

calib=(--model "$ex/stories260K" --calib "$ex/tinystories.tok512.npy" --calib-samples 128 --calib-seqlen 256)
evalargs=(--tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 16 --start 40960 --quiet)

fp32=$("$fptq" eval --model "$ex/stories260K" "${evalargs[@]}" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p')
table="| scheme | method | ppl | vs fp32 | quantize s |
| --- | --- | ---: | ---: | ---: |
| fp32 | — | $fp32 | — | — |"
n=0
row() { # scheme label, method label, fptq quantize args...
    local scheme=$1 label=$2
    shift 2
    n=$((n + 1))
    local t0 t1 ppl
    t0=$(date +%s.%N)
    "$fptq" quantize "${calib[@]}" "$@" --out "$tmp/$n" --quiet >/dev/null
    t1=$(date +%s.%N)
    ppl=$("$fptq" eval --checkpoint "$tmp/$n" "${evalargs[@]}" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p')
    table+=$'\n'$(awk -v s="$scheme" -v m="$label" -v p="$ppl" -v f="$fp32" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "| %s | %s | %.4f | %+.2f%% | %.1f |", s, m, p, 100 * (p / f - 1), t1 - t0 }')
    echo "$scheme $label: $ppl" >&2
}
for bits in 4 3; do
    row "w${bits}a16 g32" RTN --scheme w${bits}a16 --method rtn --group-size 32
    row "w${bits}a16 g32" GPTQ --scheme w${bits}a16 --method gptq --group-size 32
    row "w${bits}a16 g32" "GPTQ act-order" --scheme w${bits}a16 --method gptq --group-size 32 --act-order
    row "w${bits}a16 g32" AWQ --scheme w${bits}a16 --method awq --group-size 32
done
row "w8a16 per channel" RTN --scheme w8a16 --method rtn --group-size 0
row "w8a16 per channel" GPTQ --scheme w8a16 --method gptq --group-size 0
row "fp8 (E4M3 W, static A)" RTN --scheme fp8
row "w8a8 (static A)" RTN --scheme w8a8 --method rtn
row "w8a8 (static A)" "SmoothQuant 0.5 + RTN" --scheme w8a8 --method rtn --smoothquant 0.5
row "w8a8 (static A)" "SmoothQuant 0.5 + GPTQ" --scheme w8a8 --method gptq --smoothquant 0.5
row "w8a8 (dynamic A)" RTN --scheme w8a8 --method rtn --dynamic

echo "$table"
if [ "${2:-}" = "--update-readme" ]; then
    python3 - "$root/README.md" "$table" <<'PY'
import sys
path, table = sys.argv[1], sys.argv[2]
s = open(path).read()
a, b = "<!-- quant-table:begin -->", "<!-- quant-table:end -->"
i, j = s.index(a) + len(a), s.index(b)
open(path, "w").write(s[:i] + "\n" + table + "\n" + s[j:])
PY
    echo "README.md updated" >&2
fi
