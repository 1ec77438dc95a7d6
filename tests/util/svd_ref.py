"""svd_ref.py - float64 reference for tests/test_svd.c: rank-k reconstructions by numpy's SVD.

usage: svd_ref.py IN.raw M N OUT.raw K [K ...]
IN.raw holds M*N little-endian uint16 samples (row-major); OUT.raw receives,
for each K in order, the M*N float64 (little-endian) values of
U[:, :K] diag(S[:K]) Vt[:K, :] from a float64 SVD of the image.
"""
import sys

import numpy as np


def main():
    src, m, n, dst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    ks = [int(k) for k in sys.argv[5:]]
    a = np.fromfile(src, dtype="<u2").astype(np.float64)
    if a.size != m * n:
        sys.exit("svd_ref: expected %d samples, got %d" % (m * n, a.size))
    u, s, vt = np.linalg.svd(a.reshape(m, n), full_matrices=False)
    with open(dst, "wb") as out:
        for k in ks:
            r = (u[:, :k] * s[:k]) @ vt[:k, :]
            out.write(r.astype("<f8").tobytes())


if __name__ == "__main__":
    main()
