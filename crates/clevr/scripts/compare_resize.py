"""Compares the loader's resize with Pillow's on one image.

    cargo run -p clevr --example resize_png -- IN.png /tmp/rust_bicubic.png 224 224 bicubic
    python3 crates/clevr/scripts/compare_resize.py IN.png /tmp/rust_bicubic.png bicubic

Prints the largest and mean absolute difference per channel value (0-255).
Pillow rounds to 8 bits between its horizontal and vertical passes and the
loader does not, so differences of 1 are expected; exits 1 if any exceeds 1.
"""
import sys

import numpy as np
from PIL import Image

source, rust_path, filter_name = sys.argv[1:4]
rust = np.asarray(Image.open(rust_path).convert("RGB")).astype(int)
height, width = rust.shape[:2]
resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[filter_name]
pillow = np.asarray(Image.open(source).convert("RGB").resize((width, height), resample)).astype(int)
diff = np.abs(pillow - rust)
print(f"{filter_name}: max |diff| {diff.max()}, mean |diff| {diff.mean():.3f}, values off by more than 1: {(diff > 1).mean():.4%}")
sys.exit(1 if diff.max() > 1 else 0)
