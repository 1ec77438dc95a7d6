"""pyservice.py - the study's pipeline as a Python web service: the baseline for the load bench.

At start: the slice (env SLICE_PNG) as float64 gray, its SVD with numpy. Per request
GET /reconstruct?k=K (other parameters ignored): U[:, :k] @ diag(S[:k]) @ Vt[:k] with np.dot,
rounded and clipped to 8 bits, encoded as PNG with Pillow. Served by gunicorn (WSGI):
    OPENBLAS_NUM_THREADS=1 SLICE_PNG=slice.png gunicorn -w 2 -b 127.0.0.1:PORT pyservice:app
"""
import io
import os
from urllib.parse import parse_qs

import numpy as np
from PIL import Image

_img = np.asarray(Image.open(os.environ["SLICE_PNG"]).convert("L"), dtype=np.float64)
U, S, Vt = np.linalg.svd(_img, full_matrices=False)
RANK = S.shape[0]


def reconstruct(k):
    r = np.dot(np.dot(U[:, :k], np.diag(S[:k])), Vt[:k])
    px = np.clip(np.round(r), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px, "L").save(buf, "PNG")
    return buf.getvalue()


def app(environ, start_response):
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        k = int(qs.get("k", [str(RANK)])[0])
        if not 1 <= k <= RANK:
            raise ValueError
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"bad k\n"]
    body = reconstruct(k)
    start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", str(len(body)))])
    return [body]
