"""ResNet-101 conv4 features: film-rs against torchvision, on the same inputs and weights.

Three jobs, each a subcommand (PyTorch, torchvision, safetensors and numpy in the
environment; see docs/training.md, "Extracting the features"):

  weights OUT.safetensors [--seed S]
      A torchvision resnet101 with random weights, and random BatchNorm statistics so
      that the folding of BatchNorm into the convolutions is exercised, saved as the
      safetensors state dict `film-train extract-features --weights` reads.

  compare WEIGHTS FEATURES.npy CACHE_DIR [--threads T] [--batch B]
      Runs torchvision's resnet101 cut after layer3 on the images of a film-rs image
      cache (CACHE_DIR: <data>/.film-cache/<split>-224x224, the u8 images the Rust
      extractor read, so that both see the same pixels), normalised with the ImageNet
      statistics, and compares with FEATURES.npy row by row. Prints the largest
      absolute difference, the largest difference relative to the largest magnitude,
      and torchvision's images per second on T threads.

  fixture DIR [--seed S]
      The tiny network of the Rust tests (fixtures/resnet-tiny): torchvision's own
      Bottleneck blocks in a ResNet of the same structure with few channels, its state
      dict (weights.safetensors) and an input with the output torchvision computes for
      it (expected.safetensors).
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import Bottleneck

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def randomise_batch_norm(model, generator, side):
    """Random BatchNorm scales and shifts, and running statistics measured on random
    images (as training would measure them on real ones), so that the activations stay
    of order one through the stages, as in a trained network, and folding BatchNorm into
    the convolutions is exercised with statistics far from (0, 1)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.data = torch.rand(c, generator=generator) + 0.5
            module.bias.data = torch.randn(c, generator=generator) * 0.1
            module.momentum = None  # a cumulative average over the calibration batches
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, side, side, generator=generator))
    model.eval()


def conv4(model):
    """The reference's extractor: the stem and the first three stages."""
    return nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3)


def state_dict_for_safetensors(model):
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def cmd_weights(args):
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet101(weights=None)
    randomise_batch_norm(model, torch.Generator().manual_seed(args.seed), 224)
    save_file(state_dict_for_safetensors(model), args.out)
    print(json.dumps({"weights": args.out, "tensors": len(model.state_dict())}))


def read_cache(cache_dir):
    manifest = json.load(open(f"{cache_dir}/manifest.json"))
    shards = [load_file(f"{cache_dir}/{s['file']}")["images"] for s in manifest["shards"]]
    return torch.cat(shards)


def cmd_compare(args):
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet101(weights=None)
    model.load_state_dict(load_file(args.weights))
    net = conv4(model).eval()
    images = read_cache(args.cache)
    ours = np.load(args.features, mmap_mode="r")
    assert ours.shape[0] == images.shape[0], (ours.shape, images.shape)
    worst_abs, largest, seconds, squared_diff, squared = 0.0, 0.0, 0.0, 0.0, 0.0
    with torch.no_grad():
        net(((images[:1].float() / 255) - MEAN) / STD)  # warm-up
        for start in range(0, images.shape[0], args.batch):
            x = ((images[start : start + args.batch].float() / 255) - MEAN) / STD
            begin = time.perf_counter()
            theirs = net(x)
            seconds += time.perf_counter() - begin
            mine = torch.from_numpy(np.array(ours[start : start + args.batch], dtype=np.float32))
            worst_abs = max(worst_abs, (mine - theirs).abs().max().item())
            largest = max(largest, theirs.abs().max().item())
            squared_diff += (mine - theirs).double().pow(2).sum().item()
            squared += theirs.double().pow(2).sum().item()
    print(json.dumps({
        "images": images.shape[0],
        "shape": list(ours.shape[1:]),
        "max_abs_diff": worst_abs,
        "max_abs_value": largest,
        "max_diff_relative_to_max_value": worst_abs / largest,
        "rms_diff_relative_to_rms_value": (squared_diff / squared) ** 0.5,
        "torch_threads": args.threads,
        "torch_batch": args.batch,
        "torch_images_per_s": images.shape[0] / seconds,
        "torch": torch.__version__,
    }))


class TinyResNet(nn.Module):
    """torchvision's ResNet structure with few channels; the same state-dict names."""

    def __init__(self, stem=8, widths=(4, 8, 16), blocks=(1, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = stem
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            layers = []
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                downsample = None
                if stride != 1 or channels != width * 4:
                    downsample = nn.Sequential(
                        nn.Conv2d(channels, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4)
                    )
                layers.append(Bottleneck(channels, width, stride, downsample))
                channels = width * 4
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def cmd_fixture(args):
    torch.manual_seed(args.seed)
    model = TinyResNet()
    randomise_batch_norm(model, torch.Generator().manual_seed(args.seed), 42)
    x = torch.randn(2, 3, 42, 38)
    with torch.no_grad():
        y = model(x)
    save_file(state_dict_for_safetensors(model), f"{args.dir}/weights.safetensors")
    save_file({"input": x.contiguous(), "output": y.contiguous()}, f"{args.dir}/expected.safetensors")
    print(json.dumps({"input": list(x.shape), "output": list(y.shape)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("weights")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("compare")
    p.add_argument("weights")
    p.add_argument("features")
    p.add_argument("cache")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p = sub.add_parser("fixture")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    {"weights": cmd_weights, "compare": cmd_compare, "fixture": cmd_fixture}[args.command](args)


if __name__ == "__main__":
    main()
