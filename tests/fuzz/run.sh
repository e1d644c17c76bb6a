#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang
# (-fsanitize=fuzzer,address,undefined) and runs each for SECONDS (default 60)
# from its seed corpus (tests/fuzz/corpus/NAME, committed small; what the run
# finds is kept in a scratch copy, not committed). Any crash, leak, sanitizer
# report or timeout fails the run, and the input that caused it is left in
# OUT_DIR (printed). Longer run: tests/fuzz/run.sh 3600.
# usage: run.sh [SECONDS] [OUT_DIR]    (FPTQ_FUZZ=skip: exit 77)
set -u
secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
out=${2:-$(mktemp -d "${TMPDIR:-/tmp}/fptq_fuzz.XXXXXX")}
if [ "${FPTQ_FUZZ:-}" = skip ]; then echo "skipped: FPTQ_FUZZ=skip"; exit 77; fi
cc=${FPTQ_FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null; then echo "FAIL no $cc (Debian: apt-get install clang libclang-rt-14-dev)"; exit 1; fi
mkdir -p "$out"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$src" -DFPTQ_SOURCE_DIR="\"$src\"")
libs=($(pkg-config --cflags --libs libcjson libpcre2-8 libutf8proc) -lm)
# the library code each harness needs, compiled into it
tok_src=("$src/io/tokenizer.c" "$src/io/json_util.c" "$src/io/npy.c" "$src/common/status.c" "$src/common/sha256.c" "$src/common/fileio.c")
declare -A SOURCES=(
    [fuzz_tokenizer_json]="${tok_src[*]}"
    [fuzz_tokenizer_encode]="${tok_src[*]}"
)
# a whole tokenizer.json is large; a text only needs to be long enough to
# reach every path (runs of 10,000 spaces are the unit tests' and run.sh's)
declare -A MAXLEN=([fuzz_tokenizer_json]=131072 [fuzz_tokenizer_encode]=4096)
pass=0
fail=0
for h in "${!SOURCES[@]}"; do
    bin="$out/$h"
    # shellcheck disable=SC2086
    if ! "$cc" "${flags[@]}" "$here/$h.c" ${SOURCES[$h]} "${libs[@]}" -o "$bin" >"$out/$h.build.log" 2>&1; then
        echo "FAIL $h: build: $(tail -5 "$out/$h.build.log")"
        fail=$((fail + 1))
        continue
    fi
    corpus="$out/$h.corpus"
    rm -rf "$corpus"
    cp -r "$here/corpus/$h" "$corpus"
    ( cd "$out" && ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$bin" "$corpus" \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len="${MAXLEN[$h]}" -print_final_stats=1 \
        -artifact_prefix="$out/$h-" >"$out/$h.log" 2>&1 )
    rc=$?
    stats=$(grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/$h.log" | tr -s ' ' | tr '\n' ' ')
    cov=$(grep -oE "cov: [0-9]+ ft: [0-9]+" "$out/$h.log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "ok $h: ${secs} s, $stats $cov, corpus $(ls "$corpus" | wc -l) inputs"
        pass=$((pass + 1))
    else
        echo "FAIL $h (exit $rc): $(grep -E "ERROR|SUMMARY|Test unit written" "$out/$h.log" | head -5)"
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
