#!/usr/bin/env python3
"""Summarises training runs as a Markdown table (examples/README.md, the fast layers).

    python3 examples/fast_layers_table.py runs/fast_weights_small runs/fast_weights_linear ...

Per run directory: the fast layer and feature map (from the checkpoint's config), the
parameters (from the checkpoint's model.safetensors), the last validation loss and
accuracy, and the median tokens/s over the metrics log's lines (each the mean of
log_interval steps). Prints the table to stdout and writes nothing. Only the
standard library is needed.

    python3 examples/fast_layers_table.py --lm-table examples/results/lm_table

The language-model table (examples/lm_table.sh): one row per fast layer, from the
run directories DIR/<layer>/ (a layer not started yet gets an empty row): the
parameters, the best validation loss and its step (the lowest of the metrics log's
validations, by which the finished runs are ranked), the last one, the steps trained and whether
the run stopped early (training.patience), is still running or reached its step
limit, the median tokens per second of CPU time (on one thread: the speed however
loaded the machine was) and per second of wall time, and beside them the WikiText-103 perplexities that
Irie et al. 2021 report for the same layers. Prints the table, writes it to
DIR/table.md and draws every run's validation loss against the step into
DIR/valid_loss.svg.
"""
import json
import statistics
import struct
import sys
from pathlib import Path


