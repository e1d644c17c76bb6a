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

finish
