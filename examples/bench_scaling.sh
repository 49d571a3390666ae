#!/usr/bin/env bash
# bench_scaling.sh [CONFIG] [STEPS] [ROUNDS]: tokens/s of data-parallel training on
# this machine, one thread per rank: one process without MPI, then `mpirun -np 1`
# and `mpirun -np 2`, ROUNDS times interleaved (so a change of the machine's load
# hits all three alike); then the all-reduce alone (bench_allreduce).
#
# Per run: the median of the per-log-interval tokens/s (first interval left out:
# warm-up), and rank 0's mean time per step in the gradient all-reduce (packing,
# the collective, waiting for the other rank). Printed: the median over rounds.
# Runs in a scratch directory; shared memory only (as tests/test_mpi.sh), and
# writes nothing else: the table goes to stdout.
#   defaults: CONFIG examples/configs/primer_ez_small.json, STEPS 60, ROUNDS 3
#   example:  examples/bench_scaling.sh examples/configs/primer_ez_small.json 40 2
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
config=${1:-$root/examples/configs/primer_ez_small.json}
steps=${2:-60}
rounds=${3:-3}
train=$root/build/examples/train
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_btl_vader_single_copy_mechanism=none
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# Log every 10 steps; no evaluation, sample or checkpoint before the end.
sed -E 's|"log_interval": *[0-9]+|"log_interval": 10|; s|"eval_interval": *[0-9]+|"eval_interval": 0|;
        s|"eval_batches": *[0-9]+|"eval_batches": 1|; s|"checkpoint_interval": *[0-9]+|"checkpoint_interval": 0|;
        s|"out_dir": *"[^"]*"|"out_dir": "OUT"|' "$config" > base.json

median() { sort -g | awk '{v[NR] = $1} END {print NR ? v[int((NR + 1) / 2)] : "-"}'; }
for round in $(seq "$rounds"); do
  for variant in one mpi1 mpi2; do
    sed "s|OUT|$variant-$round|" base.json > run.json
    case $variant in
      one) launcher=() ;;
      mpi1) launcher=(mpirun --oversubscribe -np 1) ;;
      mpi2) launcher=(mpirun --oversubscribe -np 2) ;;
    esac
    "${launcher[@]}" "$train" run.json --steps "$steps" --threads 1 --peak-gflops 1000 > "$variant-$round.log" 2>&1
    grep -o '"tokens_per_s":[0-9.e+]*' "$variant-$round/metrics.jsonl" | cut -d: -f2 | tail -n +2 | median \
      >> "$variant.tokens"
    sed -nE 's/.*gradient all-reduce ([0-9.]+) ms per step.*/\1/p' "$variant-$round.log" >> "$variant.reduce"
  done
done
bytes=$(sed -nE 's/.* ([0-9]+) bytes all-reduced per step.*/\1/p' mpi2-1.log)
echo "config $(basename "$config"), $steps steps, $rounds rounds, one thread per rank; gradients $bytes bytes per step per rank"
printf "%-22s %12s %10s %18s %12s\n" "run" "tokens/s" "ms/step" "all-reduce ms/step" "share"
for variant in one mpi1 mpi2; do
  tokens=$(median < "$variant.tokens")
  reduce=$( [ -s "$variant.reduce" ] && median < "$variant.reduce" || echo 0)
  batch=$(sed -nE 's/.*batches of ([0-9]+) x ([0-9]+) tokens.*/\1 \2/p' "$variant-1.log" | awk '{print $1 * $2}')
  case $variant in one) name="1 process (no MPI)" ;; mpi1) name="mpirun -np 1" ;; mpi2) name="mpirun -np 2" ;; esac
  awk -v n="$name" -v t="$tokens" -v r="$reduce" -v b="$batch" \
    'BEGIN {ms = 1e3 * b / t; printf "%-22s %12.0f %10.1f %18.2f %11.1f%%\n", n, t, ms, r, 100 * r / ms}'
done
echo "the all-reduce alone, 2 ranks:"
mpirun --oversubscribe -np 2 "$root/build/examples/bench_allreduce" --bytes "$bytes" --bytes 75946244 --repeats 50
