#!/usr/bin/env bash
# check_on_gpu.sh: the CUDA backend on a real GPU, in one run of at most 7.5 minutes.
#
#   bash cuda/pack_for_gpu.sh          # first, on a machine with the headers and pip (fills .gpu/)
#   bash cuda/check_on_gpu.sh          # then, on the GPU machine (cuda/README.md: "Running the GPU check")
#   bash cuda/check_on_gpu.sh --dry-run   # anywhere: few steps; the CUDA stages skip without a GPU
#   LOOM_CHECK_FAKE_GPU=1 bash cuda/check_on_gpu.sh --dry-run
#                                      # tests this script on a CPU machine: the "cuda" runs use the CPU
#
# Stages (each bounded by `timeout`, each runs whatever the others did):
#   info       nvidia-smi, nvcc, driver and runtime versions
#   build      meson -Dcuda=enabled -Dgpu_archs=90 (+ -Dheaders_dir=.gpu/include when present)
#   test_cuda  meson test --suite cuda: pass/fail counts
#   bench      training tokens/s of the four <family>.json configs, loom and labml_nn on PyTorch, float32
#   sanitize   compute-sanitizer memcheck, racecheck, initcheck on a subset of test_cuda
#              (the kernels written here, the four fused recurrences among them)
#   train      every family's *_small config, same seed, on the CUDA (the CPU runs in the background)
#   compare    the per-step losses of the CPU and CUDA runs
#   ckpt       the CUDA run's checkpoint decoded greedily on the CPU and on CUDA: same text
# In that order: the test suite first, then the speed table, so that a run cut
# short still measured speed, then the longer stages. A stage that would start
# past BUDGET_S is skipped and says so; no command runs past HARD_S, well inside
# the 600 s the GPU machine allows one command; and the summary is written on
# every way out (an EXIT trap), also when a stage fails or the run is stopped.
#
# Logs go to ${OUT:-gpu-logs}/ (the device tool brings $OUT back; 8 files at
# most, so everything is appended to a few); the summary table is printed last
# and saved as summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1

out=${OUT:-gpu-logs}
mkdir -p "$out"
log="$out/check.log"          # every command's output
results="$out/bench.jsonl"     # tokens/s, one JSON object per family and framework
summary="$out/summary.txt"
: >"$log"; : >"$results"; : >"$summary"
build=${BUILD_DIR:-build-gpu-check}
work=$(mktemp -d /tmp/loom-gpu-check.XXXXXX)
started=$(date +%s)
# The whole run's budget: a stage that would start past BUDGET_S is skipped,
# and no command runs past HARD_S (the GPU machine's limit is 600 s a command).
budget=${BUDGET_S:-380}
hard=${HARD_S:-450}
families=(transformer primer_ez fast_weights feedback)
# The device of the runs called "cuda" (the CPU only to test this script without a GPU).
gpu_device=cuda
[[ "${LOOM_CHECK_FAKE_GPU:-0}" == 1 ]] && gpu_device=cpu
cores=$(nproc)

if ((dry_run)); then
  parity_steps=6; bench_steps=4; bench_warmup=1; bench_log=1
else
  parity_steps=200; bench_steps=20; bench_warmup=5; bench_log=5
fi

# ---- helpers ---------------------------------------------------------------------

say() { echo "$*" | tee -a "$log"; }
elapsed() { echo $(($(date +%s) - started)); }
row() { printf '%-34s %s\n' "$1" "$2" >>"$summary"; say "== $1: $2"; }
# The smaller of a stage's own limit and the time left before HARD_S (at least 1 s).
cap() { local left=$((hard - $(elapsed))); ((left < 1)) && left=1; echo $(($1 < left ? $1 : left)); }
# run <seconds> <command...>: the command, bounded, its output into the log.
run() {
  local limit; limit=$(cap "$1"); shift
  echo "\$ $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
}
over_budget() {
  if (($(elapsed) > budget)); then row "$1" "SKIPPED (past the ${budget}s budget at $(elapsed)s)"; return 0; fi
  return 1
}
py() { python3 cuda/gpu_check_tools.py "$@"; }

