#!/bin/bash
# The GPU check, in one go on a lent GPU machine (no package registry, no
# network): build with -DFPTQ_CUDA=ON against the Debian packages carried in
# .gpu-deps/debs (tests/gpu/fetch_debs.sh) where the system lacks them, run
# the parity test, the end-to-end check (fptq quantize + eval on
# stories260K, --backend cpu against --backend cuda, eval of the fp model on
# both, 2 ranks sharing the GPU) and the layer benchmark, then, with the
# time left, fptq quantize itself at 70B layer shapes; in under 8 minutes;
# logs and summary.md go to OUTDIR.
#   tests/gpu/device_check.sh OUTDIR
# With the run tool: carry [".gpu-deps/debs"], command "tests/gpu/device_check.sh $OUT".
set -uo pipefail
OUTDIR=${1:?usage: device_check.sh OUTDIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
. tests/gpu/gpu_deps.sh

START=$(date +%s)
BUDGET=${DEVICE_CHECK_BUDGET_S:-470} # seconds, all steps together
LOG="$OUTDIR/device_check.log"
SUMMARY="$OUTDIR/summary.md"
STEPS="$OUTDIR/.steps"
: >"$LOG"
: >"$STEPS"
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }
say() { echo "[$(elapsed)s] $*" | tee -a "$LOG"; }
step() { echo "| $1 | $2 | $3 |" >>"$STEPS"; } # name, status, seconds

# ---- the machine ----------------------------------------------------------------------
{
    echo "## machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    grep -E '^(PRETTY_NAME)=' /etc/os-release 2>&1
    ldd --version 2>&1 | head -1
    command -v nvcc >/dev/null && nvcc --version | tail -2
    ls -d /usr/local/cuda* 2>&1
    cmake --version 2>&1 | head -1
    gcc --version 2>&1 | head -1
    nproc
} >"$OUTDIR/env.log" 2>&1
DEVICE=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
say "device: ${DEVICE:-none found by nvidia-smi}"
export PATH="$PATH:/usr/local/cuda/bin"
JOBS=$(nproc 2>/dev/null || echo 8)

# ---- dependencies: the system's, or the carried root ------------------------------------
CMAKE_ARGS=()
RUN_ENV=""
system_has_deps() {
    command -v pkg-config >/dev/null 2>&1 &&
        pkg-config --exists libcjson openblas hdf5 cmocka 2>/dev/null &&
        [ -e /usr/include/lapacke.h ] && command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1
}
ROOT="$repo/.gpu-deps/root"
# DEVICE_CHECK_DEPS=carried uses the carried root even where the system has the packages (to try it)
if [ "${DEVICE_CHECK_DEPS:-}" != carried ] && system_has_deps; then
    DEPS="system"
