#!/bin/sh
# lm_table.sh: the language-model table of the fast layers (examples/README.md,
# "Language modelling at one size"): every model.fast_layer on Tiny Shakespeare at
# the size of examples/configs/lm_table_<layer>.json, each trained until its
# validation loss has stopped improving (training.patience) or its step limit,
# then the table and the chart.
#
#   nice -n 19 examples/lm_table.sh            # from anywhere; it works in the repository root
#   LOOM_BIN=/some/copy nice -n 19 examples/lm_table.sh   # train with a copy of build/examples/train
#
# Rerunning continues: a run with a checkpoint is resumed (a finished one returns at
# once), a run without one starts (over). Each run uses one thread. Runs go to
# examples/results/lm_table/<layer>/, the table to examples/results/lm_table/table.md
# (also printed) and the chart to examples/results/lm_table/valid_loss.svg.
set -eu

# True when the run in $2 stopped early or its newest checkpoint is at the config's
# step limit: resuming it would only log its end again.
finished() {
  grep -q '"stopped_early_at_step"' "$2/metrics.jsonl" 2>/dev/null && return 0
  [ -e "$2/checkpoint" ] || return 1
  local saved limit
  saved=$(basename "$(readlink "$2/checkpoint")")
  limit=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["training"]["steps"])' "$1")
  [ "$saved" = "checkpoint-$limit" ]
}

# The whole script is read before anything runs, so editing it meanwhile is safe.
main() {
  cd "$(dirname "$0")/.."
  bin=${LOOM_BIN:-build/examples}
  export OMP_NUM_THREADS=1
  # Cheapest first, so the table fills from the quick rows.
  for layer in linear delta_net rdn delta_rnn delta_delta delta_mlp delta_lstm; do
    config=examples/configs/lm_table_$layer.json
    out=examples/results/lm_table/$layer
    echo "== $layer ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    if finished "$config" "$out"; then
      echo "finished earlier: skipped"
    elif [ -e "$out/checkpoint" ]; then
      "$bin/train" "$config" --threads 1 --resume
    else
      "$bin/train" "$config" --threads 1 --overwrite  # nothing saved yet: a log alone is started over
    fi
  done
  python3 examples/fast_layers_table.py --lm-table examples/results/lm_table
}

main "$@"
exit
