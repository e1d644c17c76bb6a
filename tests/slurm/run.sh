#!/usr/bin/env bash
# slurm/quantize.sbatch and slurm/eval.sbatch on a real single-node Slurm
# cluster started here as root (cluster.sh), with 2 ranks on stories260K:
#   1. sbatch --wait completes, with srun (PMIx) and with mpirun; the
#      checkpoints have the digest of the same run under plain mpirun, and
#      eval.sbatch prints its perplexity line;
#   2. a job whose time limit is too short is warned by --signal, stops,
#      requeues itself, resumes and completes with the same digest;
#   3. SIGTERM to the batch shell does the same (launcher mpirun).
# The daemons are stopped by their PIDs on exit, whatever happened.
# usage: run.sh FPTQ_BIN EXAMPLES_DIR   (exit 77 where it cannot run: not
# root, or slurm / munge not installed; KEEP=1 keeps the temp directory)
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 FPTQ_BIN EXAMPLES_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: starting a Slurm cluster takes root"
    exit 77
fi
for c in munged munge unmunge slurmctld slurmd sbatch srun scontrol squeue sinfo scancel mpirun python3; do
    if ! command -v "$c" >/dev/null; then
        echo "SKIP: $c is not installed (.ci/install-deps installs slurmctld, slurmd, slurm-client and munge)"
        exit 77
    fi
done
fptq=$(realpath "$1")
ex=$(realpath "$2")
# shellcheck source=tests/slurm/cluster.sh
. "$here/cluster.sh"

# a run that was killed outright left its cluster behind: stop it
for old in /tmp/fptq_slurm.*; do
    [ -f "$old/owner" ] || continue
    kill -0 "$(cat "$old/owner")" 2>/dev/null && continue
    slurm_cluster_stop "$old/cluster"
    rm -rf "$old"
done