elif [ -d .gpu-deps/debs ] && ls .gpu-deps/debs/*.deb >/dev/null 2>&1; then
    t0=$(date +%s)
    if [ ! -x "$ROOT/usr/bin/pkgconf" ]; then
        rm -rf "$ROOT"
        gpu_deps_extract .gpu-deps/debs "$ROOT" >>"$LOG" 2>&1 || say "unpacking .gpu-deps/debs failed"
    fi
    mapfile -t CMAKE_ARGS < <(gpu_deps_cmake_args "$ROOT")
    RUN_ENV=$(gpu_deps_run_env "$ROOT")
    DEPS="carried (.gpu-deps, $(ls .gpu-deps/debs/*.deb | wc -l) packages)"
    step "unpack .gpu-deps" ok $(($(date +%s) - t0))
else
    DEPS="missing: the system lacks them and .gpu-deps/debs was not carried"
fi
say "dependencies: $DEPS"
# our binaries run with the root's libraries (OpenMPI's relocation included); compilers do not
run_with_deps() { (eval "$RUN_ENV"; "$@"); }

# ---- NCCL: the toolkit's, else the one in python's nvidia-nccl wheel (PyTorch's) ----------------
NCCL_DIR=""
if [ ! -e /usr/local/cuda/include/nccl.h ] && [ ! -e /usr/include/nccl.h ]; then
    NCCL_DIR=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)
    [ -n "$NCCL_DIR" ] && [ -e "$NCCL_DIR/include/nccl.h" ] && CMAKE_ARGS+=("-DNCCL_ROOT=$NCCL_DIR") || NCCL_DIR=""
fi
say "NCCL: ${NCCL_DIR:-toolkit or system}"

# ---- build ----------------------------------------------------------------------------------
BUILD="$repo/build-gpu"
t0=$(date +%s)
BUILT="cmake"
FPTQ=""
cmake -S . -B "$BUILD" -DFPTQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
    "${CMAKE_ARGS[@]}" >"$OUTDIR/build.log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
    limit=$(( $(left) > 260 ? $(left) - 200 : 60 ))
    timeout $limit cmake --build "$BUILD" -j "$JOBS" --target fptq >>"$OUTDIR/build.log" 2>&1 && FPTQ="$BUILD/fptq"
    timeout $limit cmake --build "$BUILD" -j "$JOBS" --target test_gpu_parity bench_layer_cuda >>"$OUTDIR/build.log" 2>&1
    rc=$?
fi
PARITY="$BUILD/tests/test_gpu_parity" BENCH="$BUILD/bench_layer_cuda"
if [ $rc -ne 0 ]; then
    # The GPU binaries need only OpenBLAS, LAPACKE and CUDA: build them directly.
    say "cmake build failed (rc=$rc, build.log); building the GPU binaries with nvcc directly"
    BUILT="direct (cmake failed)"
    D="$repo/build-gpu-direct"
    mkdir -p "$D"
    INC=(-I"$repo")
    LIBS=()
    if [ "$DEPS" != system ]; then
        INC+=(-isystem "$ROOT/usr/include" -isystem "$ROOT/usr/include/$GPU_DEPS_MA/openblas-pthread")
        for dir in $(gpu_deps_libdirs "$ROOT" | tr ':' ' '); do LIBS+=(-L"$dir" -Xlinker -rpath="$dir"); done
    else
        read -ra pc_flags < <(pkg-config --cflags openblas 2>/dev/null)
        INC+=("${pc_flags[@]}")
    fi
    NCCL_SRC=() NCCL_DEF=() NCCL_LIB=()
    if [ -e /usr/local/cuda/include/nccl.h ] || [ -e /usr/include/nccl.h ]; then
        NCCL_SRC=(kernels/cuda/nccl_coll.cu) NCCL_DEF=(-DFPTQ_HAVE_NCCL=1) NCCL_LIB=(-lnccl)
    elif [ -n "$NCCL_DIR" ]; then
        NCCL_SRC=(kernels/cuda/nccl_coll.cu) NCCL_DEF=(-DFPTQ_HAVE_NCCL=1)
        NCCL_LIB=(-L"$NCCL_DIR/lib" -l:libnccl.so.2 -Xlinker -rpath="$NCCL_DIR/lib")
        INC+=(-isystem "$NCCL_DIR/include")
    fi
    (
        set -x
        for f in common/status.c kernels/backend.c kernels/cpu_ops.c kernels/quant.c kernels/smooth.c \
            tests/gpu/test_gpu_parity.c bench/bench_layer_cuda.c; do
            gcc -std=c11 -O2 -Wall -DFPTQ_HAVE_CUDA=1 "${NCCL_DEF[@]}" "${INC[@]}" \
                -I/usr/local/cuda/include -c "$f" -o "$D/$(basename "$f").o" || exit 1
        done
        for f in kernels/cuda/cuda_backend.cu kernels/cuda/cuda_quant.cu "${NCCL_SRC[@]}"; do
            nvcc -O2 -arch=sm_90 -DFPTQ_HAVE_CUDA=1 "${NCCL_DEF[@]}" "${INC[@]}" -c "$f" -o "$D/$(basename "$f").o" || exit 1
        done
        common=("$D"/status.c.o "$D"/backend.c.o "$D"/cpu_ops.c.o "$D"/quant.c.o "$D"/smooth.c.o
            "$D"/cuda_backend.cu.o "$D"/cuda_quant.cu.o)
        [ ${#NCCL_SRC[@]} -gt 0 ] && common+=("$D"/nccl_coll.cu.o)
        for b in test_gpu_parity bench_layer_cuda; do
            nvcc -o "$D/$b" "$D/$b.c.o" "${common[@]}" "${LIBS[@]}" -lopenblas -llapacke -lcublas -lcusolver \
                "${NCCL_LIB[@]}" -lm || exit 1
        done
    ) >>"$OUTDIR/build.log" 2>&1
    rc=$?
    PARITY="$D/test_gpu_parity" BENCH="$D/bench_layer_cuda"
fi
[ -z "$FPTQ" ] && BUILT="$BUILT, fptq not built"

step "build ($BUILT)" "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc=$rc")" $(($(date +%s) - t0))
say "build: rc=$rc"

# ---- parity ------------------------------------------------------------------------------------
t0=$(date +%s)
if [ -x "$PARITY" ]; then
    OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-8} run_with_deps timeout 150 "$PARITY" >"$OUTDIR/parity.log" 2>&1
    prc=$?
    pline=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$OUTDIR/parity.log" | tail -1)
    case $prc in
    0) pst="PASS: $pline" ;;
    77) pst=$(grep -m1 '^SKIP' "$OUTDIR/parity.log") ;;
    124) pst="TIMEOUT after 150 s ($pline)" ;;
    *) pst="FAIL rc=$prc: ${pline:-$(tail -1 "$OUTDIR/parity.log")}" ;;
    esac
else
    pst="not built"
fi
step parity "$pst" $(($(date +%s) - t0))
say "parity: $pst"

# ---- end to end: stories260K --------------------------------------------------------------------
t0=$(date +%s)
: >"$OUTDIR/e2e.log"
E2E_CPU="not run" E2E_CUDA="not run"
if [ -n "$FPTQ" ] && [ -x "$FPTQ" ]; then
    tmp=$(mktemp -d)
    ex="$repo/examples"
    qargs=(--model "$ex/stories260K" --calib "$ex/tinystories.tok512.npy" --calib-samples 128
        --calib-seqlen 256 --scheme w4a16 --method gptq --group-size 32 --quiet)
    eargs=(--tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 16 --start 40960 --quiet)
    ppl_of() { run_with_deps "$FPTQ" eval --checkpoint "$1" "${eargs[@]}" 2>>"$OUTDIR/e2e.log" |
        tee -a "$OUTDIR/e2e.log" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p'; }
    echo "== quantize --backend cpu" >>"$OUTDIR/e2e.log"
    if run_with_deps timeout 120 "$FPTQ" quantize "${qargs[@]}" --backend cpu --out "$tmp/cpu" >>"$OUTDIR/e2e.log" 2>&1; then
        ppl_cpu=$(ppl_of "$tmp/cpu")
        E2E_CPU="ok, ppl ${ppl_cpu:-?}"
    else
        E2E_CPU="FAILED (e2e.log)"
    fi
    echo "== quantize --backend cuda" >>"$OUTDIR/e2e.log"
    run_with_deps timeout 120 "$FPTQ" quantize "${qargs[@]}" --backend cuda --out "$tmp/cuda" >"$tmp/cuda.out" 2>&1
    crc=$?
    cat "$tmp/cuda.out" >>"$OUTDIR/e2e.log"
    if [ $crc -eq 0 ]; then
        ppl_cuda=$(ppl_of "$tmp/cuda")
        rel=$(awk -v a="${ppl_cuda:-0}" -v b="${ppl_cpu:-0}" 'BEGIN { if (b > 0) printf "%.3f", 100 * (a - b) / b; else print "?" }')
        ok=$(awk -v r="$rel" 'BEGIN { print (r != "?" && r < 0.5 && r > -0.5) ? "PASS" : "FAIL" }')
        E2E_CUDA="$ok, ppl ${ppl_cuda:-?} (${rel}% from the cpu run; bar 0.5%)"
    else
        E2E_CUDA="FAILED (rc=$crc): $(grep -m1 -i 'error' "$tmp/cuda.out" | cut -c1-220)"
    fi
    # the second stream's ordering: one layer buffer, nothing overlapped, must give the same checkpoint
    E2E_PREFETCH="not run"
    if [ $crc -eq 0 ]; then
        echo "== quantize --backend cuda, FPTQ_PREFETCH=0" >>"$OUTDIR/e2e.log"
        FPTQ_PREFETCH=0 run_with_deps timeout 120 "$FPTQ" quantize "${qargs[@]}" --backend cuda --out "$tmp/cuda1" \
            >>"$OUTDIR/e2e.log" 2>&1
        d2=$(run_with_deps "$FPTQ" inspect "$tmp/cuda" | sed -n 's/^digest *//p')
        d1=$(run_with_deps "$FPTQ" inspect "$tmp/cuda1" | sed -n 's/^digest *//p')
        if [ -n "$d1" ] && [ "$d1" = "$d2" ]; then
            E2E_PREFETCH="PASS: the streaming run's digest ${d2:0:16}"
        else
            E2E_PREFETCH="FAIL: digests differ (streaming ${d2:0:16}, one buffer ${d1:0:16}); see e2e.log"
        fi
    fi
    # the forward in micro-batches on the GPU (each group's input recomputed): within 0.5% of the cpu too
    E2E_MICRO="not run"
    if [ $crc -eq 0 ]; then
        echo "== quantize --backend cuda, FPTQ_MICRO_SEQS=48" >>"$OUTDIR/e2e.log"
        FPTQ_MICRO_SEQS=48 run_with_deps timeout 120 "$FPTQ" quantize "${qargs[@]}" --backend cuda --out "$tmp/cudam" \
            >>"$OUTDIR/e2e.log" 2>&1
        ppl_m=$(ppl_of "$tmp/cudam")
        relm=$(awk -v a="${ppl_m:-0}" -v b="${ppl_cpu:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", 100 * (a - b) / b; else print "?" }')
        okm=$(awk -v r="$relm" 'BEGIN { print (r != "?" && r < 0.5 && r > -0.5) ? "PASS" : "FAIL" }')
        E2E_MICRO="$okm, ppl ${ppl_m:-?} (${relm}% from the cpu run; bar 0.5%)"
    fi
    # eval of the fp model on the GPU against the CPU (fp32 both: the same to ~1e-5)
    echo "== eval --backend cpu / cuda, fp model" >>"$OUTDIR/e2e.log"
    fp_args=(--model "$ex/stories260K" "${eargs[@]}")
    pe_cpu=$(run_with_deps "$FPTQ" eval "${fp_args[@]}" --backend cpu 2>>"$OUTDIR/e2e.log" | tee -a "$OUTDIR/e2e.log" |
        sed -n 's/.* ppl=\([0-9.]*\)$/\1/p')
    pe_cuda=$(run_with_deps timeout 60 "$FPTQ" eval "${fp_args[@]}" --backend cuda 2>>"$OUTDIR/e2e.log" |
        tee -a "$OUTDIR/e2e.log" | sed -n 's/.* ppl=\([0-9.]*\)$/\1/p')
    E2E_EVAL=$(awk -v a="${pe_cuda:-0}" -v b="${pe_cpu:-0}" 'BEGIN { if (a > 0 && b > 0) {
        d = a / b - 1; printf "%s, ppl %s vs cpu %s (%.1e relative; bar 1e-4)", (d < 1e-4 && d > -1e-4) ? "PASS" : "FAIL", a, b, d }
        else print "FAILED (e2e.log)" }')
    # two ranks on the one GPU: statistics staged through the host (NCCL needs a GPU per rank)
    E2E_NP2="not run"
    if command -v mpirun >/dev/null 2>&1 && [ "$(left)" -gt 200 ]; then
        echo "== mpirun -np 2 quantize --backend cuda" >>"$OUTDIR/e2e.log"
        np2args=()
        for a in "${qargs[@]}"; do [ "$a" != --quiet ] && np2args+=("$a"); done
        run_with_deps timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 "$FPTQ" quantize "${np2args[@]}" \
            --backend cuda --out "$tmp/np2" >>"$OUTDIR/e2e.log" 2>&1
        nrc=$?
        if [ $nrc -eq 0 ]; then
            ppl_np2=$(ppl_of "$tmp/np2")
            rel2=$(awk -v a="${ppl_np2:-0}" -v b="${ppl_cpu:-0}" 'BEGIN { if (b > 0) printf "%.3f", 100 * (a - b) / b; else print "?" }')
            E2E_NP2="ok, ppl ${ppl_np2:-?} (${rel2}% from the 1-rank cpu run)"
        else
            E2E_NP2="FAILED (rc=$nrc, e2e.log)"
        fi
    fi
    grep -m1 "device memory:" "$tmp/cuda.out" >>"$OUTDIR/e2e.log"
    rm -rf "$tmp"
