#!/usr/bin/env bash
# test_mpi.sh TRAIN MPI_TOOL WORK_DIR: data-parallel training under mpirun against
# one process (models/programs/distributed.h). Skips (exit 77) only when mpirun is absent.
#
#  1. equivalence: `mpirun -np 2` and one process, same config (global batch 8,
#     dropout 0): the losses of the first 20 steps agree to 1e-5 and the
#     checkpoints after them to 5e-5 (weights, Adam moments; batcher state and step equal);
#     also with slices of unequal size (batch 5) and a rank without columns (batch 1);
#     `mpirun -np 1` gives the one-process run bit for bit;
#  2. resume under MPI (dropout 0.1: per-rank dropout streams): 10 steps, then
#     --resume to 20, against 20 uninterrupted steps: bit-identical losses and checkpoint;
#  3. a rank that cannot read its data (mpirun's MPMD form gives rank 1 a config
#     with a missing file): every rank exits, naming rank 1 and the reason;
#  4. a rank that dies (SIGKILL) mid-run, and one that hangs (SIGSTOP): mpirun
#     ends within its time limit, with a message naming the rank.
# On one host with loopback only: MPI's shared-memory transport (btl self,vader);
# in a fresh network namespace the loopback interface is brought up first (PMIx needs one).
set -uo pipefail
train=$1 tool=$2 work=$3

if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIP: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
  exit 77
fi
"$tool" loopback-up || { echo "FAIL: mpirun needs a network interface, and 'lo' could not be brought up"; exit 1; }

# Root (CI, containers) must be allowed explicitly; one host: shared memory only,
# the ob1 messaging layer (no UCX probing for network hardware), no CMA (ptrace
# may be forbidden in containers); more ranks than cores are fine.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
export OMP_NUM_THREADS=1
mpirun=(mpirun --oversubscribe -np 2)

rm -rf "$work" && mkdir -p "$work" || exit 1
cd "$work" || exit 1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# A small transformer on Tiny Shakespeare (the copy in datasets/), 20 steps.
# Adam's eps is 1e-4, not 1e-8: the key projection's bias has a gradient that is
# zero in exact arithmetic (softmax ignores a shift shared by all keys), and with
# a tiny eps Adam turns the rounding noise of that gradient, which depends on the
# order of the additions (one batch or two halves), into full-size steps.
config() {  # name dropout out_dir [data_path] [batch_size]
  cat > "$1.json" <<JSON
{
  "model": {"family": "transformer", "d_model": 32, "heads": 2, "d_ff": 64, "layers": 2, "dropout": $2, "seed": 7},
  "data": {"path": "${4:-data/tinyshakespeare.txt}", "url": "", "seq_len": 32, "batch_size": ${5:-8}, "seed": 5},
  "optimizer": {"kind": "adam", "lr": 0.003, "eps": 1e-4},
  "training": {"steps": 20, "log_interval": 1, "eval_interval": 0, "eval_batches": 1,
               "checkpoint_interval": 10, "out_dir": "$3", "threads": 1},
  "sample": {"length": 0}
}
JSON
}
run() {  # log_name command...: runs with a time limit, output to log_name.log
  local log=$1
  shift
  timeout 120 "$@" >"$log.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "$log: timed out"
  return $rc
}

echo "== 1. two ranks against one process"
config plain 0.0 one && sed 's|"one"|"two"|' plain.json > plain2.json
run one "$train" plain.json --peak-gflops 1000 || fail "one process: $(tail -3 one.log)"
run two "${mpirun[@]}" "$train" plain2.json --peak-gflops 1000 || fail "mpirun -np 2: $(tail -5 two.log)"
grep -q "data parallel over mpi: 2 ranks" two.log || fail "the two-rank run did not report 2 ranks: $(head -5 two.log)"
# The checkpoints agree to 5e-5, a sixtieth of one Adam step (lr 3e-3). Even with
# eps 1e-4 (above), a hidden unit whose gradient is mostly rounding noise drifts:
# on an AVX2 machine (8-lane sums) one unit's weights, second moment 1.7e-9,
# differed by 1.4e-5 after 20 steps. A step size off by 1 % moves weights by
# 6.5e-4 in this run, and half the batch by 2e-2: errors of the all-reduce stay
# far above the limit.
checkpoint_limit=5e-5
"$tool" losses one/metrics.jsonl two/metrics.jsonl 1 20 1e-5 || fail "losses differ"
"$tool" checkpoints one two $checkpoint_limit || fail "checkpoints differ"
# One rank under mpirun is the plain run, bit for bit (weights 1, a sum over one rank).
sed 's|"one"|"one_rank"|' plain.json > plain1.json
run one_rank mpirun --oversubscribe -np 1 "$train" plain1.json --peak-gflops 1000 || fail "mpirun -np 1: $(tail -5 one_rank.log)"
"$tool" losses one/metrics.jsonl one_rank/metrics.jsonl 1 20 0 || fail "mpirun -np 1: losses differ"
"$tool" checkpoints one one_rank 0 || fail "mpirun -np 1: checkpoints differ"
# Slices of unequal size (batch 5: 3 + 2 columns, weighted by their positions),
# and a rank with no columns at all (batch 1).
for batch in 5 1; do
  config "odd$batch" 0.0 "odd${batch}_one" "data/tinyshakespeare.txt" $batch
  sed "s|odd${batch}_one|odd${batch}_two|" "odd$batch.json" > "odd${batch}_2.json"
  run "odd${batch}_one" "$train" "odd$batch.json" --peak-gflops 1000 || fail "batch $batch, one process"
  run "odd${batch}_two" "${mpirun[@]}" "$train" "odd${batch}_2.json" --peak-gflops 1000 || fail "batch $batch, 2 ranks"
  "$tool" losses "odd${batch}_one/metrics.jsonl" "odd${batch}_two/metrics.jsonl" 1 20 1e-5 || fail "batch $batch: losses differ"
  "$tool" checkpoints "odd${batch}_one" "odd${batch}_two" $checkpoint_limit || fail "batch $batch: checkpoints differ"
