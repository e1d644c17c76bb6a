#!/usr/bin/env bash
# `fptq plan` as a user runs it on the published Llama 3.1 configs: layouts
# that fit (exit 0), the --json breakdown, layouts that do not (exit 1, with
# who, by how much and what to change), --gpu-mem units and bad options (exit 2).
# usage: cli_plan.sh FPTQ_BIN TESTDATA_DIR
set -u
fptq=$1
data=$2
. "$(dirname "$0")/testlib.sh"

c405="$data/llama-3.1-405b-config.json"
c70="$data/llama-3.1-70b-config.json"

run() { # args...: runs fptq, leaves rc, $tmp/out, $tmp/err
    "$fptq" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
}
detail() { echo "rc=$rc stdout='$(head -c 1500 "$tmp/out")' stderr='$(head -c 800 "$tmp/err")'"; }

# ---- 405B on 2 nodes x 8 GPUs of 80 GiB, 128 x 2048 calibration: fits --------
run plan --config "$c405" --nodes 2 --gpus-per-node 8
[ $rc -eq 0 ]
check "405B 2x8 80GiB fits (exit 0)" $? "$(detail)"
grep -q "2 stages x 8 ranks" "$tmp/out" && grep -q "\[0, 63)" "$tmp/out" && grep -q "\[63, 126)" "$tmp/out"
check "405B 2x8 names the stages and their layers" $? "$(detail)"
grep -q "16 samples per rank" "$tmp/out" && grep -q "^fits:" "$tmp/out"
check "405B 2x8 samples per rank and verdict" $? "$(detail)"
grep -q "GiB = 2^30 bytes" "$tmp/out" && grep -q "estimate" "$tmp/out" && grep -q "400 TFLOP/s" "$tmp/out"
check "units and the assumed rate are stated" $? "$(detail)"

