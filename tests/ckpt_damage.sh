#!/usr/bin/env bash
# Damaged, half-made and read-only checkpoints and exports on stories260K
# (GPTQ w4a16 g32), issue 14: every reader (eval, export, inspect) refuses a
# checkpoint whose shared.h5 or index.h5 does not match its digest, naming
# the file; `quantize --resume` rewrites shared.h5 from the model and
# refuses a damaged index by name; a folder left by a run killed before its
# first index is not a checkpoint yet; a killed export leaves nothing that
# blocks its re-run; a read-only checkpoint is refused before any work; and
# the messages say what happened (exit codes, counts, the signal).
# usage: ckpt_damage.sh FPTQ_BIN EXAMPLES_DIR
set -u
fptq=$1
ex=$2
. "$(dirname "$0")/testlib.sh"
export OPENBLAS_NUM_THREADS=1
tokens=$ex/tinystories.tok512.npy
recipe=(--calib-samples 128 --calib-seqlen 256 --scheme w4a16 --method gptq --group-size 32 --quiet)
q1() { timeout -k 5 120 "$fptq" quantize --model "$ex/stories260K" --calib "$tokens" "${recipe[@]}" "$@"; }
evalargs=(--tokens "$tokens" --seqlen 256 --windows 4 --start 40960 --quiet)
ev() { timeout -k 5 120 "$fptq" eval --checkpoint "$1" "${evalargs[@]}"; }
digest_of() { "$fptq" inspect "$1" 2>/dev/null | sed -n 's/^digest *\([0-9a-f]\{64\}\)$/\1/p'; }
done_of() { "$fptq" inspect "$1" 2>/dev/null | sed -n 's/^layers *\([0-9]*\) of [0-9]* done.*/\1/p'; }
files_of() { (cd "$1" && find . -type f -exec sha256sum {} + | sort); }
short() { head -c "${2:-600}" "$1" 2>/dev/null | tr '\n' ' '; }
has() { tr '\n' ' ' <"$2" | grep -q -- "$1"; }
# patch FILE NEEDLE OFFSET BYTE|xorMASK: one byte at the first NEEDLE + OFFSET
patch() {
    python3 - "$@" <<'PY'
import sys
path, needle, off, how = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), sys.argv[4]
b = bytearray(open(path, "rb").read())
i = b.find(needle)
assert i >= 0, "needle not found"
b[i + off] = b[i + off] ^ int(how[3:], 0) if how.startswith("xor") else ord(how)
open(path, "wb").write(b)
PY
}

q1 --out "$tmp/ref" >"$tmp/ref.log" 2>&1
ref=$(digest_of "$tmp/ref")
refppl=$(ev "$tmp/ref" 2>&1)
[ -n "$ref" ] && [ -n "$refppl" ]
check "reference checkpoint and its perplexity" $? "$(short "$tmp/ref.log") $refppl"

# readers CKPT NAME NEEDLE: eval, export and inspect all exit 1 naming NEEDLE
readers() {
    local ck=$1 name=$2 needle=$3 rc1 rc2 rc3
    ev "$ck" >"$ck.eval" 2>&1; rc1=$?
    "$fptq" export --checkpoint "$ck" --format dequantized --out "$ck.export" --quiet >"$ck.exp" 2>&1; rc2=$?
    "$fptq" inspect "$ck" >"$ck.insp" 2>&1; rc3=$?
    [ $rc1 -eq 1 ] && [ $rc2 -eq 1 ] && [ $rc3 -eq 1 ] && has "$needle" "$ck.eval" && has "$needle" "$ck.exp" &&
        has "$needle" "$ck.insp" && [ ! -e "$ck.export" ] && ! grep -q ppl= "$ck.eval"
    check "$name: eval, export and inspect refuse it (exit 1) naming '$needle'" $? \
        "rc=$rc1/$rc2/$rc3 eval: $(short "$ck.eval" 300) export: $(short "$ck.exp" 300) inspect: $(short "$ck.insp" 300)"
}

# --- item 2: one flipped bit in the embedding (shared.h5) ---
ck=$tmp/sharedbit
cp -r "$tmp/ref" "$ck"
# the embedding's first 32 bytes as the model holds them, found in shared.h5
needle=$(python3 - "$ex/stories260K/model.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
o = h["model.embed_tokens.weight"]["data_offsets"][0] + 8 + n
print(b[o:o + 32].hex())
PY
)
python3 - "$ck/shared.h5" "$needle" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.find(bytes.fromhex(sys.argv[2]))
assert i >= 0
b[i + 1001] ^= 0x01
open(sys.argv[1], "wb").write(b)
PY
readers "$ck" "shared.h5 with one flipped bit" "shared.h5 does not match its digest"
q1 --out "$ck" --resume >"$ck.resume" 2>&1
rc=$?
[ $rc -eq 0 ] && has "warning: .*shared.h5 does not match its digest.*writing it again from the model" "$ck.resume" &&
    [ "$(digest_of "$ck")" = "$ref" ] && [ "$(ev "$ck" 2>&1)" = "$refppl" ]
