#!/usr/bin/env python3
"""make_golden.py: reference results of the labml_nn models, for tests/test_golden.cpp.

For each model family at a tiny size this builds the labml_nn PyTorch module,
runs one forward and backward pass in float64 and writes two files into
tests/golden/:

  <case>.safetensors            the model's state_dict (parameters and persistent
                                buffers, float32, under their state_dict names), as
                                `safetensors.torch.save_file(model.state_dict())` writes
                                it: a PyTorch checkpoint that models::load_model must read.
                                Metadata: "config", the loom config ({"model": {...}})
                                that builds the same model, and "parameters", the
                                names of model.named_parameters() in their order.
  <case>.reference.safetensors  what the model computes from those parameters, in float64:
                                  __input__   int64 [L, B]  the tokens
                                  __target__  int64 [L, B]  the next tokens to predict
                                  __logits__  [L, B, vocab]
                                  __loss__    []            mean cross-entropy over L·B positions
                                  __grad__.<parameter name>  d loss / d parameter (parameters
                                                that take no part, e.g. the fast weights model's
                                                norm_self_attn, get no entry: PyTorch leaves them None)

The parameters are PyTorch's initial values plus uniform noise: labml clones one
layer N times and starts some tables at zero or one, and identical layers or
zero tables would hide a mix-up of layers or a missing term. The noise is drawn
in float32, so the stored float32 parameters are exactly the values the float64
model computes with. Dropout is 0 and the models are in eval mode.

The tests need only the files, not this script. To regenerate them, with torch
1.13 and torchvision 0.14 (Debian's python3-torch, python3-torchvision), and
labml-nn 0.5.1, labml 0.4.168, einops, gitpython and safetensors from PyPI
(labml 0.5 lacks tracker.debug, which labml_nn's MultiHeadAttention calls;
labml_nn's experiment modules import torchvision):

    python3 tests/tools/make_golden.py            # writes tests/golden/

The tensors come out the same on every run (the metadata's key order may not).
"""

import argparse
import importlib.metadata
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from labml_models import build

# The tiny size every case shares (loom's tests use the same).
VOCAB, D_MODEL, HEADS, D_FF, LAYERS = 11, 16, 2, 32, 2
SEQ_LEN, BATCH = 7, 3
DROPOUT = 0.0
NOISE = 0.2  # parameters get U(-NOISE, NOISE) added to their initial values


def loom_config(family, **options):
    """A loom config ({"model": {...}}) at the tiny size; labml_models.build makes its labml model."""
    model = {"family": family, "vocab": VOCAB, "d_model": D_MODEL, "heads": HEADS, "d_ff": D_FF,
             "layers": LAYERS, "dropout": DROPOUT}
    model.update(options)
    return {"model": model}


# case name -> loom config
CASES = {
    "transformer": loom_config("transformer"),
    "primer_ez_per_channel": loom_config("primer_ez", conv_kernels="per_channel"),
    "primer_ez_shared": loom_config("primer_ez", conv_kernels="shared"),
    "primer_ez_per_head": loom_config("primer_ez", conv_kernels="per_head"),
    "fast_weights_dpfp1": loom_config("fast_weights", feature_map="dpfp", dpfp_nu=1, update_rule="delta"),
    "fast_weights_dpfp2": loom_config("fast_weights", feature_map="dpfp", dpfp_nu=2, update_rule="delta"),
    "feedback_kv": loom_config("feedback", shared_kv=True),
    "feedback": loom_config("feedback", shared_kv=False),
}


# ---- one case -----------------------------------------------------------------------------------

def make_case(name, config, out_dir, seed):
    torch.manual_seed(seed)
    model = build(config["model"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.empty_like(p).uniform_(-NOISE, NOISE))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert all(v.dtype == torch.float32 for v in state.values())

    model = model.double().eval()
    tokens = torch.randint(0, VOCAB, (SEQ_LEN, BATCH), dtype=torch.int64)
    target = torch.randint(0, VOCAB, (SEQ_LEN, BATCH), dtype=torch.int64)
    logits, _ = model(tokens)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))
    loss.backward()

    names = [n for n, _ in model.named_parameters()]
    save_file(state, os.path.join(out_dir, name + ".safetensors"),
              metadata={"config": json.dumps(config), "parameters": json.dumps(names)})

    reference = {"__input__": tokens, "__target__": target, "__logits__": logits.detach().contiguous(),
                 "__loss__": loss.detach()}
    for n, p in model.named_parameters():
        if p.grad is not None:
            reference["__grad__." + n] = p.grad.detach().contiguous()
    save_file(reference, os.path.join(out_dir, name + ".reference.safetensors"),
              metadata={"source": f"labml-nn {importlib.metadata.version('labml-nn')}, torch {torch.__version__}"})
    print(f"{name}: loss {loss.item():.6f}, {len(state)} state_dict tensors, "
          f"{len(reference) - 4} gradients")


def main():
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=default_out, help="output folder (default: tests/golden)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    for seed, (name, config) in enumerate(CASES.items()):
        make_case(name, config, args.out, seed=1000 + seed)


if __name__ == "__main__":
    main()
