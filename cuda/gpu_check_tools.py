#!/usr/bin/env python3
"""gpu_check_tools.py: the Python steps of cuda/check_on_gpu.sh.

  config  <in.json> <out.json> key=value...   a config with keys replaced (dotted paths, JSON values)
  compare <cpu metrics.jsonl> <cuda metrics.jsonl>   per-step training losses of two runs, side by side
  rate    <metrics.jsonl>                      median tokens/s and MFU of the logged intervals after the first
  pytorch <config.json> <steps> <warmup>       tokens/s of labml_nn's model for that config on the GPU
  table   <results.jsonl>                      the side-by-side table of loom and PyTorch

Only the standard library, except `pytorch`, which needs torch and labml_nn
(.gpu/whl, made by cuda/pack_for_gpu.sh).
"""

import json
import statistics
import sys
import time

# Tiny Shakespeare's character count (datasets/tinyshakespeare.txt): the vocabulary of every config here.
VOCAB = 65

# H200 SXM datasheet peaks (dense), TFLOP/s: FP32 on CUDA cores, TF32 on tensor cores (989 with sparsity).
PEAK_FP32_TFLOPS = 67.0
PEAK_TF32_TFLOPS = 494.5

# Tolerances of `compare`. Two float32 runs of the same training drift apart as
# rounding differences feed through the Adam steps: the first steps must agree
# as closely as test_cuda's five-step check (1e-4), later ones within 0.02.
EARLY_STEPS, EARLY_TOLERANCE, LATE_TOLERANCE = 20, 1e-4, 2e-2


def set_key(config, dotted, value):
    node = config
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def config_command(source, target, *assignments):
    with open(source) as f:
        config = json.load(f)
    for assignment in assignments:
        key, _, text = assignment.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string
        set_key(config, key, value)
    with open(target, "w") as f:
        json.dump(config, f, indent=1)


def training_lines(path):
    with open(path) as f:
        return [line for line in map(json.loads, f) if "loss" in line and "tokens_per_s" in line]


def compare_command(cpu_path, cuda_path):
    cpu = {line["step"]: line["loss"] for line in training_lines(cpu_path)}
    cuda = {line["step"]: line["loss"] for line in training_lines(cuda_path)}
    steps = sorted(set(cpu) & set(cuda))
    if not steps:
        print("compare: FAIL no common steps")
        return 1
    diff = {s: abs(cpu[s] - cuda[s]) for s in steps}
    early = max(diff[s] for s in steps if s <= EARLY_STEPS) if steps[0] <= EARLY_STEPS else 0.0
    late = max(diff.values())
    worst = max(steps, key=diff.get)
    ok = early <= EARLY_TOLERANCE and late <= LATE_TOLERANCE
    partial = "" if len(cpu) == len(cuda) else ", one run cut short"
    print(f"compare: {'PASS' if ok else 'FAIL'} {len(steps)} common steps (cpu {len(cpu)}, cuda {len(cuda)}{partial}); "
          f"max |loss diff| steps<={EARLY_STEPS}: {early:.2e} (tol {EARLY_TOLERANCE:g}), "
          f"all: {late:.2e} at step {worst} (tol {LATE_TOLERANCE:g}); "
          f"last loss cpu {cpu[steps[-1]]:.4f} cuda {cuda[steps[-1]]:.4f}")
    return 0 if ok else 1


def rate_command(path):
    lines = training_lines(path)[1:]  # the first interval holds the warm-up
    if not lines:
        print(json.dumps({"tokens_per_s": None}))
        return 1
    rate = statistics.median(line["tokens_per_s"] for line in lines)
    result = {"tokens_per_s": rate, "intervals": len(lines)}
    if all("mfu" in line for line in lines):
        # FLOPs per token, as loom counts them for MFU: mfu = flops/token * tokens/s / peak.
        result["flops_per_token"] = statistics.median(
            line["mfu"] * PEAK_FP32_TFLOPS * 1e12 / line["tokens_per_s"] for line in lines)
    print(json.dumps(result))
    return 0


def pytorch_command(config_path, steps, warmup):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, "tests/tools")
    import labml_models

    # float32 throughout, no TF32, like loom's default.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    with open(config_path) as f:
        config = json.load(f)
    model_config = dict(config["model"], vocab=VOCAB)
    seq_len, batch = config["data"]["seq_len"], config["data"]["batch_size"]
    model = labml_models.build(model_config).cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    tokens = torch.randint(0, VOCAB, (seq_len + 1, batch), device="cuda")
    data, target = tokens[:-1], tokens[1:]

    def step():
        logits, _ = model(data)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step().item()  # .item() waits for the step, as loom's loss read does
        times.append(time.perf_counter() - start)
    rate = seq_len * batch / statistics.median(times)
    print(json.dumps({"tokens_per_s": rate, "steps": steps, "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name()}))
    return 0


def table_command(path):
    rows = {}
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            rows.setdefault(entry["family"], {})[entry["who"]] = entry
    print(f"| family | loom tokens/s | PyTorch tokens/s | loom / PyTorch | loom MFU FP32 | PyTorch MFU FP32 "
          f"| loom MFU TF32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def rate(entry):
        return entry.get("tokens_per_s") if entry else None

    for family, who in rows.items():
        loom, torch_ = who.get("loom"), who.get("pytorch")
        flops = loom.get("flops_per_token") if loom else None

        def mfu(r, peak):
            return f"{100 * r * flops / (peak * 1e12):.1f}%" if r and flops else "-"

        def fmt(r):
            return f"{r:,.0f}" if r else "-"

        ratio = f"{rate(loom) / rate(torch_):.2f}x" if rate(loom) and rate(torch_) else "-"
        print(f"| {family} | {fmt(rate(loom))} | {fmt(rate(torch_))} | {ratio} | {mfu(rate(loom), PEAK_FP32_TFLOPS)} "
              f"| {mfu(rate(torch_), PEAK_FP32_TFLOPS)} | {mfu(rate(loom), PEAK_TF32_TFLOPS)} |")
    print(f"MFU: loom's FLOP count per token against the H200 datasheet peaks, FP32 {PEAK_FP32_TFLOPS:g} and "
          f"TF32 dense {PEAK_TF32_TFLOPS:g} TFLOP/s (both runs are float32 with TF32 off).")
    return 0


def main(argv):
    commands = {"config": config_command, "compare": compare_command, "rate": rate_command,
                "table": table_command}
    if len(argv) >= 2 and argv[1] == "pytorch" and len(argv) == 5:
        return pytorch_command(argv[2], int(argv[3]), int(argv[4]))
    if len(argv) < 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
