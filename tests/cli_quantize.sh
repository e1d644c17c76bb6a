#!/usr/bin/env bash
# `fptq quantize` end to end on stories260K: an interrupted and resumed run
# has the digest of an uninterrupted one, refusals leave checkpoints alone,
# the checkpoint evaluates without the model directory, and the quality
# bars of the quantizer issue hold (GPTQ and AWQ beat RTN at 4 and 3 bits,
# w8a16 within 0.5% of fp32, fp8 within 2%).
# usage: cli_quantize.sh FPTQ_BIN EXAMPLES_DIR
set -u
fptq=$1
ex=$2
. "$(dirname "$0")/testlib.sh"

model="$ex/stories260K"
calib=(--model "$model" --calib "$ex/tinystories.tok512.npy" --calib-samples 128 --calib-seqlen 256)
evalargs=(--tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 16 --start 40960 --quiet)
digest_of() { sed -n 's/^digest *\([0-9a-f]\{64\}\)$/\1/p' "$1"; }
ppl_of() { "$fptq" eval --checkpoint "$1" "${evalargs[@]}" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# --- interrupted at 2 layers, resumed ---
"$fptq" quantize "${calib[@]}" --scheme w4a16 --method gptq --group-size 32 --out "$tmp/new/nested/a" --max-layers 2 --quiet >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 3 ] && grep -q "resumable" "$tmp/out"
check "--max-layers 2 stops with status 3" $? "rc=$rc $(cat "$tmp/out" "$tmp/err")"
"$fptq" inspect "$tmp/new/nested/a" >"$tmp/insp_a1" 2>&1
grep -q "2 of 5 done" "$tmp/insp_a1" && grep -q "incomplete" "$tmp/insp_a1"
check "inspect shows 2 of 5 layers done" $? "$(cat "$tmp/insp_a1")"
"$fptq" eval --checkpoint "$tmp/new/nested/a" "${evalargs[@]}" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q "not finished" "$tmp/err"
check "eval refuses an unfinished checkpoint" $? "rc=$rc $(cat "$tmp/err")"
"$fptq" quantize "${calib[@]}" --scheme w4a16 --method gptq --group-size 32 --out "$tmp/new/nested/a" --resume --quiet >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && grep -q "3 quantized now, 2 restored" "$tmp/out"
check "--resume finishes the last 3 layers" $? "rc=$rc $(cat "$tmp/out" "$tmp/err")"

# --- uninterrupted ---
"$fptq" quantize "${calib[@]}" --scheme w4a16 --method gptq --group-size 32 --out "$tmp/b" --quiet >"$tmp/out" 2>"$tmp/err"
check "uninterrupted run" $? "$(cat "$tmp/out" "$tmp/err")"
"$fptq" inspect "$tmp/new/nested/a" >"$tmp/insp_a" 2>&1
"$fptq" inspect "$tmp/b" >"$tmp/insp_b" 2>&1
da=$(digest_of "$tmp/insp_a")
db=$(digest_of "$tmp/insp_b")
[ -n "$da" ] && [ "$da" = "$db" ]
check "resumed digest == uninterrupted digest" $? "a='$da' b='$db'"
"$fptq" inspect "$tmp/b" --json >"$tmp/insp.json" 2>&1
python3 - "$tmp/insp.json" "$db" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["digest"] == sys.argv[2], o["digest"]
assert o["layers_done"] == 5 and len(o["layers"]) == 5
assert o["recipe"]["method"] == "gptq" and o["recipe"]["group_size"] == 32
assert len(o["provenance"]["calib_sha256"]) == 64
assert all(l["status"] == "done" and len(l["digest"]) == 64 for l in o["layers"])
PY
check "inspect --json" $? "$(head -c 800 "$tmp/insp.json")"