# The summary, printed last and kept in summary.txt: written once, on any way out.
summary_written=0
finish() {
  ((summary_written)) && return
  summary_written=1
  row "total" "$(elapsed)s"
  {
    echo
    echo "==================== summary ===================="
    cat "$summary"
    [[ -s "$out/bench_table.md" ]] && { echo; cat "$out/bench_table.md"; }
  } | tee -a "$log"
  rm -rf "$work"
}
trap finish EXIT
trap 'row "stopped" "by a signal at $(elapsed)s"; exit 130' INT TERM

[[ -d /usr/local/cuda/bin ]] && export PATH="$PATH:/usr/local/cuda/bin"
# GIT_PYTHON_REFRESH: labml imports gitpython, which otherwise refuses to load without a git binary.
export PYTHONUNBUFFERED=1 NVIDIA_TF32_OVERRIDE=0 GIT_PYTHON_REFRESH=quiet

# ---- info ------------------------------------------------------------------------------

say "check_on_gpu: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), dry run $dry_run, $cores cores"
have_gpu=0
if command -v nvidia-smi >/dev/null && run 30 nvidia-smi; then
  have_gpu=1
  gpu_name=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  row "gpu" "$gpu_name"
elif [[ "$gpu_device" == cpu ]]; then
  have_gpu=1
  row "gpu" "none: LOOM_CHECK_FAKE_GPU=1, the runs called cuda use the CPU"
else
  row "gpu" "none (nvidia-smi missing or failing): the CUDA stages skip"
fi
if command -v nvcc >/dev/null; then
  row "nvcc" "$(nvcc --version | grep -o 'release [0-9.]*' || echo '?')"
else
  row "nvcc" "not found"
fi
run 60 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
row "python/torch" "$(python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)' 2>/dev/null || echo 'no torch')"

# ---- build -------------------------------------------------------------------------------

meson_cmd=(meson)
command -v meson >/dev/null || meson_cmd=(python3 -m mesonbuild.mesonmain)
# pip's ninja may be importable without being on the PATH, where meson looks for it.
if ! command -v ninja >/dev/null && python3 -c 'import ninja' 2>/dev/null; then
  mkdir -p "$work/bin"
  printf '#!/bin/sh\nexec python3 -m ninja "$@"\n' >"$work/bin/ninja"
  chmod +x "$work/bin/ninja"
  export PATH="$work/bin:$PATH"
fi
setup_args=(--buildtype=release -Dcuda=enabled -Dgpu_archs=90)
[[ -f .gpu/include/Eigen/Dense ]] && setup_args+=(-Dheaders_dir=.gpu/include)
built=0 built_tests=0
reused=""
[[ -f "$build/build.ninja" ]] && reused=" (reusing $build)"
if [[ -n "$reused" ]] || run 180 "${meson_cmd[@]}" setup "$build" "${setup_args[@]}"; then
  if run 420 ninja -C "$build" -j "$cores" examples/train examples/generate; then
    built=1
    if run 300 ninja -C "$build" -j "$cores" tests/test_cuda; then
      built_tests=1
      row "build" "ok ($(elapsed)s in, ${setup_args[*]}$reused)"
    else
      row "build" "FAIL: tests/test_cuda (see check.log); train and generate built"
    fi
  else
    row "build" "FAIL (ninja; see check.log)"
  fi
else
  row "build" "FAIL (meson setup; see check.log)"
fi
train_bin="$build/examples/train"
generate_bin="$build/examples/generate"

# ---- test_cuda -------------------------------------------------------------------------------

if ((built_tests)) && ! over_budget "test_cuda"; then
  run 240 "${meson_cmd[@]}" test -C "$build" --no-rebuild --suite cuda --print-errorlogs
  status=$?
  # doctest's own counts, from the test log meson keeps.
  counts=$(grep -E '^\[doctest\] (test cases|assertions)' "$build/meson-logs/testlog.txt" 2>/dev/null | tail -2 |
    sed 's/\[doctest\] //' | tr -s ' ' | paste -sd ';')
  skip=$(grep -m1 -o 'test_cuda: SKIP.*' "$build/meson-logs/testlog.txt" 2>/dev/null)
  cat "$build/meson-logs/testlog.txt" >>"$log" 2>/dev/null
  if [[ -n "$skip" ]]; then row "test_cuda" "SKIP: ${skip#test_cuda: SKIP: }"
  elif ((status == 0)); then row "test_cuda" "PASS $counts"
  else row "test_cuda" "FAIL (exit $status) $counts"
  fi
fi

# ---- speed: loom and labml_nn on PyTorch, side by side -----------------------------------------------

