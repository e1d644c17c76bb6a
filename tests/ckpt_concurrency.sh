#!/usr/bin/env bash
# Runs at once on one checkpoint (issue 14, item 9), stories260K GPTQ w4a16
# g32: two and three `quantize --resume` on one new --out started together,
# two plain starts, a --resume started while a run writes, and exports
# during a run. One run holds the checkpoint's lock; the others are refused
# naming its pid and host and change nothing; whatever says done is done
# (a final --resume restores every layer, eval and the digest agree with an
# uninterrupted run), and no temporary file or lock is left.
# usage: ckpt_concurrency.sh FPTQ_BIN EXAMPLES_DIR
set -u
fptq=$1
ex=$2
. "$(dirname "$0")/testlib.sh"
export OPENBLAS_NUM_THREADS=1
tokens=$ex/tinystories.tok512.npy
recipe=(--calib-samples 128 --calib-seqlen 256 --scheme w4a16 --method gptq --group-size 32 --quiet)
q1() { timeout -k 5 180 "$fptq" quantize --model "$ex/stories260K" --calib "$tokens" "${recipe[@]}" "$@"; }
evalargs=(--tokens "$tokens" --seqlen 256 --windows 4 --start 40960 --quiet)
digest_of() { "$fptq" inspect "$1" 2>/dev/null | sed -n 's/^digest *\([0-9a-f]\{64\}\)$/\1/p'; }
short() { head -c "${2:-600}" "$1" 2>/dev/null | tr '\n' ' '; }
leftovers() { find "$1" -name '*.tmp*' -o -name 'fptq.lock' -o -name '.fptq-probe*' | tr '\n' ' '; }

q1 --out "$tmp/ref" >"$tmp/ref.log" 2>&1
ref=$(digest_of "$tmp/ref")
refppl=$("$fptq" eval --checkpoint "$tmp/ref" "${evalargs[@]}" 2>&1)
[ -n "$ref" ]
check "reference checkpoint" $? "$(short "$tmp/ref.log")"

# sound CKPT NAME: whatever the runs left is a finished checkpoint that is what it says
sound() {
    local ck=$1 name=$2 rc
    q1 --out "$ck" --resume >"$ck.final" 2>&1
    rc=$?
    [ $rc -eq 0 ] && grep -q "(0 quantized now, 5 restored)" "$ck.final" && [ "$(digest_of "$ck")" = "$ref" ] &&
        [ "$("$fptq" eval --checkpoint "$ck" "${evalargs[@]}" 2>&1)" = "$refppl" ] && [ -z "$(leftovers "$ck")" ]
    check "  $name: a final --resume restores all 5 layers, digest and perplexity of the reference, no temporary file or lock left" $? \
        "rc=$rc $(short "$ck.final") leftovers: $(leftovers "$ck")"
}

# together N NAME ARGS...: N runs on one new --out started at once; exactly
# the lock decides: each either finishes (0) or is refused naming the holder (1)
together() {
    local n=$1 name=$2 i ok=0 bad=0 detail=""
    shift 2
    local ck=$tmp/$name
    for i in $(seq 1 "$n"); do
        FPTQ_TEST_LAYER_DELAY_MS=200 q1 --out "$ck" "$@" >"$tmp/$name.$i.log" 2>&1 &
        eval "p$i=$!"
    done
    for i in $(seq 1 "$n"); do
        eval "wait \$p$i"
        rc=$?
        log=$tmp/$name.$i.log
        if [ $rc -eq 0 ] && grep -q "^done: .*digest $ref" "$log"; then
            ok=$((ok + 1))
        elif [ $rc -eq 1 ] && grep -q "checkpoint $ck is in use by another fptq quantize (pid [0-9]* on host .*nothing was changed" "$log" &&
            ! grep -q "does not exist yet\|not an fptq checkpoint" "$log" &&
            { [ "$*" = "" ] || ! grep -q "pass --resume" "$log"; }; then
            :
        elif [ $rc -eq 2 ] && [ "$*" = "" ] && grep -q "already exists: pass --resume" "$log"; then
            :   # a plain run that came after the winner had finished
        else
            bad=$((bad + 1))
            detail="$detail [run $i rc=$rc: $(short "$log" 400)]"
        fi
    done
    [ $ok -ge 1 ] && [ $bad -eq 0 ]
    check "$n runs at once ($name${*:+, $*}): one finishes with the reference digest, the others are refused naming the holder's pid and host" $? \
        "finished=$ok wrong=$bad$detail"
    sound "$ck" "$name"
}

together 2 two_resume --resume
together 3 three_resume --resume
together 2 two_plain

# --- a --resume started while a run writes ---
ck=$tmp/while
# fptq itself in the background (not under timeout), so that $! is its pid
FPTQ_TEST_LAYER_DELAY_MS=600 "$fptq" quantize --model "$ex/stories260K" --calib "$tokens" "${recipe[@]}" --out "$ck" \
    >"$ck.a.log" 2>&1 &
a=$!
for _ in $(seq 1 100); do [ -e "$ck/index.h5" ] && break; sleep 0.1; done
t0=$(date +%s)
q1 --out "$ck" --resume >"$ck.b.log" 2>&1
rc=$?
el=$(($(date +%s) - t0))
wait $a
rca=$?
[ $rc -eq 1 ] && grep -q "checkpoint $ck is in use by another fptq quantize (pid $a on host " "$ck.b.log" && [ $el -le 5 ] &&
    [ $rca -eq 0 ] && grep -q "digest $ref" "$ck.a.log"
check "--resume while a run writes: refused in ${el} s naming the writer's pid $a; the writer finishes with the reference digest" $? \
    "rc=$rc rc_a=$rca b: $(short "$ck.b.log") a: $(short "$ck.a.log")"
sound "$ck" "resume while writing"

# --- exports during a run ---
ck=$tmp/exporting
FPTQ_TEST_LAYER_DELAY_MS=300 q1 --out "$ck" >"$ck.log" 2>&1 &
a=$!
mkdir -p "$tmp/exports"
i=0
bad=""
while kill -0 $a 2>/dev/null; do
    i=$((i + 1))
    out=$tmp/exports/e$i
    "$fptq" export --checkpoint "$ck" --format dequantized --out "$out" --quiet >"$out.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        [ -s "$out/config.json" ] || bad="$bad [export $i: exit 0 without config.json]"
    elif ! { [ $rc -eq 1 ] && grep -q "is not finished\|has no index.h5\|does not exist\|No such file" "$out.log" && [ ! -e "$out" ]; }; then
        bad="$bad [export $i rc=$rc: $(short "$out.log" 300)]"
    fi
    sleep 0.2
done
wait $a
rca=$?
[ $rca -eq 0 ] && [ -z "$bad" ] && [ $i -ge 3 ]
check "$i exports during a run: each refuses an unfinished checkpoint (leaving nothing) or is complete" $? \
    "rc_a=$rca$bad $(short "$ck.log")"
"$fptq" export --checkpoint "$ck" --format dequantized --out "$tmp/exports/final" --quiet >"$tmp/final.log" 2>&1
check "  the export after the run succeeds" $? "$(short "$tmp/final.log")"
sound "$ck" "exports during a run"

finish
