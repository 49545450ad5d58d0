"""Re-initialises some weights of a run that has just started, so that an initialisation
can be screened without a switch in the trainer (docs/results.md, "Screens for an earlier
breakout").

    film-train train --data DATA --seed S --threads 1 --minutes 0.01 --out RUN
    python research/reinit.py identity-blocks RUN NOISE   # Dirac convolutions + NOISE x drawn
    python research/reinit.py decoder-scale RUN FACTOR    # the FiLM generator's output layer x FACTOR
    film-train train --data DATA --out RUN --epochs 20 --threads 1

The first command trains one step (its checkpoint is where the edit goes); the script edits
RUN's model file in place, sets the edited tensors' Adam moments to zero and their weight
average to the new values, and turns RUN/config.json's budget from minutes into 20 epochs
so that the last command resumes it. identity-blocks: the scene bottleneck's 3x3
convolution and each block's 1x1 and 3x3 convolution become NOISE times their drawn
weights plus a copy of input channel i to output channel i at the kernel's centre, so that
at the start each block passes the perception head's maps through unmixed. Needs numpy and
safetensors.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def identity_blocks(model, noise):
    names = ["bottleneck.embed.conv.weight"]
    names += [n for n in model if n.startswith("network.blocks.") and n.endswith((".conv.weight", ".input_proj.weight"))]
    edited = {}
    for name in names:
        w = noise * model[name]
        out, inp, kh, kw = w.shape
        for i in range(min(out, inp)):
            w[i, i, kh // 2, kw // 2] += 1.0
        edited[name] = w.astype(np.float32)
    return edited


def decoder_scale(model, factor):
    return {n: (factor * model[n]).astype(np.float32) for n in ["generator.decoder.weight", "generator.decoder.bias"]}


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    edit, run, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
    state = json.load(open(f"{run}/state.json"))
    step = state["step"]
    if step > 10:
        sys.exit(f"{run} is at step {step}: re-initialise a run that has just started")
    model_path = f"{run}/model-{step:08d}.safetensors"
    optimizer_path = f"{run}/optimizer-{step:08d}.safetensors"
    model, optimizer = load_file(model_path), load_file(optimizer_path)
    if edit == "identity-blocks":
        edited = identity_blocks(model, value)
    elif edit == "decoder-scale":
        edited = decoder_scale(model, value)
    else:
        sys.exit(f"unknown edit {edit!r}: identity-blocks or decoder-scale")
    for name, tensor in edited.items():
        model[name] = tensor
        optimizer["m." + name] = np.zeros_like(tensor)
        optimizer["v." + name] = np.zeros_like(tensor)
        if "average.updates" in optimizer:
            optimizer["average." + name] = tensor.copy()
    save_file(model, model_path)
    save_file(optimizer, optimizer_path)
    config = json.load(open(f"{run}/config.json"))
    config["minutes"], config["epochs"] = None, 20
    json.dump(config, open(f"{run}/config.json", "w"), indent=2)
    state["finished"] = False
    json.dump(state, open(f"{run}/state.json", "w"), indent=2)
    print(f"{run}: {edit} {value} at step {step}: {', '.join(edited)}")


if __name__ == "__main__":
    main()
