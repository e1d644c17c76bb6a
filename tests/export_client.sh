#!/usr/bin/env bash
# fptq export checked by real clients: checkpoints of every scheme, from one
# rank and from two (mpirun), on stories260K (F32; its 172-wide down_proj
# leaves groups of 32 ragged, so it uses per-channel and groups of 4, and
# asserts the refusals) and on a synthetic BF16 model with 128-divisible
# shapes, exported to compressed-tensors and the GPTQ layout; then
# export_client.py decompresses them with compressed-tensors itself (and
# decodes GPTQ after the published layout) and compares every weight, bit for
# bit, with fptq's own dequantized weights (--format dequantized), and every
# unquantized tensor with the input model's.
# The client runs in the tests' Python environment (tests/pyenv.sh: made once
# in VENV_DIR, or FPTQ_EXPORT_VENV=DIR, and reused).
# FPTQ_EXPORT_CLIENT=skip skips the test (exit 77) where PyPI is out of reach.
# usage: export_client.sh FPTQ_BIN EXAMPLES_DIR MAKE_SYNTHETIC_BIN VENV_DIR
set -u
fptq=$1
ex=$2
mksyn=$3
venv=${FPTQ_EXPORT_VENV:-$4}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/testlib.sh"

if [ "${FPTQ_EXPORT_CLIENT:-}" = skip ]; then
    echo "skipped: FPTQ_EXPORT_CLIENT=skip"
    exit 77
fi

# --- the client's environment, made once --------------------------------------
. "$here/pyenv.sh"
pyenv_ensure "$venv" || exit 1

export OPENBLAS_NUM_THREADS=1
cases="$tmp/cases"
: >"$cases"
stories=(--model "$ex/stories260K" --calib "$ex/tinystories.tok512.npy" --calib-samples 128 --calib-seqlen 256 --quiet)
bf16=(--model "$ex/stories260K-bf16-sharded" --calib "$ex/tinystories.tok512.npy" --calib-samples 128 --calib-seqlen 256 --quiet)
"$mksyn" "$tmp/syn" --hidden 256 --layers 2 --intermediate 512 --heads 4 --kv-heads 2 --vocab 512 --tokens 20000 >/dev/null
synth=(--model "$tmp/syn" --calib "$tmp/syn/tokens.npy" --calib-samples 64 --calib-seqlen 256 --quiet)
mpi() { timeout -s KILL 120 mpirun --allow-run-as-root --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS=1 "$@"; }

# quantize NAME (mpi|one) ARGS...: a checkpoint in $tmp/NAME
quantize() {
    local name=$1 how=$2
    shift 2
    if [ "$how" = mpi ]; then
        mpi "$fptq" quantize "$@" --out "$tmp/$name" >"$tmp/$name.log" 2>&1
    else
        "$fptq" quantize "$@" --out "$tmp/$name" >"$tmp/$name.log" 2>&1
    fi
    check "quantize $name ($how)" $? "$(tail -3 "$tmp/$name.log")"
}
# export NAME FORMAT ORIGINAL SHARD [options]: the reference and FORMAT, and a case for the client
export_case() {
    local name=$1 fmt=$2 orig=$3 shard=$4
    shift 4
    local ref="$tmp/$name.ref" out="$tmp/$name.$fmt"
    [ -d "$ref" ] || "$fptq" export --checkpoint "$tmp/$name" --format dequantized --out "$ref" --quiet "$@" >/dev/null 2>"$ref.log"
    "$fptq" export --checkpoint "$tmp/$name" --format "$fmt" --out "$out" --max-shard-size "$shard" --quiet "$@" \
        >"$out.log" 2>&1
    check "export $name --format $fmt $*" $? "$(cat "$ref.log" "$out.log" | tail -3)"
    echo "$name.$fmt $fmt $out $ref $orig $shard" >>"$cases"
}
# refuse NAME FORMAT PATTERN: the export fails with a message matching PATTERN and leaves nothing
refuse() {
    local name=$1 fmt=$2 pat=$3 out="$tmp/$1.$2.refused"
    "$fptq" export --checkpoint "$tmp/$name" --format "$fmt" --out "$out" --quiet >"$out.log" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && grep -q -- "$pat" "$out.log" && [ ! -e "$out" ]
    check "export $name --format $fmt refused: $pat" $? "rc=$rc $(cat "$out.log")"
}