# --- refusals leave the checkpoint untouched ---
before=$(cd "$tmp/b" && find . -type f -exec sha256sum {} + | sort)
"$fptq" quantize "${calib[@]}" --scheme w4a16 --method gptq --group-size 32 --out "$tmp/b" --quiet >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && grep -q -- "--resume" "$tmp/err" && grep -q "$tmp/b" "$tmp/err"
check "existing --out refused without --resume" $? "rc=$rc $(cat "$tmp/err")"
"$fptq" quantize "${calib[@]}" --scheme w4a16 --method gptq --group-size 64 --out "$tmp/b" --resume --quiet >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && grep -q "recipe differs" "$tmp/err"
check "--resume with another recipe refused" $? "rc=$rc $(cat "$tmp/err")"
cp "$ex/tinystories.tok512.npy" "$tmp/other.npy"
size=$(stat -c %s "$tmp/other.npy")
printf '\x02' | dd of="$tmp/other.npy" bs=1 seek=$((size - 4)) conv=notrunc status=none
"$fptq" quantize --model "$model" --calib "$tmp/other.npy" --calib-samples 128 --calib-seqlen 256 \
    --scheme w4a16 --method gptq --group-size 32 --out "$tmp/b" --resume --quiet >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && grep -q "calibration tokens differ" "$tmp/err"
check "--resume with other calibration data refused" $? "rc=$rc $(cat "$tmp/err")"
mkdir -p "$tmp/othermodel"
cp "$model"/config.json "$model"/model.safetensors "$tmp/othermodel/"
size=$(stat -c %s "$tmp/othermodel/model.safetensors")
printf '\x3f' | dd of="$tmp/othermodel/model.safetensors" bs=1 seek=$((size - 2)) conv=notrunc status=none
"$fptq" quantize --model "$tmp/othermodel" --calib "$ex/tinystories.tok512.npy" --calib-samples 128 --calib-seqlen 256 \
    --scheme w4a16 --method gptq --group-size 32 --out "$tmp/b" --resume --quiet >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && grep -q "model's files differ" "$tmp/err"
check "--resume with another model refused" $? "rc=$rc $(cat "$tmp/err")"
after=$(cd "$tmp/b" && find . -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ]
check "refused runs changed no file" $? "files differ"

