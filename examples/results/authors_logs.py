#!/usr/bin/env python3
"""Reads the evaluation logs that Schlag, Irie and Schmidhuber published with
their memory-capacity experiments and prints, per setting, model and S, the
best and the final evaluation loss of each run, how many evaluations it logged
and where it first logged NaN.

    git clone https://github.com/ischlag/fast-weight-transformers
    python3 examples/results/authors_logs.py fast-weight-transformers            # the tables
    python3 examples/results/authors_logs.py fast-weight-transformers --reference  # "reference" for the configs

The logs are synthetic/logs/d64_<feature map>_<rule>_AssocSeq<L>N<S>R<r>.csv
(one row per evaluation: step, eval-loss), read with `git show` at the commit
below. R0 is setting 1 (L = S), R1 setting 2 (L = 2S); their rule "ours" is the
delta rule, "cat" softmax attention. One log is taken from an older commit:
the HEAD version of DPFP nu = 2 with the delta rule at S = 100 was cut off
after 3 evaluations; the complete run (28 evaluations) is in the commit that
added the logs.

A run's best is the smallest logged loss that is not NaN (the authors' code
compares with `<`, which NaN never passes); its final is the last logged loss,
NaN when the run diverged. The paper's figures plot the final loss.
"""
import json
import math
import re
import subprocess
import sys

HEAD = "ebe13ea"  # the newest commit; its logs are those of 3227b91 and 43fc3ff
ADDED = "927b5ee"  # "added synthetic part": the logs as first published
# (setting, loom model) -> the commit to read instead of HEAD, for one S
OLDER_LOG = {(2, "dpfp2/delta", 100): ADDED}

RULES = {"sum": "sum", "ours": "delta", "cat": "sum"}  # "fwm" (Schlag et al. 2021's FWM) is not a loom model
NAME = re.compile(r"synthetic/logs/d64_(\w+?)_(sum|ours|cat|fwm)_AssocSeq(\d+)N(\d+)R([01])\.csv$")


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


def read_log(repo, commit, path):
    lines = git(repo, "show", f"{commit}:{path}").split("\n")
    assert lines[0] == "step,eval-loss", f"{commit}:{path}: unexpected header {lines[0]!r}"
    return [(int(s), float(v)) for s, v in (line.split(",") for line in lines[1:] if line)]


def summary(evaluations):
    finite = [(loss, step) for step, loss in evaluations if not math.isnan(loss)]
    nan_steps = [step for step, loss in evaluations if math.isnan(loss)]
    best, best_step = min(finite) if finite else (math.nan, None)
    return {"evaluations": len(evaluations), "best": best, "best_step": best_step,
            "final": evaluations[-1][1], "final_step": evaluations[-1][0],
            "first_nan_step": nan_steps[0] if nan_steps else None}


def runs(repo):
    """{(setting, model, S): summary with the commit and path it was read from}"""
    out = {}
    for path in git(repo, "ls-tree", "-r", "--name-only", HEAD, "synthetic/logs").split():
        m = NAME.match(path)
        assert m, f"unexpected log name {path}"
        feature_map, rule, _, keys, repeats = m.groups()
        if rule == "fwm" or feature_map == "favor512":  # not among loom's models
            continue
        model = ("softmax" if feature_map == "softmax" else feature_map) + "/" + RULES[rule]
        key = (int(repeats) + 1, model, int(keys))
        commit = OLDER_LOG.get(key, HEAD)
        out[key] = dict(summary(read_log(repo, commit, path)), commit=commit, path=path)
    return out


def number(x, digits=4):
    return "NaN" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--reference"):
        sys.exit(__doc__)
    all_runs = runs(sys.argv[1])
    if len(sys.argv) == 3:
        # "<setting> <model>": [[S, best, final], ...]; NaN is written as null.
        def loss(x):
            return None if math.isnan(x) else round(x, 4)
        reference = {}
        for (setting, model, keys), r in sorted(all_runs.items()):
            reference.setdefault(f"{setting} {model}", []).append([keys, loss(r["best"]), loss(r["final"])])
        print(json.dumps(reference, allow_nan=False))
        return
    print("| setting | model | S | evaluations | best (step) | final (step) | first NaN | log |")
    print("| --- | --- | ---: | ---: | --- | --- | --- | --- |")
    for (setting, model, keys), r in sorted(all_runs.items()):
        print(f"| {setting} | {model} | {keys} | {r['evaluations']} | {number(r['best'])} ({r['best_step']}) | "
              f"{number(r['final'])} ({r['final_step']}) | {r['first_nan_step'] or ''} | "
              f"{r['commit']}:{r['path']} |")


if __name__ == "__main__":
    main()
