#!/usr/bin/env python3
"""Summarises training runs as a Markdown table (examples/README.md, the fast layers).

    python3 examples/fast_layers_table.py runs/fast_weights_small runs/fast_weights_linear ...

Per run directory: the fast layer and feature map (from the checkpoint's config), the
parameters (from the checkpoint's model.safetensors), the last validation loss and
accuracy, and the median tokens/s over the metrics log's lines (each the mean of
log_interval steps). Prints the table to stdout and writes nothing; it has no
options. Only the standard library is needed.
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


def main():
    if not sys.argv[1:] or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())  # no options: the arguments are run directories; it writes only stdout
        sys.exit(0 if sys.argv[1:] else 2)
    rows = [summarise(run) for run in sys.argv[1:]]
    print("| fast_layer | q, k features | parameters | steps | valid loss | valid acc | tokens/s (median) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| `{r['layer']}` | {r['features']} | {r['params']:,} | {r['step']} | {r['valid_loss']:.4f} | "
              f"{r['valid_acc']:.4f} | {r['tokens_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
