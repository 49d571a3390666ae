"""Seconds per training step of `algorithmic` runs, to project a budget.

    python3 examples/results/step_times.py BINARY THREADS STEPS CONFIG:LAYER ...

For each CONFIG:LAYER it copies the config with training.log_interval = 1 and a
scratch out_dir, runs BINARY (build/examples/algorithmic) for STEPS steps on
THREADS threads, stops it at the last step's progress line (before the
validation and the test, which a short run would otherwise spend most of its
time on), and prints the time of each step after the first and their median
without the second (the first two warm the caches and the allocator). Nothing is
written to the repository. For example, the table of examples/README.md:

    python3 examples/results/step_times.py build/examples/algorithmic 2 6 \\
        examples/configs/code_execution_rfwp.json:lstm \\
        examples/configs/code_execution_rfwp.json:delta_net ...

A step's time depends on the lengths in its batch (padded to the longest), so
the median of a few steps is a rough figure for tasks whose lengths vary.
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

PROGRESS = re.compile(r"step\s+(\d+)\s+epoch.*\s([\d.]+) s$")


def step_times(binary, threads, steps, config_path, layer):
    config = json.load(open(config_path))
    config["training"]["log_interval"] = 1
    scratch = tempfile.mkdtemp(prefix="step-times-")
    config["out_dir"] = scratch
    path = os.path.join(scratch, "config.json")
    json.dump(config, open(path, "w"))
    run = subprocess.Popen([binary, path, "--layers", layer, "--steps", str(steps), "--threads", str(threads)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = []  # the cumulative time of each progress line
    for line in run.stdout:
        match = PROGRESS.match(line.strip())
        if match:
            seconds.append(float(match.group(2)))
            if int(match.group(1)) >= steps:
                break
    run.kill()
    run.wait()
    shutil.rmtree(scratch, ignore_errors=True)
    if len(seconds) < 3:
        sys.exit(f"{config_path} {layer}: the run printed {len(seconds)} progress lines; it needs STEPS >= 3")
    return [b - a for a, b in zip(seconds, seconds[1:])]


def main(binary, threads, steps, *specs):
    for spec in specs:
        config_path, _, layer = spec.rpartition(":")
        times = step_times(binary, threads, int(steps), config_path, layer)
        print(f"{os.path.basename(config_path)} {layer}: steps 2-{len(times) + 1} "
              f"{', '.join(f'{t:.1f}' for t in times)} s; median of steps 3-{len(times) + 1} "
              f"{statistics.median(times[1:]):.2f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