else
    E2E_CPU="not run: fptq was not built"
fi
step "e2e stories260K --backend cpu" "$E2E_CPU" $(($(date +%s) - t0))
step "e2e stories260K --backend cuda" "$E2E_CUDA" 0
step "e2e cuda streaming vs FPTQ_PREFETCH=0" "${E2E_PREFETCH:-not run}" 0
step "e2e cuda in micro-batches of 48 samples" "${E2E_MICRO:-not run}" 0
step "e2e eval fp model --backend cuda" "${E2E_EVAL:-not run}" 0
step "e2e 2 ranks on the GPU (staged)" "${E2E_NP2:-not run}" 0
say "e2e: cpu: $E2E_CPU; cuda: $E2E_CUDA; eval: ${E2E_EVAL:-not run}; 2 ranks: ${E2E_NP2:-not run}"

# ---- benchmark -------------------------------------------------------------------------------------
t0=$(date +%s)
remaining=$(($(left) - 15))
if [ -x "$BENCH" ] && [ $remaining -gt 30 ]; then
    bargs=()
    # a full-size run takes about 2 minutes on an H100; with less time, fewer calibration samples
    [ $remaining -lt 200 ] && bargs=(--samples 32)
    [ $remaining -lt 90 ] && bargs=(--samples 8 --shapes 405b)
    run_with_deps timeout $remaining "$BENCH" "${bargs[@]}" >"$OUTDIR/bench.log" 2>&1
    brc=$?
    case $brc in
    0) bst="ok ${bargs[*]}" ;;
    77) bst=$(grep -m1 '^SKIP' "$OUTDIR/bench.log") ;;
    124) bst="TIMEOUT after $remaining s" ;;
    *) bst="FAIL rc=$brc" ;;
    esac
