#!/usr/bin/python3
"""alternatives.py - the factor encodings docs/COMPRESSION.md weighed, measured with numpy on
the ITK slices at a PSNR target: U*sqrt(S) and V*sqrt(S) quantised per column to int8 or int16
with a scale (max |column| / 127 or / 32767), then zlib level 9 (deflate); the rank is the
smallest whose quantised, rounded reconstruction reaches the target. svdslice's own encoding
(steps c/s_p, range coded) is measured by compress_bench / table.py.

  bench/compress/alternatives.py [PSNR]      (default 40)
Prints one line per slice: bytes for int8+deflate and int16+deflate, and the PNG's."""
import os
import sys
import zlib

import numpy as np
from PIL import Image

DATA = "/usr/share/doc/insighttoolkit4-examples/examples/Data"
ITK = ["BrainProtonDensitySlice.png", "BrainProtonDensitySlice256x256.png", "BrainT1Slice.png", "FatMRISlice.png",
       "BrainMidSagittalSlice.png", "VisibleWomanHeadSlice.png"]


def gray(path):
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))[..., 0].astype(np.float64) if im.mode not in ("L",) else \
            np.array(im).astype(np.float64)


def quant(x, levels):
    scale = np.abs(x).max(axis=0) / levels
    scale[scale == 0] = 1
    q = np.round(x / scale).astype(np.int8 if levels == 127 else np.int16)
    return q, scale


def encoded(A, U, S, Vt, k, levels, target):
    a, b = U[:, :k] * np.sqrt(S[:k]), Vt[:k].T * np.sqrt(S[:k])
    qa, sa = quant(a, levels)
    qb, sb = quant(b, levels)
    R = (qa * sa) @ (qb * sb).T
    R = np.clip(np.floor(R + 0.5), 0, 255)
    mse = np.mean((R - A) ** 2)
    ok = mse == 0 or 10 * np.log10(255.0 ** 2 / mse) >= target
    size = len(zlib.compress(qa.tobytes() + qb.tobytes(), 9)) + 4 * 2 * k + 4 * len(S)  # + scales, S
    return ok, size


def main():
    target = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    for name in ITK:
        path = os.path.join(DATA, name)
        A = gray(path)
        U, S, Vt = np.linalg.svd(A, full_matrices=False)
        tail = np.cumsum((S ** 2)[::-1])[::-1]
        budget = A.size * 255.0 ** 2 / 10 ** (target / 10)
        k0 = int(np.argmax(np.append(tail[1:], 0) <= budget)) + 1
        out = []
        for levels in (127, 32767):
            k = k0
            while True:
                ok, size = encoded(A, U, S, Vt, k, levels, target)
                if ok or k == len(S):
                    break
                k += 1
            out.append((size, k))
        png = os.path.getsize(path)
        print("%s: int8+deflate %d bytes (k=%d, %.2fx PNG), int16+deflate %d bytes (k=%d, %.2fx PNG), PNG %d"
              % (name, out[0][0], out[0][1], out[0][0] / png, out[1][0], out[1][1], out[1][0] / png, png))


if __name__ == "__main__":
    main()