check "  --resume rewrites shared.h5 from the model: digest and perplexity of the reference" $? \
    "rc=$rc $(short "$ck.resume") ppl $(ev "$ck" 2>&1)"

# --- item 4: shared.h5 replaced by an HDF5 file without embed_tokens ---
ck=$tmp/sharedswap
cp -r "$tmp/ref" "$ck"
cp "$ck/layers/layer-00000.h5" "$ck/shared.h5"
readers "$ck" "shared.h5 without embed_tokens" "shared.h5"
q1 --out "$ck" --resume >"$ck.resume" 2>&1
rc=$?
[ $rc -eq 0 ] && has "warning: .*shared.h5.*writing it again from the model" "$ck.resume" &&
    [ "$(digest_of "$ck")" = "$ref" ] && [ "$(ev "$ck" 2>&1)" = "$refppl" ]
check "  --resume does not call it done as it is: it rewrites shared.h5, and eval then works" $? \
    "rc=$rc $(short "$ck.resume") ppl $(ev "$ck" 2>&1)"
ck=$tmp/sharedgone
cp -r "$tmp/ref" "$ck"
rm "$ck/shared.h5"
q1 --out "$ck" --resume >"$ck.resume" 2>&1
rc=$?
[ $rc -eq 0 ] && [ "$(digest_of "$ck")" = "$ref" ] && [ "$(ev "$ck" 2>&1)" = "$refppl" ]
check "  shared.h5 deleted: --resume rewrites it" $? "rc=$rc $(short "$ck.resume")"

# --- item 3: a one-byte patch of the stored config (rope_theta 10000 -> 90000) ---
ck=$tmp/rope
cp -r "$tmp/ref" "$ck"
patch "$ck/index.h5" '"rope_theta": 10000' 14 9
readers "$ck" "rope_theta patched in index.h5" "index.h5: the stored config, recipe, provenance and manifest do not match their digest"
before=$(files_of "$ck")
q1 --out "$ck" --resume >"$ck.resume" 2>&1
rc=$?
[ $rc -eq 1 ] && has "index.h5: the stored config.*do not match their digest" "$ck.resume" && [ "$(files_of "$ck")" = "$before" ]
check "  --resume refuses it by name (exit 1), files unchanged" $? "rc=$rc $(short "$ck.resume")"

# --- item 4: the stored config made invalid JSON, and a layer's losses patched ---
ck=$tmp/badjson
cp -r "$tmp/ref" "$ck"
patch "$ck/index.h5" '"architectures"' 0 '#'
readers "$ck" "stored config not valid JSON" "index.h5: the stored config"
q1 --out "$ck" --resume >"$ck.resume" 2>&1
rc=$?
[ $rc -eq 1 ] && has "index.h5: the stored config.*do not match their digest" "$ck.resume"
check "  --resume does not say done: it refuses naming index.h5" $? "rc=$rc $(short "$ck.resume")"
ck=$tmp/losses
cp -r "$tmp/ref" "$ck"
patch "$ck/index.h5" '"loss": ' 9 xor0x80
readers "$ck" "a manifest loss made invalid UTF-8" "do not match their digest"

# --- item 10: a run killed between mkdir CKPT/layers and its first index ---
ck=$tmp/skeleton
mkdir -p "$ck/layers"
q1 --out "$ck" --resume >"$ck.resume" 2>&1
rc=$?
[ $rc -eq 0 ] && [ "$(digest_of "$ck")" = "$ref" ]
check "folder with only an empty layers/: --resume starts the checkpoint and finishes it" $? "rc=$rc $(short "$ck.resume")"
ck=$tmp/skeleton2
mkdir -p "$ck/layers"
q1 --out "$ck" >"$ck.log" 2>&1
rc=$?
[ $rc -eq 0 ] && [ "$(digest_of "$ck")" = "$ref" ]
check "  and a run without --resume takes it over too (it is not a checkpoint yet)" $? "rc=$rc $(short "$ck.log")"
ck=$tmp/foreign
mkdir -p "$ck"
echo notes >"$ck/notes.txt"
q1 --out "$ck" --resume >"$ck.log" 2>&1
rc=$?
[ $rc -ne 0 ] && has "not an fptq checkpoint" "$ck.log" && [ "$(ls -A "$ck")" = notes.txt ]
check "  a folder holding something else is refused untouched" $? "rc=$rc $(short "$ck.log") $(ls -A "$ck")"

