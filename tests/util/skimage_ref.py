#!/usr/bin/python3
"""skimage_ref.py - reference quality metrics from scikit-image 0.19 for test_quality.

Usage: skimage_ref.py MANIFEST
Each MANIFEST line: NAME HEIGHT WIDTH BITS A.raw B.raw, where A.raw and B.raw
hold HEIGHT*WIDTH little-endian uint16 samples (A is the original, B the
test image). Prints one JSON object per line, in order:
{"name", "mse", "psnr", "ssim", "hausdorff"}, with null where the API says
null: psnr when mse is 0, ssim when a side is under 7, hausdorff when it is
infinite (exactly one image without a nonzero pixel).
Run with Debian's /usr/bin/python3 (python3-skimage 0.19.3).
"""
import json
import math
import sys
import warnings

import numpy as np
from skimage.metrics import (hausdorff_distance, mean_squared_error,
                             peak_signal_noise_ratio, structural_similarity)


def finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def metrics(a, b, bits):
    rng = float(2 ** bits - 1)
    out = {"mse": float(mean_squared_error(a, b))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # divide by zero when mse == 0
        out["psnr"] = finite_or_none(peak_signal_noise_ratio(a, b, data_range=rng))
    if min(a.shape) < 7:
        out["ssim"] = None  # skimage raises: the window exceeds the image
    else:
        out["ssim"] = float(structural_similarity(a, b, data_range=rng))
    out["hausdorff"] = finite_or_none(hausdorff_distance(a, b))
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: skimage_ref.py MANIFEST")
    with open(sys.argv[1]) as manifest:
        for line in manifest:
            if not line.strip():
                continue
            name, h, w, bits, pa, pb = line.split()
            h, w, bits = int(h), int(w), int(bits)
            dtype = np.uint8 if bits == 8 else np.uint16
            a = np.fromfile(pa, dtype="<u2").reshape(h, w).astype(dtype)
            b = np.fromfile(pb, dtype="<u2").reshape(h, w).astype(dtype)
            row = {"name": name}
            row.update(metrics(a, b, bits))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