else
    bst="not run ($([ -x "$BENCH" ] && echo "$remaining s left" || echo "not built"))"
fi
step benchmark "$bst" $(($(date +%s) - t0))
say "benchmark: $bst"

# ---- the worker at Llama-3.1-70B layer shapes (with what time is left) ------------------------------
# fptq quantize --backend cuda itself on a synthetic 2-layer model of 70B
# shapes: seconds per layer beside bench_layer_cuda's kernel-level phases
# show the worker's own overhead (host steps, uploads, streaming).
t0=$(date +%s)
WORKER="not run ($(left) s left)"
SYNTH="$BUILD/make_synthetic"
if [ -n "$FPTQ" ] && [ "$(left)" -gt 120 ]; then
    timeout 60 cmake --build "$BUILD" -j "$JOBS" --target make_synthetic >>"$OUTDIR/build.log" 2>&1
    syn=$(mktemp -d)
    if [ -x "$SYNTH" ] && run_with_deps timeout 60 "$SYNTH" "$syn/m" --hidden 8192 --layers 2 --intermediate 28672 \
        --heads 64 --kv-heads 8 --vocab 2048 --tokens 40000 >"$OUTDIR/worker.log" 2>&1; then
        # bf16 GEMMs, as the benchmark's forward
        FPTQ_CUDA_GEMM=bf16 run_with_deps timeout $(($(left) - 10)) "$FPTQ" quantize --model "$syn/m" --calib "$syn/m/tokens.npy" \
            --calib-samples 16 --calib-seqlen 2048 --scheme w4a16 --method gptq --group-size 128 --backend cuda \
            --verbose --out "$syn/q" >>"$OUTDIR/worker.log" 2>&1
        wrc=$?
        per=$(sed -n 's/.*layer \([0-9]*\)\/2 quantized in \([0-9.]*\) s.*/\2/p' "$OUTDIR/worker.log" | tr '\n' ' ')
        mem=$(grep -m1 -o 'device memory: about [^(]*' "$OUTDIR/worker.log")
        WORKER="$([ $wrc -eq 0 ] && echo ok || echo "FAILED rc=$wrc"): 16 x 2048 tokens, bf16 GEMMs, seconds per layer: ${per:-?}; ${mem:-}"
    else
        WORKER="not run: make_synthetic failed (worker.log)"
    fi
    rm -rf "$syn"
