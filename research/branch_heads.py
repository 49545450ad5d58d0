"""Gives a run's last checkpoint the parameters of a switch it was trained without, so
that the run can be branched with the switch on (docs/results.md, "Mirrored images").

    python research/branch_heads.py attention RUN WEIGHT   # --attention-weight WEIGHT
    python research/branch_heads.py global-context RUN     # --global-context true

Edits RUN in place (copy it first): the model file, the Adam moments (zero) and the weight
average of the step in RUN/state.json, and RUN/config.json. The attention head is drawn as
candle's `linear` draws a new layer (Kaiming-normal weight, uniform bias); the global
context's maps are zero, so the branch starts from exactly the run's outputs. Needs numpy
and safetensors.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def new_tensors(switch, config, model):
    if switch == "attention":
        channels = model["perception.weight"].shape[1] if "perception.weight" in model else config["model"]["vision"]["channels"]
        rng = np.random.default_rng(0)
        bound = 1.0 / np.sqrt(channels)
        return {
            "attention.weight": (rng.standard_normal((1, channels)) * np.sqrt(2.0 / channels)).astype(np.float32),
            "attention.bias": rng.uniform(-bound, bound, (1,)).astype(np.float32),
        }
    if switch == "global-context":
        c = config["model"]["vision"]["channels"]
        tensors = {}
        for block in range(config["model"]["vision"]["num_blocks"]):
            tensors[f"network.blocks.{block}.context.weight"] = np.zeros((c, 4 * c), np.float32)
            tensors[f"network.blocks.{block}.context.bias"] = np.zeros((c,), np.float32)
        return tensors
    sys.exit(f"unknown switch {switch!r}: attention or global-context")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    switch, run = sys.argv[1], sys.argv[2]
    step = json.load(open(f"{run}/state.json"))["step"]
    model_path = f"{run}/model-{step:08d}.safetensors"
    optimizer_path = f"{run}/optimizer-{step:08d}.safetensors"
    config = json.load(open(f"{run}/config.json"))
    model, optimizer = load_file(model_path), load_file(optimizer_path)
    for name, value in new_tensors(switch, config, model).items():
        if name in model:
            sys.exit(f"{model_path} already has {name}")
        model[name] = value
        optimizer["m." + name] = np.zeros_like(value)
        optimizer["v." + name] = np.zeros_like(value)
        if "average.updates" in optimizer:
            optimizer["average." + name] = value.copy()
    if switch == "attention":
        config["model"]["attention_head"] = True
        config["training"]["attention_weight"] = float(sys.argv[3])
    else:
        config["model"]["vision"]["block"]["global_context"] = True
    save_file(model, model_path)
    save_file(optimizer, optimizer_path)
    json.dump(config, open(f"{run}/config.json", "w"), indent=2)
    print(f"{run}: {switch} added at step {step}")


if __name__ == "__main__":
    main()
