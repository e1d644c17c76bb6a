#!/usr/bin/env bash
# cli_bad_inputs.sh FPTQ_BIN MAKE_BADFILES_BIN EXAMPLES_DIR
# Every handcrafted bad input must make `fptq eval` fail cleanly: non-zero exit
# without a signal, and an error on stderr naming the file and the problem.
set -u

if [ $# -ne 3 ]; then
    echo "usage: $0 FPTQ_BIN MAKE_BADFILES_BIN EXAMPLES_DIR" >&2
    exit 2
fi
FPTQ=$1
MAKE_BADFILES=$2
EXAMPLES=$3
GOOD_MODEL=$EXAMPLES/stories260K
GOOD_TOKENS=$EXAMPLES/tinystories.tok512.npy

work=$(mktemp -d "${TMPDIR:-/tmp}/fptq_cli_bad.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

if ! "$MAKE_BADFILES" "$GOOD_MODEL" "$work/cases" >"$work/cases.tsv" 2>"$work/make.err"; then
    echo "FAIL make_badfiles: $(cat "$work/make.err")"
    echo "0 passed, 1 failed"
    exit 1
fi

passed=0
failed=0
while IFS=$'\t' read -r -a fields; do
    [ ${#fields[@]} -ge 3 ] || continue
    name=${fields[0]}
    kind=${fields[1]}
    expects=("${fields[@]:2}")
    dir=$work/cases/$name
    case $kind in
        model|config|weights) model=$dir; tokens=$GOOD_TOKENS ;;
        tokens) model=$GOOD_MODEL; tokens=$dir/tokens.npy ;;
        *) echo "FAIL $name: unknown kind '$kind'"; failed=$((failed + 1)); continue ;;
    esac

    # a hang is a failure too; timeout's 124 is caught below as non-clean
    timeout 120 "$FPTQ" eval --model "$model" --tokens "$tokens" --seqlen 16 --windows 1 --start 0 \
        >"$work/$name.out" 2>"$work/$name.err" </dev/null
    rc=$?
    err=$(cat "$work/$name.err")
    reason=""
    if [ $rc -eq 0 ]; then
        reason="exit status 0"
    elif [ $rc -eq 124 ]; then
        reason="timed out"
    elif [ $rc -ge 128 ]; then
        reason="killed by signal $((rc - 128)) (exit status $rc)"
    elif ! grep -qF "fptq: error:" <<<"$err"; then
        reason="stderr lacks 'fptq: error:'"
    else
        for e in "${expects[@]}"; do
            if ! grep -qiF -- "$e" <<<"$err"; then
                reason="stderr lacks '$e'"
                break
            fi
        done
        # every file of a case lies in its directory, so naming the file names it
        if [ -z "$reason" ] && ! grep -qF -- "$name" <<<"$err"; then
            reason="stderr does not name $name"
        fi
    fi
    if [ -z "$reason" ]; then
        echo "ok $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name: $reason; stderr: $(head -c 600 <<<"$err" | tr '\n' ' ')"
        failed=$((failed + 1))
    fi
done <"$work/cases.tsv"

# A FIFO in place of any input file: refused at once (the file is opened
# O_NONBLOCK and checked before it is read), never a reader waiting for a
# writer. Each run is under timeout, so a regression fails instead of hanging.
fifo_case() { # name, tokens file; the case directory $work/fifo/NAME is ready
    local name=$1 tok=$2 dir=$work/fifo/$1
    timeout 20 "$FPTQ" eval --model "$dir" --tokens "$tok" --seqlen 16 --windows 1 --start 0 \
        >"$work/$name.out" 2>"$work/$name.err" </dev/null
    local rc=$? err reason=""
    err=$(cat "$work/$name.err")
    if [ $rc -eq 0 ]; then
        reason="exit status 0"
    elif [ $rc -eq 124 ]; then
        reason="timed out (blocked on the FIFO)"
    elif [ $rc -ge 128 ]; then
        reason="killed by signal $((rc - 128))"
    elif ! grep -qF "FIFO" <<<"$err" || ! grep -qF -- "$name" <<<"$err"; then
        reason="stderr does not say that $name is a FIFO"
    fi
    if [ -z "$reason" ]; then
        echo "ok $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name: $reason; stderr: $(head -c 600 <<<"$err" | tr '\n' ' ')"
        failed=$((failed + 1))
    fi
}
mkdir -p "$work/fifo"
for f in fifo_config fifo_weights fifo_index fifo_shard fifo_tokens; do mkdir "$work/fifo/$f"; done
mkfifo "$work/fifo/fifo_config/config.json"
cp "$GOOD_MODEL/model.safetensors" "$work/fifo/fifo_config/"
cp "$GOOD_MODEL/config.json" "$work/fifo/fifo_weights/"
mkfifo "$work/fifo/fifo_weights/model.safetensors"
cp "$GOOD_MODEL/config.json" "$work/fifo/fifo_index/"
mkfifo "$work/fifo/fifo_index/model.safetensors.index.json"
cp "$GOOD_MODEL/config.json" "$work/fifo/fifo_shard/"
echo '{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}}' \
    >"$work/fifo/fifo_shard/model.safetensors.index.json"
mkfifo "$work/fifo/fifo_shard/model-00001-of-00001.safetensors"
mkfifo "$work/fifo/fifo_tokens/tokens.npy"
for f in fifo_config fifo_weights fifo_index fifo_shard; do fifo_case "$f" "$GOOD_TOKENS"; done
cp -r "$GOOD_MODEL/." "$work/fifo/fifo_tokens/"
fifo_case fifo_tokens "$work/fifo/fifo_tokens/tokens.npy"

if [ $((passed + failed)) -eq 0 ]; then
    echo "FAIL make_badfiles listed no cases"
    failed=1
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