# --- quality on the golden protocol ---
fp32=$("$fptq" eval --model "$model" "${evalargs[@]}" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p')
q() { # name, args...: quantize into $tmp/NAME, print its ppl
    local name=$1
    shift
    "$fptq" quantize "${calib[@]}" "$@" --out "$tmp/$name" --quiet >/dev/null 2>"$tmp/$name.err" || { cat "$tmp/$name.err" >&2; echo 0; return; }
    ppl_of "$tmp/$name"
}
gptq4=$(ppl_of "$tmp/b")
rtn4=$(q rtn4 --scheme w4a16 --method rtn --group-size 32)
awq4=$(q awq4 --scheme w4a16 --method awq --group-size 32)
rtn3=$(q rtn3 --scheme w3a16 --method rtn --group-size 32)
gptq3=$(q gptq3 --scheme w3a16 --method gptq --group-size 32)
awq3=$(q awq3 --scheme w3a16 --method awq --group-size 32)
w8=$(q w8 --scheme w8a16 --method rtn --group-size 0)
fp8=$(q fp8 --scheme fp8)
echo "fp32 $fp32 | w4a16 g32: rtn $rtn4 gptq $gptq4 awq $awq4 | w3a16 g32: rtn $rtn3 gptq $gptq3 awq $awq3 | w8a16 $w8 | fp8 $fp8"
lt "$gptq4" "$rtn4"; check "w4a16 g32: GPTQ < RTN" $? "$gptq4 vs $rtn4"
lt "$awq4" "$rtn4"; check "w4a16 g32: AWQ < RTN" $? "$awq4 vs $rtn4"
lt "$gptq3" "$rtn3"; check "w3a16 g32: GPTQ < RTN" $? "$gptq3 vs $rtn3"
lt "$awq3" "$rtn3"; check "w3a16 g32: AWQ < RTN" $? "$awq3 vs $rtn3"
awk -v a="$w8" -v b="$fp32" 'BEGIN { d = a / b - 1; exit !(d < 0.005 && d > -0.005) }'
check "w8a16 within 0.5% of fp32" $? "$w8 vs $fp32"
awk -v a="$fp8" -v b="$fp32" 'BEGIN { d = a / b - 1; exit !(d < 0.02 && d > -0.02) }'
check "fp8 within 2% of fp32" $? "$fp8 vs $fp32"

# --- the forward in micro-batches (FPTQ_MICRO_SEQS; what a GPU short of
# memory does): each group's input recomputed per micro-batch of 48 of the
# 128 samples (the last one 32). What changes is the fp32 rounding of the
# statistics' sums and, after a scale fold, of the recomputed input
# (rmsnorm(x) * (norm / s) instead of (rmsnorm(x) * norm) / s). So layer 0's
# losses, whose statistics are summed in another order only, stay close
# (bars below; SmoothQuant measured 8e-9); statistics of one micro-batch
# alone move them by 1% to 10%, and a subsample for AWQ's search taken from
# one micro-batch by 0.1% to 3%. AWQ's grid searches pick among near-equal
# choices and the recomputed MLP input flips some (gate_proj's clip in layer
# 0), so there only the attention block of layer 0 is held to 1e-4.
# Perplexity is held to 1% only: rounding alone moves it by up to 0.53%
# (AWQ) and 0.43% (SmoothQuant's static int8 activations, with OpenBLAS on
# one thread; 0.01% on two), GPTQ's measured 0. The faults above moved it
# by about 1% too, so the losses, not perplexity, are what tell them apart.
micro() { # name, args...: quantize with micro-batches into $tmp/NAME
    local name=$1
    shift
    FPTQ_MICRO_SEQS=48 "$fptq" quantize "${calib[@]}" "$@" --out "$tmp/$name" >"$tmp/$name.log" 2>&1
}
losses0() { # checkpoint [prefix]: layer 0's losses of the linears named prefix* (all but down_proj)
    "$fptq" inspect "$1" --json | python3 -c '
import json, sys
l = json.load(sys.stdin)["layers"][0]["manifest"]["losses"]
print(" ".join("%r" % l[n]["loss"] for n in sorted(l) if n.startswith(sys.argv[1]) and not n.startswith("mlp.down")))' "${2:-}"; }
close() { # a b tol: every pair of numbers within tol (relative)
    python3 -c '
import sys
a, b, t = sys.argv[1].split(), sys.argv[2].split(), float(sys.argv[3])
w = max(abs(float(x) - float(y)) / max(abs(float(x)), 1e-30) for x, y in zip(a, b)) if a and len(a) == len(b) else 1
print("%.1e" % w); sys.exit(w > t)' "$1" "$2" "$3"; }
FPTQ_MICRO_SEQS=0x3 "$fptq" quantize "${calib[@]}" --out "$tmp/badmicro" --quiet >"$tmp/badmicro.log" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "FPTQ_MICRO_SEQS='0x3': expected a positive number" "$tmp/badmicro.log" && [ ! -e "$tmp/badmicro" ]
check "FPTQ_MICRO_SEQS=0x3 refused (exit 2), naming it, before any file" $? "rc=$rc $(cat "$tmp/badmicro.log")"
micro mgptq4 --scheme w4a16 --method gptq --group-size 32
check "GPTQ in micro-batches of 48 samples" $? "$(tail -5 "$tmp/mgptq4.log")"
grep -q "forward in micro-batches of 48 of the rank's 128 samples" "$tmp/mgptq4.log"
check "  the run says it uses micro-batches" $? "$(head -3 "$tmp/mgptq4.log")"
# RTN's codes do not depend on the statistics, so its layer-0 losses (the
# proxy loss through H) see the summation order alone: 1e-5 (measured 9.1e-8;
# half the statistics move them by 1% or more). GPTQ's codes follow H, and
# on some CPUs' OpenBLAS kernels (an AMD EPYC here) the reordered sums flip
# a few of them: 2e-2 (measured 0 on an Intel Xeon, 6.6e-3 on an AMD EPYC).
micro mrtn4 --scheme w4a16 --method rtn --group-size 32
worst=$(close "$(losses0 "$tmp/rtn4")" "$(losses0 "$tmp/mrtn4")" 1e-5)
check "  RTN: layer 0's losses within 1e-5 of the whole batch's (worst $worst)" $? "worst $worst"
worst=$(close "$(losses0 "$tmp/b")" "$(losses0 "$tmp/mgptq4")" 2e-2)
check "  GPTQ: layer 0's losses within 2e-2 of the whole batch's (worst $worst)" $? "worst $worst"
mg=$(ppl_of "$tmp/mgptq4")
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a / b - 1; exit !(a > 0 && b > 0 && d < t && d > -t) }'; }
within "$mg" "$gptq4" 0.01
check "  ppl $mg within 1% of the whole batch's $gptq4" $? "$mg vs $gptq4"
FPTQ_MICRO_SEQS=48 "$fptq" quantize "${calib[@]}" --scheme w4a16 --method gptq --group-size 32 --out "$tmp/mres" \
    --max-layers 2 --quiet >/dev/null 2>&1
rc=$?
FPTQ_MICRO_SEQS=48 "$fptq" quantize "${calib[@]}" --scheme w4a16 --method gptq --group-size 32 --out "$tmp/mres" \
    --resume --quiet >"$tmp/mres.log" 2>&1
rc2=$?
"$fptq" inspect "$tmp/mgptq4" >"$tmp/insp_m" 2>&1
"$fptq" inspect "$tmp/mres" >"$tmp/insp_mr" 2>&1
dm=$(digest_of "$tmp/insp_m")
[ $rc -eq 3 ] && [ $rc2 -eq 0 ] && [ -n "$dm" ] && [ "$(digest_of "$tmp/insp_mr")" = "$dm" ]
check "  --max-layers 2, then --resume, in micro-batches: the uninterrupted digest" $? "rc=$rc rc2=$rc2 $(cat "$tmp/mres.log")"
micro mawq4 --scheme w4a16 --method awq --group-size 32
check "AWQ in micro-batches (the search's subsample picked across them)" $? "$(tail -5 "$tmp/mawq4.log")"
worst=$(close "$(losses0 "$tmp/awq4" self_attn)" "$(losses0 "$tmp/mawq4" self_attn)" 1e-4)
check "  layer 0's attention losses within 1e-4 of the whole batch's (worst $worst)" $? "worst $worst"
ma=$(ppl_of "$tmp/mawq4")
within "$ma" "$awq4" 0.01 && lt "$ma" "$rtn4"
check "  ppl $ma within 1% of the whole batch's $awq4, below RTN's $rtn4" $? "$ma vs $awq4"
sq=(--scheme w8a8 --method gptq --smoothquant 0.5 --act-order --group-size 0)
sq8=$(q sq8 "${sq[@]}")
micro msq8 "${sq[@]}"
check "SmoothQuant + GPTQ w8a8 in micro-batches (the smoothed input observed again)" $? "$(tail -5 "$tmp/msq8.log")"
worst=$(close "$(losses0 "$tmp/sq8")" "$(losses0 "$tmp/msq8")" 1e-4)
check "  layer 0's losses within 1e-4 of the whole batch's (worst $worst)" $? "worst $worst"
ms=$(ppl_of "$tmp/msq8")
within "$ms" "$sq8" 0.01
check "  ppl $ms within 1% of the whole batch's $sq8" $? "$ms vs $sq8"

finish