done

echo "== 2. resume under MPI continues exactly (dropout 0.1)"
config drop 0.1 full && sed 's|"full"|"part"|' drop.json > drop_part.json
run full "${mpirun[@]}" "$train" drop.json --peak-gflops 1000 || fail "uninterrupted: $(tail -5 full.log)"
run part "${mpirun[@]}" "$train" drop_part.json --steps 10 --peak-gflops 1000 || fail "first half: $(tail -5 part.log)"
run resumed "${mpirun[@]}" "$train" drop_part.json --resume --peak-gflops 1000 || fail "resumed: $(tail -5 resumed.log)"
grep -q "resumed from .*checkpoint-10 at step 10" resumed.log || fail "did not resume at step 10: $(head -5 resumed.log)"
"$tool" losses full/metrics.jsonl part/metrics.jsonl 1 20 0 || fail "resumed losses differ"
"$tool" checkpoints full part 0 || fail "resumed checkpoint differs"

echo "== 3. a rank that cannot read the data"
config good 0.0 bad_run && config bad 0.0 bad_run "missing/no-such-text.txt"
run data mpirun --oversubscribe -np 1 "$train" good.json : -np 1 "$train" bad.json
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a rank without data: exit status $rc (expected an error)"
for r in 0 1; do
  grep -q "^rank $r: error: .*rank 1.*no-such-text.txt" data.log || grep -A1 "^rank $r: error:" data.log | grep -q "rank 1.*no-such-text.txt" ||
    fail "rank $r did not report rank 1's missing data: $(cat data.log)"
done
grep "error" data.log | head -4

echo "== 4. a rank that dies, a rank that hangs"
config long 0.0 long && sed -i 's|"steps": 20|"steps": 100000|; s|"checkpoint_interval": 10|"checkpoint_interval": 0|' long.json
for signal in KILL STOP; do
  rm -rf long
  "${mpirun[@]}" "$train" long.json --comm-timeout 3 --peak-gflops 1000 >"die_$signal.log" 2>&1 &
  launcher=$!
  # rank 1: the child of mpirun that does not hold out_dir's lock (rank 0 does), once steps run.
  victim=""
  for _ in $(seq 150); do
    sleep 0.2
    rank0=$(cat long/.lock 2>/dev/null)
    if [ -n "$rank0" ] && grep -q '"step"' long/metrics.jsonl 2>/dev/null; then
      for pid in $(cat /proc/$launcher/task/*/children 2>/dev/null); do
        [ "$pid" != "$rank0" ] && victim=$pid
      done
    fi
    [ -n "$victim" ] && break
  done
  if [ -z "$victim" ]; then
    fail "SIG$signal: no rank 1 process found: $(tail -3 "die_$signal.log")"
    kill "$launcher"; wait "$launcher"
    continue
  fi
  kill -s "$signal" "$victim"
  # mpirun must end by itself (a hang is the failure), well within 60 s.
  for _ in $(seq 300); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$launcher" 2>/dev/null; then
    fail "SIG$signal to rank 1: mpirun still runs after 60 s"
    kill -s KILL "$victim" 2>/dev/null; kill "$launcher"
  fi
  wait "$launcher"
  rc=$?
  kill -s KILL "$victim" 2>/dev/null
  [ $rc -ne 0 ] || fail "SIG$signal to rank 1: mpirun exited with 0"
  case $signal in
    KILL) grep -q "process rank 1 .*signal 9" "die_$signal.log" ||
            fail "SIGKILL: no message naming rank 1: $(tail -8 "die_$signal.log")" ;;
    STOP) grep -q "rank 0: error: all-reduce waited more than 3 s" "die_$signal.log" ||
            fail "SIGSTOP: no time-out message: $(tail -8 "die_$signal.log")" ;;
  esac
  grep -m2 "rank 1 with PID\|waited" "die_$signal.log"
done

[ $failures -eq 0 ] && echo "all MPI checks passed" || echo "$failures MPI checks failed"
[ $failures -eq 0 ]