fi
step "worker, 70B layer shapes" "$WORKER" $(($(date +%s) - t0))
say "worker: $WORKER"

# ---- summary -------------------------------------------------------------------------------------------
{
    echo "# fptq device check, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "device: ${DEVICE:-?}; $(grep PRETTY_NAME /etc/os-release 2>/dev/null | cut -d= -f2); dependencies: $DEPS; total $(elapsed) s"
    echo
    echo "| step | status | seconds |"
    echo "|---|---|---|"
    cat "$STEPS"
    echo
    echo "## parity (tests/gpu/test_gpu_parity)"
    echo
    echo "| op | status | max error | tolerance |"
    echo "|---|---|---|---|"
    if [ -f "$OUTDIR/parity.log" ]; then
        awk -F'|' '/^\| / && ($4 ~ /PASS|FAIL/) {
            gsub(/^ +| +$/, "", $2); gsub(/^ +| +$/, "", $3); gsub(/^ +| +$/, "", $4);
            gsub(/^ +| +$/, "", $5); gsub(/^ +| +$/, "", $6);
            printf "| %s (%s) | %s | %s | %s |\n", $2, $3, $4, $5, $6 }' "$OUTDIR/parity.log"
        grep -E '^GPU parity on|^[0-9]+ passed' "$OUTDIR/parity.log"
    fi
    echo
    echo "## benchmark (bench/bench_layer_cuda)"
    echo
    if [ -f "$OUTDIR/bench.log" ]; then
        grep -E '^(NVIDIA|.*TFLOP/s)|^(70b|405b):|^405B|^floor|^samples' "$OUTDIR/bench.log"
        echo
        grep -E '^\| (bench|extrapolation)|^\|---' "$OUTDIR/bench.log"
    fi
} >"$SUMMARY"
rm -f "$STEPS"
cat "$SUMMARY"
grep -q "^| parity | PASS" "$SUMMARY"