tmp=$(mktemp -d /tmp/fptq_slurm.XXXXXX)
chmod 755 "$tmp" # munged wants every directory above its socket open to all
echo $$ >"$tmp/owner"
cleanup() {
    slurm_cluster_stop "$tmp/cluster"
    if [ -n "${KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

pass=0
fail=0
check() { # name, status (0 = ok), detail: capture the status first (r=$?), since a
    # $(...) in the name would reset $? before it is read
    if [ "$2" -eq 0 ]; then
        echo "ok $1"; pass=$((pass + 1))
    else
        echo "FAIL $1: $3"; fail=$((fail + 1))
    fi
}
t_start=$(date +%s)
since() { echo $(($(date +%s) - $1)); }
# every wait below is bounded by what is left of 600 s for all the tests,
# so that a broken cluster fails them well inside CTest's timeout
deadline=$((t_start + 600))
left() { # at most $1 seconds, at least 1
    local l=$((deadline - $(date +%s)))
    [ "$l" -gt "$1" ] && l=$1
    [ "$l" -lt 1 ] && l=1
    echo "$l"
}

t0=$(date +%s)
if ! slurm_cluster_start "$tmp/cluster" >"$tmp/start.log" 2>&1; then
    check "single-node cluster starts" 1 "$(cat "$tmp/start.log")"
    echo "$pass passed, $fail failed"
    exit 1
fi
export SLURM_CONF=$tmp/cluster/slurm.conf
check "single-node cluster starts (munged, slurmctld, slurmd) in $(since "$t0") s" 0 ""

export OPENBLAS_NUM_THREADS=1
calib=(--calib-samples 128 --calib-seqlen 256)
recipe="--scheme w4a16 --method gptq --group-size 32"
digest_of() { "$fptq" inspect "$1" 2>/dev/null | sed -n 's/^digest *\([0-9a-f]\{64\}\)$/\1/p'; }
ppl_line() { grep -E '^windows=[0-9]+ W=[0-9]+ start=[0-9]+ predicted=[0-9]+ nll=[0-9.]+ ppl=[0-9.]+$' "$1" | tail -n 1; }
state_of() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
restarts_of() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p'; }
# sbatch with the job's variables (sbatch exports the environment to the job);
# the marker lets cleanup find every process of the job; sb_timeout=S bounds
# an sbatch --wait
sb() {
    FPTQ_SLURM_TEST=$tmp/cluster OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 FPTQ=$fptq \
        MODEL=$ex/stories260K CALIB=$ex/tinystories.tok512.npy CALIB_SAMPLES=128 CALIB_SEQLEN=256 RECIPE=$recipe \
        ${sb_timeout:+timeout -k 10 "$sb_timeout"} sbatch --chdir="$tmp" "$@"
}
# 2 ranks on the node's 2 CPUs and 2 (fake) GPUs. A --time of 20 minutes
# keeps the script's own warning (600 s before the limit) out of the way
# where a test does not ask for one.
ranks=(--nodes=1 --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1)
# wait_job ID SECONDS: until the job ends; prints its final state
wait_job() {
    local s end=$(($(date +%s) + $2))
    while [ "$(date +%s)" -lt $end ]; do
        s=$(state_of "$1")
        case $s in
            COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
                echo "$s"; return 0 ;;
        esac
        sleep 1
    done
    echo "still ${s:-unknown} after $2 s"
    return 1
}
tail_of() { tail -n "${2:-15}" "$1" 2>/dev/null | cut -c1-300; }

# --- the reference: the same job under plain mpirun ---
t0=$(date +%s)
# shellcheck disable=SC2086
timeout -k 10 120 mpirun --allow-run-as-root --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS=1 \
    "$fptq" quantize --model "$ex/stories260K" --calib "$ex/tinystories.tok512.npy" "${calib[@]}" $recipe \
    --out "$tmp/ref" --quiet >"$tmp/ref.log" 2>&1
rc=$?
ref=$(digest_of "$tmp/ref")
"$fptq" eval --checkpoint "$tmp/ref" --tokens "$ex/tinystories.tok512.npy" --seqlen 256 --windows 16 --start 40960 \
    --quiet >"$tmp/ref.eval" 2>&1
ref_ppl=$(ppl_line "$tmp/ref.eval")
[ $rc -eq 0 ] && [ -n "$ref" ] && [ -n "$ref_ppl" ]
r=$?
check "reference: plain mpirun -np 2 ($(since "$t0") s): $ref_ppl" $r "rc=$rc $(tail_of "$tmp/ref.log") $(cat "$tmp/ref.eval")"

# --- 1. sbatch --wait, srun and mpirun; eval.sbatch ---
for launcher in srun mpirun; do
    t0=$(date +%s)
    out=$tmp/q_$launcher
    jid=$(LAUNCHER=$launcher OUT=$out sb_timeout=$(left 300) sb --wait --parsable "${ranks[@]}" --time=20 \
          --output="$tmp/q_$launcher.out" "$repo/slurm/quantize.sbatch")
    rc=$?
    log=$tmp/q_$launcher.out
    d=$(digest_of "$out")
    [ $rc -eq 0 ] && [ "$(state_of "$jid")" = COMPLETED ] && grep -q "checkpoint $out is complete" "$log"
    r=$?
    check "sbatch --wait quantize.sbatch, LAUNCHER=$launcher, 2 ranks: completes ($(since "$t0") s)" $r \
        "rc=$rc job=$jid state=$(state_of "$jid") log: $(tail_of "$log")"
    [ -n "$d" ] && [ "$d" = "$ref" ]
    r=$?
    check "  its digest equals plain mpirun's" $r "slurm '$d' vs mpirun '$ref'"
done

t0=$(date +%s)
jid=$(FPTQ_SLURM_TEST=$tmp/cluster FPTQ=$fptq CKPT=$tmp/q_srun TOKENS=$ex/tinystories.tok512.npy SEQLEN=256 \
      WINDOWS=16 START=40960 timeout -k 10 "$(left 300)" sbatch --wait --parsable --chdir="$tmp" --gpus=1 --cpus-per-task=1 \
      --output="$tmp/eval.out" "$repo/slurm/eval.sbatch")
rc=$?
line=$(ppl_line "$tmp/eval.out")
[ $rc -eq 0 ] && [ -n "$line" ] && [ "$line" = "$ref_ppl" ]
r=$?
check "sbatch --wait eval.sbatch: same perplexity line as the mpirun checkpoint's ($(since "$t0") s)" $r \
    "rc=$rc job=$jid got '$line' want '$ref_ppl'; log: $(tail_of "$tmp/eval.out")"

# --- 2. a time limit too short: warned, stopped, requeued, resumed ---
# --time=1 and the warning 50 s before it: Slurm checks time limits every
# 30 s, so the warning comes 10 to 40 s into a run, when fptq is long up.
# 12 s per layer makes 5 layers last 60 s: the last layer starts at 48 s,
# so the first run cannot finish, and every run finishes at least the layer
# in flight, well before the limit.
t0=$(date +%s)
out=$tmp/q_limit
log=$tmp/q_limit.out
jid=$(LAUNCHER=srun OUT=$out FPTQ_TEST_LAYER_DELAY_MS=12000 sb --parsable "${ranks[@]}" --time=1 \
      --signal=B:USR1@50 --output="$log" "$repo/slurm/quantize.sbatch")
state=$(wait_job "$jid" "$(left 420)")
restarts=$(restarts_of "$jid")
[ "$state" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ]
r=$?
check "--time=1 --signal=B:USR1@50: job completes after $restarts requeue(s) ($(since "$t0") s)" $r \
    "job=$jid state=$state restarts=$restarts log: $(tail_of "$log" 25)"
grep -q "SIGUSR1 received" "$log" && grep -q "stopped by signal 10 (SIGUSR1)" "$log" &&
    grep -q "requeueing job $jid" "$log" && grep -q "checkpoint $out is complete" "$log"
r=$?
check "  the log shows the warning, fptq stopping, the requeue and the completion" $r "log: $(tail_of "$log" 25)"
n_runs=$(grep -c "fptq-quantize.sbatch .* start on" "$log")
[ "$n_runs" -eq $((restarts + 1)) ]
r=$?
check "  one log section per run ($n_runs runs, --open-mode=append)" $r "runs=$n_runs restarts=$restarts"
d=$(digest_of "$out")
[ -n "$d" ] && [ "$d" = "$ref" ]
r=$?
check "  final digest equals the uninterrupted run's" $r "requeued '$d' vs uninterrupted '$ref'"

# --- 3. SIGTERM to the batch shell, launcher mpirun ---
t0=$(date +%s)
out=$tmp/q_term
log=$tmp/q_term.out
jid=$(LAUNCHER=mpirun OUT=$out FPTQ_TEST_LAYER_DELAY_MS=2000 sb --parsable "${ranks[@]}" --time=20 \
      --output="$log" "$repo/slurm/quantize.sbatch")
end=$(($(date +%s) + $(left 120)))
until grep -q "layer 1/5 quantized" "$log" 2>/dev/null || [ "$(date +%s)" -ge $end ]; do sleep 0.5; done
scancel --batch --signal=TERM "$jid"
rc=$?
state=$(wait_job "$jid" "$(left 240)")
restarts=$(restarts_of "$jid")
[ $rc -eq 0 ] && [ "$state" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "SIGTERM received" "$log" &&
    grep -q "stopped by signal 10 (SIGUSR1)" "$log" && grep -q "requeueing job $jid" "$log"
r=$?
check "scancel --batch --signal=TERM: fptq stops, the job requeues and completes ($(since "$t0") s)" $r \
    "scancel rc=$rc job=$jid state=$state restarts=$restarts log: $(tail_of "$log" 25)"
d=$(digest_of "$out")
[ -n "$d" ] && [ "$d" = "$ref" ]
r=$?
check "  final digest equals the uninterrupted run's" $r "'$d' vs '$ref'"

echo "slurm tests took $(since "$t_start") s"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
