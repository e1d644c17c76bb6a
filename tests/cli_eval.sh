#!/usr/bin/env bash
# `fptq eval` as a user runs it: the golden perplexity line, the JSON
# object, --help, and the exit codes of bad options.
# usage: cli_eval.sh FPTQ_BIN EXAMPLES_DIR
set -u
fptq=$1
ex=$2
. "$(dirname "$0")/testlib.sh"

golden_args=(--model "$ex/stories260K" --tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 16 --start 40960)

"$fptq" eval "${golden_args[@]}" >"$tmp/out" 2>"$tmp/err"
rc=$?
line=$(cat "$tmp/out")
ppl=$(sed -n 's/.* ppl=\([0-9.]*\)$/\1/p' "$tmp/out")
ok=1
[ $rc -eq 0 ] && [ -n "$ppl" ] && awk -v p="$ppl" 'BEGIN { exit !(p / 7.361119 - 1 < 1e-3 && 1 - p / 7.361119 < 1e-3) }' && ok=0
check "golden perplexity line" $ok "rc=$rc out='$line' err='$(head -c 500 "$tmp/err")'"
case "$line" in
    "windows=16 W=256 start=40960 predicted=4080 nll="*) ok=0 ;;
    *) ok=1 ;;
esac
check "protocol fields" $ok "got '$line'"
grep -q "eval: windows 16/16" "$tmp/err"
check "progress on stderr" $? "stderr: $(head -c 500 "$tmp/err")"

"$fptq" eval "${golden_args[@]}" --json --quiet >"$tmp/json" 2>"$tmp/err"
rc=$?
ok=1
[ $rc -eq 0 ] && python3 - "$tmp/json" <<'PY' && ok=0
import json, sys
o = json.load(open(sys.argv[1]))
assert o["predicted"] == 4080, o
assert abs(o["ppl"] / 7.361119 - 1) < 1e-3, o
assert abs(o["nll"] - 1.996212) < 1e-3, o
PY
check "--json object" $ok "rc=$rc out='$(cat "$tmp/json")'"
[ ! -s "$tmp/err" ]
check "--quiet prints nothing on stderr" $? "stderr: $(cat "$tmp/err")"

"$fptq" eval --help >"$tmp/out" 2>&1
[ $? -eq 0 ] && grep -q -- "--windows" "$tmp/out"
check "eval --help" $? "$(cat "$tmp/out")"

expect_usage() { # name, expected substring, args...
    local name=$1 want=$2
    shift 2
    "$fptq" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    [ $rc -eq 2 ] && grep -q -- "$want" "$tmp/err"
    check "$name" $? "rc=$rc stderr='$(cat "$tmp/err")'"
}
expect_usage "unknown command" "unknown command 'evil'" evil
expect_usage "missing --model" "--model DIR or --checkpoint CKPT is required" eval --tokens "$ex/tinystories.tok512.npy"
expect_usage "non-integer --windows" "option --windows: expected an integer, got '1x'" eval "${golden_args[@]}" --windows 1x
expect_usage "unknown option" "--frobnicate" eval "${golden_args[@]}" --frobnicate
expect_usage "window past the end of the tokens" "the file has 98864" eval --model "$ex/stories260K" --tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 400
expect_usage "seqlen over the context" "max_position_embeddings 512" eval --model "$ex/stories260K" --tokens "$ex/tinystories.tok512.npy" --seqlen 1024 --windows 1

# --backend cuda: where no GPU is usable, a clear refusal; auto falls back.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    "$fptq" eval "${golden_args[@]}" --windows 1 --backend cuda >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 1 ] && grep -q -- "--backend cuda" "$tmp/err"
    check "--backend cuda without a GPU" $? "rc=$rc stderr='$(cat "$tmp/err")'"
    "$fptq" eval "${golden_args[@]}" --windows 1 --backend auto >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 0 ] && grep -q "backend cpu" "$tmp/err"
    check "--backend auto falls back to the CPU" $? "rc=$rc stderr='$(cat "$tmp/err")'"
else
    echo "skip --backend cuda refusal: a GPU is present"
fi

# --reference: a model against itself diverges by exactly nothing, and the
# BF16 copy against the fp32 model by a little (its perplexity moves 0.014%)
"$fptq" eval --model "$ex/stories260K" --reference "$ex/stories260K" --tokens "$ex/tinystories.tok512.npy" \
    --seqlen 256 --windows 2 --start 40960 --json --quiet >"$tmp/self.json" 2>"$tmp/err"
python3 - "$tmp/self.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["kl_max"] < 1e-9 and o["top1_agree"] == 1 and o["rms_dp"] < 1e-9 and o["ppl"] == o["ref_ppl"], o
PY
check "--reference itself: KL 0, same top token everywhere, dp 0" $? "$(cat "$tmp/self.json" "$tmp/err")"
"$fptq" eval --model "$ex/stories260K-bf16-sharded" --reference "$ex/stories260K" --tokens "$ex/tinystories.tok512.npy" \
    --seqlen 256 --windows 2 --start 40960 --json --quiet >"$tmp/bf16.json" 2>"$tmp/err"
python3 - "$tmp/bf16.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
assert 0 < o["kl_mean"] < 1e-3 and o["kl_median"] <= o["kl_p90"] <= o["kl_p99"] <= o["kl_max"], o
assert o["top1_agree"] > 0.95 and abs(o["ppl"] / o["ref_ppl"] - 1) < 0.01, o
PY
check "--reference BF16 vs fp32: small KL, ordered quantiles, >95% same top token" $? "$(cat "$tmp/bf16.json" "$tmp/err")"
"$fptq" eval --model "$ex/stories260K" --reference "$tmp/nonexistent" --tokens "$ex/tinystories.tok512.npy" \
    --seqlen 256 --windows 1 --quiet >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "nonexistent" "$tmp/out"
check "--reference to a missing directory: exit 1 naming it" $? "rc=$rc $(cat "$tmp/out")"
finish