# --- item 12: a killed export leaves nothing that blocks its re-run ---
out=$tmp/exp/model
FPTQ_TEST_EXPORT_KILL=1 "$fptq" export --checkpoint "$tmp/ref" --format dequantized --out "$out" --quiet \
    >"$tmp/exp.log" 2>&1
rc=$?
[ $rc -eq 137 ] && [ ! -e "$out" ]
check "export killed (SIGKILL) before its config.json: no $out left" $? "rc=$rc $(ls -A "$tmp/exp")"
"$fptq" export --checkpoint "$tmp/ref" --format dequantized --out "$out" --quiet >"$tmp/exp.log" 2>&1
rc=$?
[ $rc -eq 0 ] && [ -s "$out/config.json" ] && ls "$out" | grep -q 'safetensors$' && python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$out/config.json"
check "  its re-run completes, with a valid config.json" $? "rc=$rc $(short "$tmp/exp.log") $(ls -A "$out" 2>&1)"

# --- item 13: a read-only checkpoint is refused before any work ---
ck=$tmp/ro
mkdir -p "$ck"
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=8m tmpfs "$ck" 2>/dev/null; then
    trap 'umount "$tmp/ro" 2>/dev/null; rm -rf "$tmp"' EXIT
    q1 --out "$ck/c" --max-layers 2 >/dev/null 2>&1
    mount -o remount,ro "$ck"
    timeout -k 5 120 "$fptq" quantize --model "$ex/stories260K" --calib "$tokens" "${recipe[@]/--quiet/--verbose}" \
        --out "$ck/c" --resume >"$tmp/ro.log" 2>&1
    rc=$?
    [ $rc -eq 1 ] && has "checkpoint $ck/c is not writable" "$tmp/ro.log" && ! grep -q "restored\|quantize: " "$tmp/ro.log"
    check "read-only checkpoint: refused (exit 1) as not writable, before loading the model or restoring a layer" $? \
        "rc=$rc $(short "$tmp/ro.log" 1200)"
    umount "$ck"
else
    echo "skip read-only checkpoint: cannot mount a tmpfs here"
fi

# --- item 15: messages ---
ck=$tmp/unfinished
q1 --out "$ck" --max-layers 2 >/dev/null 2>&1
ev "$ck" >"$ck.eval" 2>&1
rc1=$?
"$fptq" export --checkpoint "$ck" --format dequantized --out "$ck.export" --quiet >"$ck.exp" 2>&1
rc2=$?
[ $rc1 -eq 1 ] && [ $rc2 -eq 1 ] && has "layer 2 is not finished" "$ck.eval" && has "layer 2 is not finished" "$ck.exp"
check "an unfinished checkpoint: eval and export both exit 1 naming the layer" $? \
    "rc eval $rc1 export $rc2: $(short "$ck.eval") $(short "$ck.exp")"

ck=$tmp/signals
# fptq itself, not under timeout: the signals are for it
FPTQ_TEST_LAYER_DELAY_MS=1500 "$fptq" quantize --model "$ex/stories260K" --calib "$tokens" \
    "${recipe[@]}" --out "$ck" >"$ck.log" 2>&1 &
pid=$!
sleep 1
kill -USR1 $pid
sleep 0.3
kill -TERM $pid
wait $pid
rc=$?
[ $rc -eq 3 ] && grep -q "stopped by signal 10 (SIGUSR1)" "$ck.log"
check "SIGUSR1 then SIGTERM: the summary names the first, SIGUSR1 (exit 3)" $? "rc=$rc $(short "$ck.log")"

if command -v mpirun >/dev/null; then
    ck=$tmp/stages
    mp() {
        ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 timeout -k 5 120 mpirun --allow-run-as-root \
            --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS=1 -x ASAN_OPTIONS "$fptq" quantize --model "$ex/stories260K" \
            --calib "$tokens" "${recipe[@]}" --stages 2 "$@"
    }
    mp --out "$ck" >"$ck.log0" 2>&1
    mp --out "$ck" --resume >"$ck.log" 2>&1
    rc=$?
    mp --out "$ck" --resume --json >"$ck.json" 2>&1
    [ $rc -eq 0 ] && grep -q "(0 quantized now, 5 restored)" "$ck.log" && grep -q '"layers_restored":5[,}]' "$ck.json"
    check "--stages 2: the summary's restored count (text and --json) includes the later stage's layers" $? \
        "rc=$rc $(short "$ck.log0") $(short "$ck.log") $(short "$ck.json")"
else
    echo "skip --stages 2 summary: no mpirun"
fi

finish
