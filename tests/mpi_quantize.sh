#!/usr/bin/env bash
# fptq quantize under mpirun on stories260K (GPTQ w4a16 g32): 1, 2, 3, 4
# ranks and 4 ranks in 2 stages agree with one rank (perplexity within
# 0.5%); an interrupted 2-rank run resumes to the digest of an uninterrupted
# one; a rank killed with SIGKILL or failing brings mpirun down within 30 s
# with a message naming the rank, and --resume then finishes the job.
# usage: mpi_quantize.sh FPTQ_BIN EXAMPLES_DIR
set -u
fptq=$1
ex=$2
. "$(dirname "$0")/testlib.sh"

mpi() { # np, then mpirun's program and arguments; stops after 120 s whatever happens
    local np=$1
    shift
    timeout -s KILL 120 mpirun --allow-run-as-root --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS=1 \
        ${FPTQ_FAULT:+-x FPTQ_FAULT="$FPTQ_FAULT"} "$@"
}
recipe=(--model "$ex/stories260K" --calib "$ex/tinystories.tok512.npy" --calib-samples 128 --calib-seqlen 256
        --scheme w4a16 --method gptq --group-size 32 --quiet)
ppl_of() { "$fptq" eval --checkpoint "$1" --tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 16 --start 40960 --quiet |
           sed -n 's/.* ppl=\([0-9.]*\)$/\1/p'; }
digest_of() { "$fptq" inspect "$1" | sed -n 's/^digest *\([0-9a-f]\{64\}\)$/\1/p'; }

# --- world sizes and layouts ---
table="ranks | stages | propagate | ppl | vs 1 rank | seconds"
base=""
for layout in "1 1 quantized" "2 1 quantized" "3 1 quantized" "4 1 quantized" "4 2 quantized" "2 2 stage" "4 2 stage"; do
    set -- $layout
    np=$1 stages=$2 prop=$3
    out="$tmp/np$np-s$stages-$prop"
    t0=$(date +%s.%N)
    mpi "$np" "$fptq" quantize "${recipe[@]}" --stages "$stages" --propagate "$prop" --out "$out" >"$out.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    check "mpirun -np $np --stages $stages --propagate $prop" $rc "$(tail -5 "$out.log")"
    ppl=$(ppl_of "$out")
    [ -z "$base" ] && base=$ppl
    table+=$'\n'$(awk -v n="$np" -v s="$stages" -v p="$prop" -v x="$ppl" -v b="$base" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%5d | %6d | %9s | %.4f | %+.3f%% | %.1f", n, s, p, x, 100 * (x / b - 1), t1 - t0 }')
    if [ "$prop" = quantized ]; then
        awk -v x="$ppl" -v b="$base" 'BEGIN { d = x / b - 1; exit !(d < 0.005 && d > -0.005) }'
        check "  ppl $ppl within 0.5% of one rank's $base" $? "ppl $ppl vs $base"
    fi
done
echo "$table"

# --- interrupted and resumed 2-rank run has the uninterrupted digest ---
full=$(digest_of "$tmp/np2-s1-quantized")
mpi 2 "$fptq" quantize "${recipe[@]}" --out "$tmp/r2" --max-layers 2 >"$tmp/r2.log" 2>&1
rc=$?
[ $rc -eq 3 ] && grep -q "resumable" "$tmp/r2.log" && "$fptq" inspect "$tmp/r2" | grep -q "2 of 5 done"
check "2 ranks stop after --max-layers 2" $? "rc=$rc $(tail -5 "$tmp/r2.log")"
mpi 2 "$fptq" quantize "${recipe[@]}" --out "$tmp/r2" --resume >"$tmp/r2b.log" 2>&1
check "2 ranks resume" $? "$(tail -5 "$tmp/r2b.log")"
resumed=$(digest_of "$tmp/r2")
[ -n "$full" ] && [ "$full" = "$resumed" ]
check "resumed 2-rank digest == uninterrupted 2-rank digest" $? "full=$full resumed=$resumed"

# --- a rank killed with SIGKILL in the middle of a 4-rank run ---
t0=$(date +%s)
FPTQ_FAULT=kill:2:2 mpi 4 "$fptq" quantize "${recipe[@]}" --out "$tmp/k4" >"$tmp/k4.log" 2>&1
rc=$?
el=$(($(date +%s) - t0))
[ $rc -ne 0 ] && [ $el -le 30 ]
check "SIGKILL of rank 2: mpirun exits non-zero (rc=$rc) within 30 s (${el} s)" $? "$(tail -8 "$tmp/k4.log")"
"$fptq" inspect "$tmp/k4" >"$tmp/k4.insp" 2>&1
grep -q "2 of 5 done" "$tmp/k4.insp"
check "  finished layers intact after the kill" $? "$(cat "$tmp/k4.insp")"
mpi 4 "$fptq" quantize "${recipe[@]}" --out "$tmp/k4" --resume >"$tmp/k4b.log" 2>&1
rc=$?
[ $rc -eq 0 ] && [ -n "$(digest_of "$tmp/k4")" ] && [ -n "$(ppl_of "$tmp/k4")" ]
check "  --resume completes a valid checkpoint" $? "rc=$rc $(tail -5 "$tmp/k4b.log")"
[ "$(digest_of "$tmp/k4")" = "$(digest_of "$tmp/np4-s1-quantized")" ]
check "  and its digest equals the uninterrupted 4-rank run's" $? "differs"

# --- a rank that fails (as on a bad tensor) ---
t0=$(date +%s)
FPTQ_FAULT=fail:1:1 mpi 2 "$fptq" quantize "${recipe[@]}" --out "$tmp/f2" >"$tmp/f2.log" 2>&1
rc=$?
el=$(($(date +%s) - t0))
[ $rc -ne 0 ] && [ $el -le 30 ] && grep -q "fptq rank 1: error: .*injected failure on rank 1 at layer 1" "$tmp/f2.log"
check "a failing rank: one message naming rank 1 and the cause, world down in ${el} s" $? "rc=$rc $(tail -8 "$tmp/f2.log")"

# --- resume with another world size ---
mpi 2 "$fptq" quantize "${recipe[@]}" --out "$tmp/w" --max-layers 1 >/dev/null 2>&1
"$fptq" quantize "${recipe[@]}" --out "$tmp/w" --resume >"$tmp/w.out" 2>"$tmp/w.err"
rc=$?
[ $rc -eq 0 ] && grep -q "not be bit-identical" "$tmp/w.err" && grep -q "4 quantized now, 1 restored" "$tmp/w.out"
check "resume of a 2-rank checkpoint on 1 rank works, with a warning" $? "rc=$rc $(cat "$tmp/w.out" "$tmp/w.err")"

finish
