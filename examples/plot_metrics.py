#!/usr/bin/env python3
"""Draws the loss curves of one or more training runs from their metrics logs.

    python3 examples/plot_metrics.py runs/bigram/metrics.jsonl [more.jsonl ...] [-o loss.png]

Each log is the JSON-lines file `train` writes: one object per log step
({"step", "loss", "lr", ...}) and one per validation ({"step", "valid_loss",
"valid_acc", "sample"}); a resumed run appends {"resumed_at_step": N}, after
which the lines of steps past N that the interrupted run wrote are superseded.
The plot shows the training loss (solid) and the
validation loss (dots) against the step, one colour per run, and the learning
rate on a second panel. An optional extra for comparing runs: `train` already
draws each run's own chart, <out_dir>/curves.svg, without Python.
"""
import argparse
import json
import os
import sys


def read_log(path):
    train, valid, lr = [], [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{number}: not a JSON object ({e})")
            if "resumed_at_step" in entry:
                at = entry["resumed_at_step"]
                train = [p for p in train if p[0] <= at]
                valid = [p for p in valid if p[0] <= at]
                lr = [p for p in lr if p[0] <= at]
                continue
            if "loss" in entry:
                train.append((entry["step"], entry["loss"]))
                lr.append((entry["step"], entry.get("lr")))
            if "valid_loss" in entry:
                valid.append((entry["step"], entry["valid_loss"]))
    return train, valid, lr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", help="metrics.jsonl files")
    parser.add_argument("-o", "--output", default="loss.png", help="the PNG to write (default: loss.png)")
    args = parser.parse_args()

    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_metrics.py needs matplotlib: pip install matplotlib (or apt-get install python3-matplotlib)")

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    for index, path in enumerate(args.logs):
        train, valid, lr = read_log(path)
        if not train and not valid:
            print(f"{path}: no loss entries, skipped", file=sys.stderr)
            continue
        colour = f"C{index}"
        name = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        if train:
            ax_loss.plot(*zip(*train), color=colour, label=f"{name} train")
        if valid:
            ax_loss.plot(*zip(*valid), "o", color=colour, markersize=4, label=f"{name} valid")
        points = [(s, v) for s, v in lr if v is not None]
        if points:
            ax_lr.plot(*zip(*points), color=colour)
    ax_loss.set_ylabel("cross-entropy (nats/char)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