# --- stories260K, F32, tied embeddings ------------------------------------------
S="$ex/stories260K"
quantize s_w4ch one "${stories[@]}" --scheme w4a16 --method gptq --group-size 0
export_case s_w4ch compressed-tensors "$S" 100000
refuse s_w4ch gptq "compressed-tensors holds it"
quantize s_w4g4a one "${stories[@]}" --scheme w4a16 --method rtn --group-size 4 --asym
export_case s_w4g4a compressed-tensors "$S" 5000000000
quantize s_w3ch one "${stories[@]}" --scheme w3a16 --method gptq --group-size 0
export_case s_w3ch compressed-tensors "$S" 5000000000
quantize s_w8ao one "${stories[@]}" --scheme w8a16 --method gptq --group-size 0 --act-order
export_case s_w8ao compressed-tensors "$S" 5000000000
export_case s_w8ao gptq "$S" 5000000000
quantize s_w8asym one "${stories[@]}" --scheme w8a16 --method rtn --group-size 0 --asym
export_case s_w8asym compressed-tensors "$S" 5000000000
export_case s_w8asym gptq "$S" 5000000000
quantize s_fp8 one "${stories[@]}" --scheme fp8 --method rtn
export_case s_fp8 compressed-tensors "$S" 5000000000
refuse s_fp8 gptq "float-quantized"
quantize s_w8a8 one "${stories[@]}" --scheme w8a8 --method rtn
export_case s_w8a8 compressed-tensors "$S" 5000000000
refuse s_w8a8 gptq "int-quantized"
# SmoothQuant folds into the norms: they are no longer the input model's
quantize s_w8a8sq one "${stories[@]}" --scheme w8a8 --method rtn --smoothquant 0.5 --dynamic
export_case s_w8a8sq compressed-tensors - 5000000000
quantize s_g32 one "${stories[@]}" --scheme w4a16 --method gptq --group-size 32
refuse s_g32 compressed-tensors "ragged"
refuse s_g32 gptq "divides 4"
quantize s_mpi mpi "${stories[@]}" --scheme w8a16 --method gptq --group-size 0
export_case s_mpi compressed-tensors "$S" 100000
export_case s_mpi gptq "$S" 100000

# --- the same weights in BF16, two shards: scales in the model's dtype and F16 ----
B="$ex/stories260K-bf16-sharded"
quantize b_awq one "${bf16[@]}" --scheme w4a16 --method awq --group-size 4
export_case b_awq compressed-tensors - 100000 --scale-dtype model
quantize b_w8 one "${bf16[@]}" --scheme w8a16 --method gptq --group-size 4 --act-order
export_case b_w8 gptq "$B" 5000000000 --scale-dtype f16

# --- synthetic BF16 model, 128-divisible shapes -----------------------------------
Y="$tmp/syn"
quantize y_w4ao one "${synth[@]}" --scheme w4a16 --method gptq --group-size 128 --act-order
export_case y_w4ao compressed-tensors "$Y" 5000000000
export_case y_w4ao gptq "$Y" 5000000000
quantize y_w4asym one "${synth[@]}" --scheme w4a16 --method gptq --group-size 128 --asym
export_case y_w4asym compressed-tensors "$Y" 5000000000
export_case y_w4asym gptq "$Y" 5000000000
quantize y_w3 one "${synth[@]}" --scheme w3a16 --method gptq --group-size 128
export_case y_w3 compressed-tensors "$Y" 5000000000
export_case y_w3 gptq "$Y" 5000000000
quantize y_w8 one "${synth[@]}" --scheme w8a16 --method rtn --group-size 0
export_case y_w8 compressed-tensors "$Y" 5000000000
export_case y_w8 gptq "$Y" 5000000000
quantize y_fp8 one "${synth[@]}" --scheme fp8 --method rtn
export_case y_fp8 compressed-tensors "$Y" 5000000000
quantize y_mpi mpi "${synth[@]}" --scheme w4a16 --method gptq --group-size 128
export_case y_mpi compressed-tensors "$Y" 1000000
export_case y_mpi gptq "$Y" 1000000

# --- the dequantized export is the checkpoint: same perplexity, bit for bit -------
evalargs=(--tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 4 --start 40960 --quiet)
a=$("$fptq" eval --checkpoint "$tmp/s_w4ch" "${evalargs[@]}" 2>&1)
b=$("$fptq" eval --model "$tmp/s_w4ch.ref" "${evalargs[@]}" 2>&1)
[ -n "$a" ] && [ "$a" = "$b" ]
check "eval of the dequantized export == eval of the checkpoint" $? "checkpoint: $a / export: $b"

# --- command-line refusals leave nothing behind -------------------------------------
"$fptq" export --checkpoint "$tmp/s_w4ch" --format compressed-tensors --out "$tmp/s_w4ch.compressed-tensors" \
    >"$tmp/o" 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "already exists" "$tmp/o"
