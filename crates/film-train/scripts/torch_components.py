"""Times the PyTorch reference's components the way `film-train profile` times ours.

Each component runs alone on detached inputs, forward then backward (seeded with ones,
as candle's `backward` of a non-scalar output is), median of N calls after a warm-up:
the question encoder (FiLM generator), the stem, the FiLMed blocks, and the classifier
with the cross-entropy loss. The model, batch and synthetic inputs are the reference
harness's own (`torch_film.py`, which is not in this repository: pass its folder), so the
rows line up with ours.

    python3 crates/film-train/scripts/torch_components.py --reference DIR \
        --config small --threads 2 --steps 20
"""
import argparse
import statistics
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True,
                        help="folder holding the PyTorch reference torch_film.py")
    parser.add_argument("--config", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, args.reference)
    import torch
    import torch.nn.functional as F
    import torch_film as ref

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ref.CONFIGS[args.config]
    model = ref.FiLM(cfg).train()
    img, q, q_len, y = ref.make_batch(cfg, args.batch, "cpu")
    net = model.net

    with torch.no_grad():
        gammas, betas = model.gen(q, q_len)
        stem_out = net.stem(img)
        coords = ref.coord_map(stem_out.size(2), stem_out.size(3), "cpu", stem_out.dtype)
        coords = coords.expand(stem_out.size(0), -1, -1, -1)
        x = stem_out
        for i, block in enumerate(net.blocks):
            x = block(x, gammas[:, i], betas[:, i], coords)
        blocks_out = x

    def encoder():
        g, b = model.gen(q, q_len)
        return torch.cat([g, b], 2)

    def stem():
        return net.stem(img)

    def blocks():
        x = stem_out.detach().requires_grad_()
        g, b = gammas.detach().requires_grad_(), betas.detach().requires_grad_()
        for i, block in enumerate(net.blocks):
            x = block(x, g[:, i], b[:, i], coords)
        return x

    def classifier():
        x = blocks_out.detach().requires_grad_()
        x = F.relu(net.cls_bn(net.cls_proj(torch.cat([x, coords], 1))))
        x = torch.amax(x, dim=(2, 3))
        x = F.relu(net.fc_bn(net.fc1(x)))
        return F.cross_entropy(net.fc2(x), y)

    print(f"PyTorch {torch.__version__}, config {args.config}, batch {args.batch}, "
          f"{args.threads} threads, medians of {args.steps} calls (each alone, inputs detached)")
    print(f"  {'component':<22} {'fwd ms':>9} {'bwd ms':>9}")
    for name, stage in [("question encoder", encoder), ("stem", stem),
                        ("FiLMed blocks", blocks), ("classifier + loss", classifier)]:
        forward, backward = [], []
        for step in range(args.warmup + args.steps):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            out = stage()
            middle = time.perf_counter()
            out.backward(torch.ones_like(out))
            end = time.perf_counter()
            if step >= args.warmup:
                forward.append((middle - start) * 1e3)
                backward.append((end - middle) * 1e3)
        print(f"  {name:<22} {statistics.median(forward):>9.1f} {statistics.median(backward):>9.1f}")


if __name__ == "__main__":
    main()
