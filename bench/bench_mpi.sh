#!/usr/bin/env bash
# Multi-rank speedup of fptq quantize on a synthetic Llama-shaped model
# (hidden 1024, 8 layers, intermediate 2816, 16 heads / 4 KV heads, BF16,
# made by make_synthetic): 1 rank, then 2 ranks in 2 stages with
# --propagate stage, each rank single-threaded (OPENBLAS_NUM_THREADS=1).
# Beside it, the machine's own limit: two independent 1-rank runs at once,
# whose throughput bounds what 2 ranks can reach here.
# usage: bench/bench_mpi.sh [BUILD_DIR] [CALIB_SAMPLES] [CALIB_SEQLEN]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
samples=${2:-16}
seqlen=${3:-128}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OPENBLAS_NUM_THREADS=1

"$build/make_synthetic" "$tmp/model" >/dev/null
args=(--model "$tmp/model" --calib "$tmp/model/tokens.npy" --calib-samples "$samples" --calib-seqlen "$seqlen"
      --scheme w4a16 --method gptq --group-size 128 --quiet)
now() { date +%s.%N; }
mpi=(mpirun --allow-run-as-root --oversubscribe -x OPENBLAS_NUM_THREADS=1)

t0=$(now); "$build/fptq" quantize "${args[@]}" --out "$tmp/r1" >/dev/null; t1=$(now)
one=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
t0=$(now); "${mpi[@]}" -np 2 "$build/fptq" quantize "${args[@]}" --stages 2 --propagate stage --out "$tmp/r2" >/dev/null; t1=$(now)
two=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
t0=$(now); "${mpi[@]}" -np 2 "$build/fptq" quantize "${args[@]}" --stages 1 --out "$tmp/r3" >/dev/null; t1=$(now)
dp=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
t0=$(now)
"$build/fptq" quantize "${args[@]}" --out "$tmp/p1" >/dev/null &
"$build/fptq" quantize "${args[@]}" --out "$tmp/p2" >/dev/null
wait
t1=$(now)
pair=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')

echo "synthetic Llama: hidden 1024, 8 layers, intermediate 2816; calibration $samples x $seqlen tokens; GPTQ w4a16 g128"
echo "cores: $(nproc); OPENBLAS_NUM_THREADS=1 per rank"
awk -v one="$one" -v two="$two" -v dp="$dp" -v pair="$pair" 'BEGIN {
    printf "%-44s %8s %8s\n", "run", "seconds", "speedup"
    printf "%-44s %8.1f %8s\n", "1 rank", one, "1.00x"
    printf "%-44s %8.1f %7.2fx\n", "2 ranks, --stages 2 --propagate stage", two, one / two
    printf "%-44s %8.1f %7.2fx\n", "2 ranks, --stages 1 (samples and rows split)", dp, one / dp
    printf "%-44s %8.1f %7.2fx\n", "machine limit: two 1-rank runs at once", pair, 2 * one / pair
}'