check "an existing --out is refused" $? "rc=$rc $(cat "$tmp/o")"
"$fptq" quantize "${stories[@]}" --scheme w4a16 --method rtn --group-size 0 --out "$tmp/part" --max-layers 2 >/dev/null 2>&1
"$fptq" export --checkpoint "$tmp/part" --format compressed-tensors --out "$tmp/part.out" >"$tmp/o" 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "not finished" "$tmp/o" && [ ! -e "$tmp/part.out" ]
check "an unfinished checkpoint is refused" $? "rc=$rc $(cat "$tmp/o")"
"$fptq" export --checkpoint "$tmp/s_w4ch" --format awq --out "$tmp/x" >"$tmp/o" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "unknown format" "$tmp/o"
check "an unknown --format is a usage error" $? "rc=$rc $(cat "$tmp/o")"

# --- text in: fptq eval --text against transformers on the ids fptq tokenize wrote --------
# (both fp32; fptq's logits agree with llama2.c's to 1.3e-6 per position, and a
# perplexity is a mean of log-probabilities, so 1e-5 leaves a tenfold margin)
txt="$ex/tinystories.txt"
"$fptq" tokenize --model "$S" --text "$txt" --doc-sep '\n' --bos yes --out "$tmp/text.npy" --quiet >/dev/null 2>&1
a=$("$fptq" eval --model "$S" --text "$txt" --doc-sep '\n' --bos yes --seqlen 256 --windows 4 --start 40960 --quiet 2>&1)
b=$("$venv/bin/python" "$here/tokenizer/hf_ppl.py" "$S" "$tmp/text.npy" 256 4 40960 2>"$tmp/hf_ppl.log")
pa=$(echo "$a" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p')
pb=$(echo "$b" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p')
[ -n "$pa" ] && [ -n "$pb" ] && awk -v a="$pa" -v b="$pb" 'BEGIN { d = a / b - 1; if (d < 0) d = -d; exit !(d < 1e-5) }'
check "eval --text == transformers on fptq tokenize's ids to 1e-5 (fptq $pa, transformers $pb)" $? \
    "fptq: $a / transformers: $b $(tail -3 "$tmp/hf_ppl.log")"

# --- eval --reference: KL divergence and the other figures, against numpy on ---------
# transformers' full logits of the dequantized export and the fp model. Bars:
# fptq's and transformers' logits agree to ~1e-6 relative, which moves a
# per-token KL of ~1e-2 by ~1e-6 absolute: mean, median, p90 and max to 1e-3
# relative, p99 (an interpolation between two ranks) to 1e-2; ppl to 1e-5;
# top-token agreement within one position in 1020 (a near-tie may flip);
# RMS dp to 1e-3.
"$fptq" eval --checkpoint "$tmp/s_w4ch" --reference "$S" --tokens "$tmp/text.npy" --seqlen 256 --windows 4 \
    --start 40960 --json --quiet >"$tmp/kl_fptq.json" 2>"$tmp/kl_fptq.err"
"$venv/bin/python" "$here/kl_reference.py" "$tmp/s_w4ch.ref" "$S" "$tmp/text.npy" 256 4 40960 >"$tmp/kl_ref.json" \
    2>"$tmp/kl_ref.log"
python3 - "$tmp/kl_fptq.json" "$tmp/kl_ref.json" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
bars = {"ppl": 1e-5, "ref_ppl": 1e-5, "kl_mean": 1e-3, "kl_median": 1e-3, "kl_p90": 1e-3, "kl_p99": 1e-2,
        "kl_max": 1e-3, "rms_dp": 1e-3}
bad = [f"{k}: fptq {a[k]:.9g} numpy {b[k]:.9g}" for k, t in bars.items() if abs(a[k] / b[k] - 1) > t]
if abs(a["top1_agree"] - b["top1_agree"]) * b["predicted"] > 1.5 or a["predicted"] != b["predicted"]:
    bad.append(f"top1_agree: fptq {a['top1_agree']} numpy {b['top1_agree']}")
print("  " + " ".join(f"{k}={a[k]:.6g}/{b[k]:.6g}" for k in bars))
if bad:
    sys.exit("; ".join(bad))
PY
check "eval --reference: KL divergence, top-token agreement, RMS dp == numpy on transformers' logits" $? \
    "$(cat "$tmp/kl_fptq.err" "$tmp/kl_ref.log" | tail -5)"

# --- the clients --------------------------------------------------------------------
t0=$(date +%s)
"$venv/bin/python" "$here/export_client.py" "$cases" >"$tmp/client.log" 2>&1
rc=$?
cat "$tmp/client.log"
n=$(grep -c '^ok ' "$tmp/client.log")
[ $rc -eq 0 ] && [ "$n" -eq "$(wc -l <"$cases")" ]
check "clients: $n of $(wc -l <"$cases") exports decompress to fptq's weights bit for bit ($(($(date +%s) - t0)) s)" $rc \
    "see above"
finish