run plan --config "$c405" --nodes 2 --gpus-per-node 8 --json
ok=1
[ $rc -eq 0 ] && python3 - "$tmp/out" <<'PY' && ok=0
import json, sys
o = json.load(open(sys.argv[1]))
assert o["fits"] is True, o
assert o["grid"] == {"nodes": 2, "gpus_per_node": 8, "world": 16, "stages": 2, "ranks_per_stage": 8}, o["grid"]
st = o["stages"]
assert [(s["layer_begin"], s["layer_end"]) for s in st] == [(0, 63), (63, 126)], st
assert [(s["first_rank"], s["last_rank"]) for s in st] == [(0, 7), (8, 15)], st
assert o["calibration"]["samples_per_rank_max"] == 16, o["calibration"]
m = o["memory"]
parts = ["weights", "hessians", "activations", "workspace"]
assert all(m[k] > 0 for k in parts), m
assert m["total"] == sum(m[k] for k in parts), m
assert m["gpu_mem_bytes"] == 80 * 2**30 and m["total"] <= m["gpu_mem_bytes"], m
assert m["micro_batch"] == 16 and m["total"] == 69541691392, m
# what fptq quantize --backend cuda holds today, recomputed here from the
# config (a second implementation of worker/quantize.c's estimate)
H, I, q, kv, T, n = 16384, 53248, 128 * 128, 8 * 128, 2048, 16 * 2048
share = 13312 * H  # member 0 of 8: gate/up laid end to end, 106496 rows / 8
P = H * q + 2 * H * kv + q * H + 3 * H * I + 2 * H
want = {"activations": 2 * n * H * 4,
        "workspace": (n * (2 * H + 2 * q + 2 * kv + I) + (2**28 // I) * I) * 4,
        "weights": 2 * P * 4, "statistics": I * I * 4 + I * 12,
        "quantizer": 3 * share * 4 + I * I * 4 + 2 * 4 * min(share, 2**27) + 4 * min(8 * T * T, 2**28)}
w = o["worker_device_bytes"]["prefetch"]
for k, v in want.items():
    assert w[k] == v, (k, w[k], v)
assert w["total"] == sum(want.values()) <= 80 * 2**30, w
assert o["worker_device_bytes"]["no_prefetch"]["weights"] == P * 4, o["worker_device_bytes"]
# micro-batches of one sample: only the forward's workspace shrinks
w1 = o["worker_device_bytes"]["micro_batch_1"]
assert w["micro_batch"] == 16 and w1["micro_batch"] == 1, (w, w1)
assert w1["workspace"] == (T * (2 * H + 2 * q + 2 * kv + I) + min(2**28 // I, T) * I) * 4, w1
assert w1["total"] == w["total"] - w["workspace"] + w1["workspace"], w1
t = o["time"]
assert t["estimate"] is True and t["assumed_tflops"] == 400 and t["per_layer_s"] > 0, t
assert t["job_s_propagate_quantized"] >= t["job_s_propagate_stage"] > 0, t
PY
check "405B 2x8 --json has the breakdown" $ok "$(detail)"

# ---- 70B on one node of 8 GPUs: fits ----------------------------------------
run plan --config "$c70" --nodes 1 --gpus-per-node 8
[ $rc -eq 0 ] && grep -q "\[0, 80)" "$tmp/out" && grep -q "^fits:" "$tmp/out"
check "70B 1x8 80GiB fits" $? "$(detail)"

# ---- layouts that do not fit: exit 1, who, by how much, what to change --------
run plan --config "$c405" --nodes 1 --gpus-per-node 1 --calib-samples 512
[ $rc -eq 1 ] && grep -q "plan does not fit in --gpu-mem 80GiB" "$tmp/err" && grep -q "rank 0" "$tmp/err" &&
    grep -q "GiB over" "$tmp/err" && grep -q -- "--calib-samples" "$tmp/err" && grep -q "ranks per stage" "$tmp/err"
check "405B 1x1 does not fit (exit 1, which rank, how much, what to change)" $? "$(detail)"
grep -q "DOES NOT FIT" "$tmp/out"
check "405B 1x1 table says DOES NOT FIT" $? "$(detail)"

run plan --config "$c405" --nodes 1 --gpus-per-node 1 --calib-samples 512 --json
ok=1
[ $rc -eq 1 ] && python3 - "$tmp/out" <<'PY' && ok=0
import json, sys
o = json.load(open(sys.argv[1]))
assert o["fits"] is False, o
d = o["does_not_fit"]
assert d["over_bytes"] > 0 and d["min_ranks_per_stage"] >= 2 and 0 < d["max_calib_samples"] < 512, d
PY
check "405B 1x1 --json says it does not fit" $ok "$(detail)"

run plan --config "$c405" --nodes 1 --gpus-per-node 8 --gpu-mem 40GiB
[ $rc -eq 1 ] && grep -q "more GPUs or fewer samples do not help" "$tmp/err" && grep -q "use GPUs with at least" "$tmp/err"
check "405B on 40 GiB GPUs: only more memory helps" $? "$(detail)"

# ---- --gpu-mem units ---------------------------------------------------------
mem_bytes() { # value -> prints gpu_mem_bytes from --json
    "$fptq" plan --config "$c70" --nodes 1 --gpus-per-node 8 --gpu-mem "$1" --json 2>/dev/null |
        python3 -c 'import json, sys; print(int(json.load(sys.stdin)["memory"]["gpu_mem_bytes"]))' 2>/dev/null
}
for pair in 80GiB:85899345920 80G:85899345920 81920MiB:85899345920 85899345920:85899345920 \
            80GB:80000000000 80gb:80000000000 0.5TiB:549755813888; do
    v=${pair%%:*} want=${pair#*:}
    got=$(mem_bytes "$v")
    [ "$got" = "$want" ]
    check "--gpu-mem $v is $want bytes" $? "got '$got'"
done
run plan --config "$c70" --nodes 1 --gpus-per-node 8 --gpu-mem 80GB
grep -q "GB = 10^9 bytes" "$tmp/out"
check "--gpu-mem 80GB says GB = 10^9" $? "$(detail)"

# ---- bad options: exit 2 naming the option -------------------------------------
expect_usage() { # name, expected substring, args...
    local name=$1 want=$2
    shift 2
    run "$@"
    [ $rc -eq 2 ] && grep -q -- "$want" "$tmp/err"
    check "$name" $? "$(detail)"
}
for bad in 80XB GiB -5GiB inf 0 1.2.3GiB "80 GiB" 0x50; do
    expect_usage "bad --gpu-mem '$bad'" "option --gpu-mem: expected a memory size" \
        plan --config "$c405" --nodes 2 --gpus-per-node 8 --gpu-mem "$bad"
done
expect_usage "--stages not dividing the world" "--stages 3 does not divide the 16 ranks" \
    plan --config "$c405" --nodes 2 --gpus-per-node 8 --stages 3
expect_usage "missing --config" "--config config.json is required" plan --nodes 2 --gpus-per-node 8
expect_usage "missing --gpus-per-node" "--gpus-per-node G is required" plan --config "$c405" --nodes 2
expect_usage "non-integer --nodes" "option --nodes: expected an integer, got '2x'" \
    plan --config "$c405" --nodes 2x --gpus-per-node 8
expect_usage "bad --weight-bytes" "option --weight-bytes: expected 1 (FP8), 2 (BF16/FP16) or 4 (FP32)" \
    plan --config "$c405" --nodes 2 --gpus-per-node 8 --weight-bytes 3
expect_usage "unknown option" "--frobnicate" plan --config "$c405" --nodes 2 --gpus-per-node 8 --frobnicate

run plan --config "$tmp/missing.json" --nodes 1 --gpus-per-node 1
[ $rc -eq 1 ] && grep -q "missing.json" "$tmp/err"
check "missing config.json names the file" $? "$(detail)"

run plan --help
[ $rc -eq 0 ] && grep -q -- "--gpu-mem" "$tmp/out"
check "plan --help" $? "$(detail)"

# ---- --calib-seqlen over the context is capped and said ------------------------
cat >"$tmp/small.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8,
 "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512,
 "rms_norm_eps": 1e-05, "hidden_act": "silu"}
EOF
run plan --config "$tmp/small.json" --nodes 1 --gpus-per-node 2 --calib-seqlen 4096
[ $rc -eq 0 ] && grep -q "capped to 512" "$tmp/out" && grep -q "capped to 512" "$tmp/err"
check "--calib-seqlen over the context is capped and said" $? "$(detail)"
run plan --config "$tmp/small.json" --nodes 1 --gpus-per-node 2 --calib-seqlen 4096 --json
ok=1
[ $rc -eq 0 ] && python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["calibration"]
assert c["seqlen"] == 512 and c["seqlen_requested"] == 4096 and c["seqlen_capped"] is True, c
' "$tmp/out" && ok=0
check "--json reports the capped seqlen" $ok "$(detail)"

# ---- an uneven sample split reports the busiest rank ---------------------------
run plan --config "$c405" --nodes 2 --gpus-per-node 8 --calib-samples 100 --json
ok=1
[ $rc -eq 0 ] && python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["calibration"]
assert c["samples_per_rank_max"] == 13 and c["samples_per_rank_min"] == 12, c
' "$tmp/out" && ok=0
check "uneven split: 100 samples over 8 ranks -> 13 at most" $ok "$(detail)"

# ---- hostile configs (issue 14): refused by name, never a crash or a hang ------
# a copy of $tmp/small.json with FIELD=VALUE edits (values as JSON text)
edited() { # out, field=value...
    local out=$1
    shift
    python3 - "$tmp/small.json" "$out" "$@" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    c[k] = json.loads(v)
json.dump(c, open(sys.argv[2], "w"))
PY
}
clean_fail() { [ $rc -ne 0 ] && [ $rc -lt 124 ]; } # non-zero, no signal, no timeout
# heads x head_dim wraps modulo 2^64 and once passed every check
edited "$tmp/wrap.json" num_attention_heads=406961350020066 num_key_value_heads=203480675010033 head_dim=90656
run plan --config "$tmp/wrap.json" --nodes 1 --gpus-per-node 1
clean_fail && grep -q "num_attention_heads 406961350020066" "$tmp/err" && grep -q "at most 2048" "$tmp/err"
check "wrapping heads x head_dim refused, naming the field and the bound" $? "$(detail)"
edited "$tmp/pow40.json" num_attention_heads=1099511627776 num_key_value_heads=1099511627776 head_dim=1099511627776
run plan --config "$tmp/pow40.json" --nodes 1 --gpus-per-node 1
clean_fail && grep -q "num_attention_heads 1099511627776" "$tmp/err"
check "heads = head_dim = 2^40 refused (was exit 0 with a nonsense plan)" $? "$(detail)"
# the checkpoint's cap on layers: 65,536 plans (in O(n)), 65,537 is refused by name
edited "$tmp/l65536.json" num_hidden_layers=65536
timeout 300 "$fptq" plan --config "$tmp/l65536.json" --nodes 8 --gpus-per-node 2 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && grep -q "\[57344, 65536)" "$tmp/out"
check "65,536 layers on 8 stages: planned" $? "$(detail)"
edited "$tmp/l65537.json" num_hidden_layers=65537
run plan --config "$tmp/l65537.json" --nodes 1 --gpus-per-node 1
clean_fail && grep -q "num_hidden_layers 65537" "$tmp/err" && grep -q "at most 65536" "$tmp/err"
check "65,537 layers refused, naming num_hidden_layers and the cap" $? "$(detail)"
# Python's json keeps the last of two equal keys, fptq kept the first
sed 's/"hidden_size": 64,/"hidden_size": 64, "hidden_size": 128,/' "$tmp/small.json" >"$tmp/dup.json"
run plan --config "$tmp/dup.json" --nodes 1 --gpus-per-node 1
clean_fail && grep -q 'duplicate key "hidden_size"' "$tmp/err"
check "a duplicate key in config.json is refused, naming it" $? "$(detail)"
# a FIFO in place of config.json: refused at once, not a reader waiting for a writer
mkfifo "$tmp/fifo.json"
timeout 20 "$fptq" plan --config "$tmp/fifo.json" --nodes 1 --gpus-per-node 1 >"$tmp/out" 2>"$tmp/err" </dev/null
rc=$?
clean_fail && grep -q "fifo.json" "$tmp/err" && grep -q "FIFO" "$tmp/err"
check "a FIFO as config.json is refused (no hang)" $? "$(detail)"

finish
