#!/usr/bin/env python3
"""load_in_pytorch.py: loads a checkpoint written by loom's `train` into the labml_nn model.

    python3 tests/tools/load_in_pytorch.py runs/<family>/checkpoint/model.safetensors
    python3 tests/tools/load_in_pytorch.py runs/<family>          # the same: the newest checkpoint

Builds the labml model of the config stored in the checkpoint (labml_models.py),
loads the file with load_state_dict(strict=True) (every name and shape must
match, nothing may be missing or left over), and, when the run's metrics log
holds a sample taken at the checkpoint's step, decodes the same greedy sample
in PyTorch as labml's experiments do (the whole text fed again for every
character, argmax at the last position) and compares the two. Exits non-zero
on any mismatch. Needs what make_golden.py needs.
"""

import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from labml_models import build


def logged_sample(run_dir, step):
    """The sample the metrics log recorded at `step`, or None."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    sample = None
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            if entry.get("step") == step and "sample" in entry:
                sample = entry["sample"]
    return sample


@torch.no_grad()
def greedy(model, chars, prompt, length):
    ids = {c: i for i, c in enumerate(chars)}
    text = prompt
    for _ in range(length):
        tokens = torch.tensor([ids[c] for c in text], dtype=torch.int64)[:, None]  # [L, 1]
        logits, _ = model(tokens)
        text += chars[logits[-1, 0].argmax().item()]
    return text


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    if os.path.isdir(path):  # a run directory or a checkpoint directory
        if os.path.exists(os.path.join(path, "checkpoint")):
            path = os.path.join(path, "checkpoint")
        path = os.path.join(path, "model.safetensors")
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    model = build(config["model"])
    state = load_file(path)
    model.load_state_dict(state, strict=True)
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{path}: {config['model']['family']}, step {metadata.get('step')}: load_state_dict(strict=True) took "
          f"all {len(state)} tensors ({parameters} parameters)")

    checkpoint_dir = os.path.dirname(os.path.abspath(path))
    run_dir = os.path.dirname(checkpoint_dir)
    expected = logged_sample(run_dir, int(metadata.get("step", -1)))
    if expected is None:
        print("no sample at this step in the metrics log; nothing to compare")
        return
    with open(os.path.join(checkpoint_dir, "vocab.json")) as f:
        chars = json.load(f)
    prompt = config["sample"]["prompt"]
    got = greedy(model, chars, prompt, config["sample"]["length"])
    print(f"greedy sample: loom {expected!r}, PyTorch {got!r}")
    if got != expected:
        sys.exit("the samples differ")


if __name__ == "__main__":
    main()