def safetensors_header(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def summarise(run):
    run = Path(run)
    header = safetensors_header(run / "checkpoint" / "model.safetensors")
    config = json.loads(header["__metadata__"]["config"])
    params = 0
    for name, entry in header.items():
        if name != "__metadata__":
            count = 1
            for n in entry["shape"]:
                count *= n
            params += count
    rates, valid = [], None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "tokens_per_s" in entry:
            rates.append(entry["tokens_per_s"])
        if "valid_loss" in entry:
            valid = entry
    model = config["model"]
    return {
        "layer": model.get("fast_layer", "delta_net"),
        "features": "softmax (in the op)" if model.get("fast_layer") == "rdn" else model.get("feature_map", "dpfp"),
        "params": params,
        "step": valid["step"],
        "valid_loss": valid["valid_loss"],
        "valid_acc": valid["valid_acc"],
        "tokens_per_s": statistics.median(rates),
    }


def read_log(path):
    """The metrics log's entries; a resumed run's {"resumed_at_step": N} drops the lines
    of later steps before it, which the resumed run writes again."""
    entries = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if "resumed_at_step" in entry:
            entries = [e for e in entries if e.get("step", -1) <= entry["resumed_at_step"]]
        else:
            entries.append(entry)
    return entries


# The layers in the order of the table, with the test perplexities on WikiText-103
# (small setting: 16 layers, d_model 128, truncated context) of Irie et al. 2021,
# Table 2, taken from a summary of the paper (the authors' repository,
# IDSIA/recurrent-fwp, names the layers of that table but gives no figures); None
# where no figure was found (Delta Delta Net). examples/README.md says more.
PAPER_WT103_TEST_PPL = {
    "linear": 38.3,
    "delta_net": 35.2,
    "delta_delta": None,
    "delta_mlp": 36.8,
    "delta_rnn": 35.0,
    "delta_lstm": 33.8,
    "rdn": 35.2,
}


def ranks(values):
    """1 for the lowest; equal values share a rank; None stays None."""
    known = sorted(v for v in values if v is not None)
    return [None if v is None else 1 + known.index(v) for v in values]


def summarise_lm(run, layer):
    row = {"layer": layer, "params": None, "best": None, "best_step": None, "last": None, "steps": 0,
           "status": "not started", "tokens_per_s": None, "tokens_per_cpu_s": None, "valid": []}
    if not (run / "metrics.jsonl").exists():
        return row
    entries = read_log(run / "metrics.jsonl")
    valid = [(e["step"], e["valid_loss"]) for e in entries if "valid_loss" in e]
    rates = [e["tokens_per_s"] for e in entries if "tokens_per_s" in e]
    cpu_rates = [e["tokens_per_cpu_s"] for e in entries if "tokens_per_cpu_s" in e]
    steps = [e["step"] for e in entries if "step" in e]
    row.update(valid=valid, steps=max(steps, default=0), status="running",
               tokens_per_s=statistics.median(rates) if rates else None,
               tokens_per_cpu_s=statistics.median(cpu_rates) if cpu_rates else None)
    if valid:
        best_step, best = min(valid, key=lambda p: (p[1], p[0]))  # the first of equal losses
        row.update(best=best, best_step=best_step, last=valid[-1][1])
    if (run / "checkpoint" / "model.safetensors").exists():
        header = safetensors_header(run / "checkpoint" / "model.safetensors")
        row["params"] = sum(count_of(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
        limit = json.loads(header["__metadata__"]["config"])["training"].get("steps")
        if limit and row["steps"] >= limit:
            row["status"] = "step limit"
    if any("stopped_early_at_step" in e for e in entries):
        row["status"] = "stopped early"
    return row


def count_of(shape):
    count = 1
    for n in shape:
        count *= n
    return count


def lm_table(rows):
    # Only a finished run has its final best: a running one is not ranked yet.
    here = ranks([r["best"] if r["status"] in ("stopped early", "step limit") else None for r in rows])
    paper = ranks([PAPER_WT103_TEST_PPL[r["layer"]] for r in rows])
    lines = ["| fast_layer | parameters | best valid loss (step) | last valid loss | steps | status "
             "| tokens per CPU second (median) | tokens/s, wall (median) | rank here | WT-103 test ppl (paper) | rank in paper |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    dash = "—"
    for r, rank_here, rank_paper in zip(rows, here, paper):
        ppl = PAPER_WT103_TEST_PPL[r["layer"]]
        lines.append(" | ".join([
            f"| `{r['layer']}`",
            f"{r['params']:,}" if r["params"] else dash,
            f"{r['best']:.4f} ({r['best_step']})" if r["best"] is not None else dash,
            f"{r['last']:.4f}" if r["last"] is not None else dash,
            str(r["steps"]),
            r["status"],
            f"{r['tokens_per_cpu_s']:,.0f}" if r["tokens_per_cpu_s"] else dash,
            f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else dash,
            str(rank_here) if rank_here else dash,
            f"{ppl}" if ppl else "not found",
            str(rank_paper) if rank_paper else dash,
        ]) + " |")
    return "\n".join(lines) + "\n"


def svg_chart(rows, title):
    """Validation loss against the step, one polyline per layer, as a standalone SVG."""
    width, height, left, right, top, bottom = 760, 440, 64, 150, 36, 48
    series = [(n, r["layer"], r["valid"]) for n, r in enumerate(rows) if r["valid"]]  # a layer keeps its colour
    points = [p for _, _, valid in series for p in valid]
    if not points:
        return None
    x_max = max(p[0] for p in points)
    y_min, y_max = min(p[1] for p in points), max(p[1] for p in points)
    if y_max == y_min:
        y_max = y_min + 1
    def x_of(step):
        return left + (width - left - right) * step / max(x_max, 1)
    def y_of(loss):
        return top + (height - top - bottom) * (y_max - loss) / (y_max - y_min)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for i in range(6):  # horizontal grid with the loss
        loss = y_min + (y_max - y_min) * i / 5
        y = y_of(loss)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{loss:.3f}</text>')
    for i in range(6):  # the steps
        step = x_max * i / 5
        out.append(f'<text x="{x_of(step):.1f}" y="{height - bottom + 18}" text-anchor="middle">{step:,.0f}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">step</text>')
    out.append(f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + height - bottom) / 2})">validation loss (nats per character)</text>')
    for n, (index, layer, valid) in enumerate(series):
        colour = colours[index % len(colours)]
        path = " ".join(f"{x_of(s):.1f},{y_of(v):.1f}" for s, v in valid)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for s, v in valid:  # a dot per validation: a run with one validation still shows
            out.append(f'<circle cx="{x_of(s):.1f}" cy="{y_of(v):.1f}" r="2.5" fill="{colour}"/>')
        y = top + 16 * n
        out.append(f'<line x1="{width - right + 12}" y1="{y + 6}" x2="{width - right + 32}" y2="{y + 6}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 38}" y="{y + 10}">{layer}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main_lm_table(directory):
    directory = Path(directory)
    rows = [summarise_lm(directory / layer, layer) for layer in PAPER_WT103_TEST_PPL]
    table = lm_table(rows)
    print(table, end="")
    (directory / "table.md").write_text(table)
    chart = svg_chart(rows, "Tiny Shakespeare: validation loss of each fast layer")
    if chart:
        (directory / "valid_loss.svg").write_text(chart)


def main():
    if not sys.argv[1:] or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())  # the arguments are run directories, or --lm-table DIR
        sys.exit(0 if sys.argv[1:] else 2)
    if sys.argv[1] == "--lm-table":
        if len(sys.argv) != 3:
            sys.exit("usage: fast_layers_table.py --lm-table DIR")
        main_lm_table(sys.argv[2])
        return
    rows = [summarise(run) for run in sys.argv[1:]]
    print("| fast_layer | q, k features | parameters | steps | valid loss | valid acc | tokens/s (median) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| `{r['layer']}` | {r['features']} | {r['params']:,} | {r['step']} | {r['valid_loss']:.4f} | "
              f"{r['valid_acc']:.4f} | {r['tokens_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
