#!/usr/bin/python3
"""table.py - docs/COMPRESSION.md's table: bytes per slice and decode times for svdslice (psnr
35/40/45 without the original, the defaults), PNG, JPEG-LS (CharLS) and JPEG 2000 (OpenJPEG),
lossless and at the same PSNR, over Debian's ITK example slices and synthetic phantoms.

  bench/compress/table.py [BUILD_DIR]     (default build; needs compress_bench built there,
                                           opj_compress/opj_decompress from libopenjp2-tools)
Prints Markdown; every figure comes from this run."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "http"))
sys.dont_write_bytecode = True
import util  # noqa: E402  (PNG writer and phantoms of the tests)

DATA = "/usr/share/doc/insighttoolkit4-examples/examples/Data"
ITK = ["BrainProtonDensitySlice.png", "BrainProtonDensitySlice256x256.png", "BrainT1Slice.png", "FatMRISlice.png",
       "BrainMidSagittalSlice.png", "VisibleWomanHeadSlice.png"]
TARGETS = (35, 40, 45)


def psnr(a, b, peak):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def write_pgm(path, px, bits):
    h, w = px.shape
    with open(path, "wb") as f:
        f.write(b"P5\n%d %d\n%d\n" % (w, h, (1 << bits) - 1))
        f.write(px.astype(">u2" if bits == 16 else np.uint8).tobytes())


def read_pgm(path):
    with Image.open(path) as im:  # 8- and 16-bit PGM, comments included
        return np.array(im).astype(np.int64)


def j2k(px, bits, tmp, q=None):
    """(bytes, decode ms, decoded pixels) of OpenJPEG: lossless (q None) or at -q PSNR."""
    src, out, back = (os.path.join(tmp, n) for n in ("in.pgm", "out.j2k", "back.pgm"))
    write_pgm(src, px, bits)
    args = ["opj_compress", "-i", src, "-o", out] + ([] if q is None else ["-q", "%g" % q])
    subprocess.run(args, check=True, capture_output=True)
    best = None
    for _ in range(3):  # decode time: the best of three runs of the tool (a process start included)
        t0 = time.perf_counter()
        subprocess.run(["opj_decompress", "-i", out, "-o", back], check=True, capture_output=True)
        dt = (time.perf_counter() - t0) * 1e3
        best = dt if best is None else min(best, dt)
    return os.path.getsize(out), best, read_pgm(back)


def j2k_at(px, bits, tmp, target):
    """The smallest -q (in 0.25 dB steps from the target) whose decoded PSNR reaches target."""
    peak = (1 << bits) - 1
    q = target
    for _ in range(40):
        size, ms, back = j2k(px, bits, tmp, q)
        got = psnr(px, back, peak)
        if got >= target:
            return size, ms, got
        q += 0.25
    return size, ms, got


def png_decode_ms(path):
    best = None
    for _ in range(5):
        t0 = time.perf_counter()
        with Image.open(path) as im:
            im.load()
        dt = (time.perf_counter() - t0) * 1e3
        best = dt if best is None else min(best, dt)
    return best


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    bench = os.path.join(build, "compress_bench")
    tmp = tempfile.mkdtemp(prefix="svdslice-table-")
    slices = [(n, os.path.join(DATA, n)) for n in ITK]
    for h, w, bits, seed in ((256, 170, 16, 3), (256, 256, 8, 5)):
        p = os.path.join(tmp, "phantom%dx%d-%d.png" % (w, h, bits))
        with open(p, "wb") as f:
            f.write(util.png_encode(util.phantom(h, w, bits, seed=seed)))
        slices.append((os.path.basename(p), p))
    out = subprocess.run([bench] + [p for _, p in slices], check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    table = []
    for (name, path), r in zip(slices, rows):
        px = util.load_gray(path)
        bits = r["bits"]
        png = r["png_bytes"]
        jl_size, jl_ms, jl_back = j2k(px, bits, tmp)
        assert np.array_equal(jl_back, px), name + ": JPEG 2000 lossless is not"
        row = dict(name=name, shape="%dx%d/%d" % (r["width"], r["height"], bits), png=png,
                   png_ms=png_decode_ms(path), jpegls=r["jpegls_bytes"], jpegls_ms=r["jpegls_decode_ms"],
                   deflate=r["deflate_bytes"], default=r["default_bytes"], default_miss=r["default_miss_ms"],
                   j2k_lossless=jl_size, j2k_lossless_ms=jl_ms)
        for t in TARGETS:
            s = r["psnr%d" % t]
            js, jms, jgot = j2k_at(px, bits, tmp, t)
            row["svd%d" % t] = s
            row["j2k%d" % t] = dict(bytes=js, ms=jms, psnr=jgot)
        table.append(row)

    kb = lambda n: "%.1f" % (n / 1000)  # noqa: E731
    x = lambda n, png: "%.2fx" % (n / png)  # noqa: E731
    print("Bytes per slice in kB (1000 bytes) and against the slice's PNG as given; measured %s.\n"
          % time.strftime("%Y-%m-%d"))
    print("| slice | PNG | svdslice default (original kept) | JPEG-LS lossless | PNG filters + deflate (svdslice's) "
          "| JPEG 2000 lossless |")
    print("|---|---|---|---|---|---|")
    for t in table:
        p = t["png"]
        print("| %s %s | %s | %s (%s) | %s (%s) | %s (%s) | %s (%s) |" % (
            t["name"], t["shape"], kb(p), kb(t["default"]), x(t["default"], p), kb(t["jpegls"]), x(t["jpegls"], p),
            kb(t["deflate"]), x(t["deflate"], p), kb(t["j2k_lossless"]), x(t["j2k_lossless"], p)))
    print()
    print("| slice | target | svdslice keep-original=false: kB (x PNG), rank, PSNR served | JPEG 2000 at the same "
          "PSNR: kB (x PNG), PSNR |")
    print("|---|---|---|---|")
    med = {t: [] for t in TARGETS}
    medj = {t: [] for t in TARGETS}
    for t in table:
        p = t["png"]
        for q in TARGETS:
            s, j = t["svd%d" % q], t["j2k%d" % q]
            med[q].append(s["bytes"] / p)
            medj[q].append(j["bytes"] / p)
            print("| %s | %d dB | %s (%s), k=%d, %.2f dB | %s (%s), %.2f dB |" % (
                t["name"], q, kb(s["bytes"]), x(s["bytes"], p), s["rank"], s["psnr"], kb(j["bytes"]),
                x(j["bytes"], p), j["psnr"]))
    print()
    for q in TARGETS:
        print("- psnr=%d: median svdslice %.2fx PNG, JPEG 2000 %.2fx PNG" % (q, statistics.median(med[q]),
                                                                       statistics.median(medj[q])))
    print()
    print("Decode / reconstruction times in ms (this machine, one thread where the tool allows):\n")
    print("| slice | svdslice k = stored rank at psnr=40, factors cached (blas kernel) | svdslice cache miss at "
          "psnr=40 (decode the quantised factors) | svdslice cache miss, defaults (decode the original + SVD) | "
          "PNG decode (PIL) | JPEG-LS decode (CharLS) | JPEG 2000 decode at 40 dB (opj_decompress, process) |")
    print("|---|---|---|---|---|---|---|")
    for t in table:
        s = t["svd40"]
        print("| %s | %.3f | %.2f | %.1f | %.2f | %.2f | %.1f |" % (
            t["name"], s["recon_ms"], s["miss_ms"], t["default_miss"], t["png_ms"], t["jpegls_ms"],
            t["j2k40"]["ms"]))


if __name__ == "__main__":
    main()
