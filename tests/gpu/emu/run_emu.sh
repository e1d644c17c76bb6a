#!/bin/bash
# The GPU parity test on a machine without a GPU: kernels/cuda/*.cu compiled
# as C++ against a CPU emulation of the CUDA runtime, cuBLAS and cuSOLVER
# (inc/cuda_emu.h: each CUDA thread a fiber, __syncthreads and warp shuffles
# as barriers among them, cuBLAS as column-major CBLAS, cuSOLVER as
# column-major LAPACKE), then run against the CPU reference. It checks the
# kernels' index arithmetic and the libraries' argument mappings; the GPU's
# own behaviour and speed only a GPU shows (tests/gpu/device_check.sh).
#   tests/gpu/emu/run_emu.sh [WORKDIR]     (FPTQ_SEED=n repeats inputs)
# Needs g++, OpenBLAS, LAPACKE; no CUDA. About a minute on two cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
emu="$repo/tests/gpu/emu"
W=${1:-$(mktemp -d /tmp/fptq-emu.XXXXXX)}
mkdir -p "$W/kernels/cuda"
# kernel launches become calls of the emulator's launcher; dynamic shared
# memory becomes a global array of emu.cpp
for f in cuda_backend cuda_quant; do
    "$emu/translate.sh" "$repo/kernels/cuda/$f.cu" "$W/kernels/cuda/$f.cpp"
done
read -ra blas_inc < <(pkg-config --cflags openblas 2>/dev/null || true)
FL=(-O1 -g -ffp-contract=off -DFPTQ_HAVE_CUDA=1 -I"$emu/inc" -I"$repo" "${blas_inc[@]}")
cd "$W"
g++ -std=c++17 "${FL[@]}" -c "$emu/emu.cpp" -o emu.o
for f in cuda_backend cuda_quant; do
    # the sources' own includes resolve in the repository's kernels/cuda
    g++ -std=c++17 "${FL[@]}" -I"$repo/kernels/cuda" -Wall -Wno-unused-function -c "kernels/cuda/$f.cpp" -o "$f.o"
done
for f in common/status kernels/backend kernels/cpu_ops kernels/quant kernels/smooth tests/gpu/test_gpu_parity \
    bench/bench_layer_cuda; do
    gcc -std=c11 "${FL[@]}" -Wall -c "$repo/$f.c" -o "$(basename "$f").o"
done
lib=(emu.o cuda_backend.o cuda_quant.o status.o backend.o cpu_ops.o quant.o smooth.o -lopenblas -llapacke -lm)
g++ -o parity_emu test_gpu_parity.o "${lib[@]}"
g++ -o bench_emu bench_layer_cuda.o "${lib[@]}"
echo "built in $W"
OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2} ./bench_emu --shapes tiny --samples 2 --seqlen 64 --chunk 1 --rate-size 256 \
    >bench_emu.log 2>&1 || { cat bench_emu.log; echo "bench_layer_cuda (tiny, emulated) failed"; exit 1; }
echo "bench_layer_cuda --shapes tiny (emulated): ran"
OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2} ./parity_emu