pytorch_ready=0
if [[ -d .gpu/whl ]] && timeout "$(cap 60)" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .gpu/whl/*.whl >>"$log" 2>&1; then
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
timeout "$(cap 60)" python3 -c 'import sys; sys.path.insert(0, "tests/tools"); import labml_models' >>"$log" 2>&1 &&
  pytorch_ready=1

for family in "${families[@]}"; do
  ((have_gpu)) || break
  over_budget "bench $family" && continue
  config="$work/${family}_bench.json"
  py config "examples/configs/$family.json" "$config" training.steps=$((bench_warmup + bench_steps)) \
    training.log_interval=$bench_log training.eval_interval=0 training.eval_batches=1 \
    training.checkpoint_interval=0 training.out_dir="\"$work/runs/${family}_bench\"" training.device="\"$gpu_device\"" \
    sample.length=0
  # The config file may hold "epochs"; steps replace it.
  python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["training"].pop("epochs", None); json.dump(c, open(p, "w"))' "$config"
  loom_rate="{}"
  # A run stopped at its limit still logged its intervals so far.
  ((built)) && run 60 "$train_bin" "$config" --peak-gflops 67000
  if [[ -s "$work/runs/${family}_bench/metrics.jsonl" ]]; then
    loom_rate=$(py rate "$work/runs/${family}_bench/metrics.jsonl")
  fi
  echo "{\"family\": \"$family\", \"who\": \"loom\", \"result\": $loom_rate}" |
    python3 -c 'import json, sys; e = json.load(sys.stdin); print(json.dumps({"family": e["family"], "who": e["who"], **e["result"]}))' >>"$results"
  if ((pytorch_ready)); then
    torch_rate=$(timeout "$(cap 60)" python3 cuda/gpu_check_tools.py pytorch "$config" "$bench_steps" "$bench_warmup" 2>>"$log" | tail -1)
    [[ "$torch_rate" == \{* ]] || torch_rate="{}"
    echo "{\"family\": \"$family\", \"who\": \"pytorch\", \"result\": $torch_rate}" |
      python3 -c 'import json, sys; e = json.load(sys.stdin); print(json.dumps({"family": e["family"], "who": e["who"], **e["result"]}))' >>"$results"
  fi
done
if [[ -s "$results" ]]; then
  py table "$results" >"$out/bench_table.md"
  cat "$out/bench_table.md" >>"$log"
  row "bench" "see the table below (loom $bench_steps steps after $bench_warmup, median of 5-step intervals; PyTorch median step)"
else
  row "bench" "not run (no GPU, or past the budget)"
fi
((pytorch_ready)) || row "pytorch" "torch or labml_nn not importable (see check.log; cuda/pack_for_gpu.sh, carry .gpu)"

# ---- the CPU side of the training comparison, in the background (after test_cuda and
#      the speed table, whose CPU references and host side want the cores) ---------------------------

# Each family's *_small config, derived here: the steps, a loss per step, no
# evaluation until the end, the device.
derive_small() {  # family device steps -> path
  local family=$1 device=$2 steps=$3 path="$work/${1}_small_$2.json"
  [[ "$device" == cuda ]] && device=$gpu_device
  py config "examples/configs/${family}_small.json" "$path" \
    training.steps="$steps" training.log_interval=1 training.eval_interval=0 training.eval_batches=1 \
    training.checkpoint_interval=0 training.out_dir="\"$work/runs/${family}_$2\"" training.device="\"$device\"" \
    sample.length=0
  echo "$path"
}
cpu_pids=()
if ((built)); then
  threads=$(((cores + 3) / 4))
  for family in "${families[@]}"; do
    config=$(derive_small "$family" cpu "$parity_steps")
    timeout "$(cap 150)" "$train_bin" "$config" --threads "$threads" >"$work/${family}_cpu.log" 2>&1 &
    cpu_pids+=($!)
  done
fi

# ---- compute-sanitizer on a subset of test_cuda ----------------------------------------------------------

# The kernels written here (not cuBLAS), at small sizes: the sanitizers slow kernels down 10-100x.
# doctest splits filters at commas, so '?' stands for the comma in a test name.
sanitize_cases='cuda: softmax and log_softmax*,cuda: cross_entropy*,cuda: layer_norm*,cuda: causal_conv1d*,cuda: attention? forward*,cuda: feedback_attention*,cuda: embedding*,cuda: reductions over any axes*'
# The four fused recurrences: their kernels keep whole fast weights in shared memory.
sanitize_cases+=',cuda: delta_rule? forward*,cuda: delta_rnn? forward*,cuda: delta_lstm? forward*,cuda: recurrent_delta_net? forward*'
if ((built_tests && have_gpu)) && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck initcheck; do
    over_budget "sanitize $tool" && continue
    slog="$work/sanitize_$tool.log"
    timeout --kill-after=10 "$(cap 60)" compute-sanitizer --tool "$tool" --error-exitcode 3 \
      "$build/tests/test_cuda" "--test-case=$sanitize_cases" >"$slog" 2>&1
    status=$?
    head -c 3000000 "$slog" >>"$out/sanitizer.log"
    if grep -q 'Device not supported' "$slog"; then row "sanitize $tool" "UNSUPPORTED here (Device not supported: gVisor?)"
    elif ((status == 124 || status == 137)); then row "sanitize $tool" "TIMEOUT after 60s ($(grep -c 'TEST CASE' "$slog") failing cases seen)"
    else
      verdict=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$slog" | tail -1)
      row "sanitize $tool" "exit $status: ${verdict:-no summary line}"
    fi
  done
else
  row "sanitize" "skipped (no build, no GPU or no compute-sanitizer)"
fi

# ---- training: CUDA against the CPU --------------------------------------------------------------

if ((built)); then
  for family in "${families[@]}"; do
    if ((have_gpu)) && ! over_budget "train $family"; then
      config=$(derive_small "$family" cuda "$parity_steps")
      run 120 "$train_bin" "$config"
    fi
  done
fi

# ---- the CPU runs finished: losses compared ---------------------------------------------------------

if ((built)); then
  for pid in "${cpu_pids[@]}"; do wait "$pid"; done
  for family in "${families[@]}"; do
    cat "$work/${family}_cpu.log" >>"$log"
    cpu_metrics="$work/runs/${family}_cpu/metrics.jsonl" cuda_metrics="$work/runs/${family}_cuda/metrics.jsonl"
    if [[ ! -s "$cpu_metrics" ]]; then row "train $family" "FAIL: the CPU run wrote no metrics"
    elif [[ ! -s "$cuda_metrics" ]]; then
      row "train $family" "cpu only ($(grep -c '"loss"' "$cpu_metrics") steps): no CUDA run"
    else row "train $family" "$(py compare "$cpu_metrics" "$cuda_metrics")"
    fi
  done
fi

# ---- checkpoints: each run's checkpoint decoded on the CPU and on CUDA ----------------------------------

# Greedy decoding reads every parameter, so the same text from a checkpoint on
# both devices says it loaded on both (a near-tie between two characters could
# still part them; the texts are in check.log).
if ((built)); then
  devices=(cpu); ((have_gpu)) && devices+=(cuda)
  for family in "${families[@]}"; do
    verdicts=()
    for trained_on in cuda cpu; do
      checkpoint="$work/runs/${family}_$trained_on/model.safetensors"
      [[ -f "$checkpoint" ]] || continue
      texts=()
      for device in "${devices[@]}"; do
        [[ "$device" == cuda ]] && device=$gpu_device
        texts+=("$(timeout "$(cap 60)" "$generate_bin" "$checkpoint" --device "$device" --temperature 0 --length 60 2>>"$log")")
        echo "generate $family, trained on $trained_on, on $device: ${texts[-1]}" >>"$log"
      done
      if [[ -z "${texts[0]}" ]]; then verdicts+=("$trained_on ckpt FAIL on cpu")
      elif ((${#texts[@]} == 1)); then verdicts+=("$trained_on ckpt decodes on cpu")
      elif [[ "${texts[0]}" == "${texts[1]}" ]]; then verdicts+=("$trained_on ckpt PASS: same text on cpu and cuda")
      else verdicts+=("$trained_on ckpt DIFF: texts differ on cpu and cuda (see check.log)")
      fi
    done
    ((${#verdicts[@]})) || verdicts=("FAIL: no checkpoint")
    joined=$(printf '%s; ' "${verdicts[@]}")
    row "ckpt $family" "${joined%; }"
  done
fi

# ---- summary: written by the EXIT trap (finish) --------------------------------------------------------
