"""Benchmark: the vision image pipeline (``endpoints.images.prepare_image``) vs a naive resize.

Generates a few 12-megapixel (4000×3000) photo-like JPEGs in memory (colour gradients plus
noise, quality 90, so they compress like camera photos), then times, in the same run and on
the same bytes:

1. **naive** — ``Image.open`` + full-size decode + ``resize`` (Lanczos) to the size the pipeline
   sends + JPEG encode (quality 85, optimised, as the pipeline encodes);
2. **prepare_image** — the pipeline: header checks, JPEG draft (DCT-scaled) decode, Lanczos,
   the same JPEG encode.

Each is repeated, interleaved, and the median per image is reported, with the speed-up ratio
(target ≥ 3×). Absolute times depend on the machine; the ratio is the figure to read.

    .venv/bin/python bench/images.py
    .venv/bin/python bench/images.py --images 5 --repeats 9
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageChops, ImageFilter  # noqa: E402

from endpoints.images import JPEG_QUALITY, prepare_image, target_size  # noqa: E402

WIDTH, HEIGHT = 4000, 3000
TARGET_RATIO = 3.0


def photo_like(seed: int) -> bytes:
    """A 4000×3000 JPEG (quality 90) with smooth gradients and fine noise, like a photo."""
    size = (WIDTH, HEIGHT)
    # Smooth structure: gradients in different directions per channel, blurred noise "blobs".
    gradient = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
    radial = Image.radial_gradient("L").resize(size, Image.Resampling.BILINEAR)
    blobs = (
        Image.effect_noise((WIDTH // 50, HEIGHT // 50), 60 + seed * 7)
        .resize(size, Image.Resampling.BICUBIC)
        .filter(ImageFilter.GaussianBlur(3))
    )
    # Fine grain (sensor noise / texture): what makes photos expensive to compress and decode.
    # sigma ~10 gives ~4 MB at quality 90 for 12 Mpx, like a phone camera's photo.
    grain = [Image.effect_noise(size, 9 + seed) for _ in range(3)]
    channels = [
        ImageChops.add(ImageChops.blend(gradient, blobs, 0.5), grain[0], scale=1.0, offset=-128),
        ImageChops.add(ImageChops.blend(radial, blobs.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.5), grain[1], offset=-128),
        ImageChops.add(ImageChops.blend(gradient.transpose(Image.Transpose.ROTATE_180), radial, 0.5), grain[2], offset=-128),
    ]
    image = Image.merge("RGB", channels)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def naive(raw: bytes) -> bytes:
    """Full decode, Lanczos straight to the pipeline's target size, same JPEG encode."""
    with Image.open(io.BytesIO(raw)) as image:
        image = image.convert("RGB")  # full-size decode
        resized = image.resize(target_size(*image.size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def pipeline(raw: bytes) -> bytes:
    return prepare_image(raw).data


def breakdown(raw: bytes, repeats: int) -> dict[str, float]:
    """Median ms of each step, to show where the time goes (and the floor of the ratio)."""
    target = target_size(WIDTH, HEIGHT)

    def full() -> Image.Image:
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image

    def draft() -> Image.Image:
        image = Image.open(io.BytesIO(raw))
        image.draft("RGB", target)
        image.load()
        return image

    big, small = full(), draft()
    sent = small.resize(target, Image.Resampling.LANCZOS)
    steps: dict[str, Callable[[], object]] = {
        "decode, full size": full,
        f"decode, draft ({small.width}×{small.height})": draft,
        "Lanczos from full size": lambda: big.resize(target, Image.Resampling.LANCZOS),
        "Lanczos from draft": lambda: small.resize(target, Image.Resampling.LANCZOS),
        "JPEG encode (q85, optimize)": lambda: sent.save(io.BytesIO(), "JPEG", quality=JPEG_QUALITY, optimize=True),
    }
    result = {}
    for name, step in steps.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1000)
        result[name] = statistics.median(times)
    return result


def timed(function: Callable[[bytes], bytes], raw: bytes) -> float:
    start = time.perf_counter()
    function(raw)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3, help="photo-like JPEGs to generate (3)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per image and method (7)")
    args = parser.parse_args()

    print(f"generating {args.images} photo-like {WIDTH}×{HEIGHT} JPEGs (quality 90)...", file=sys.stderr)
    photos = [photo_like(seed) for seed in range(args.images)]

    rows = []
    for number, raw in enumerate(photos, 1):
        prepared = prepare_image(raw)
        naive(raw)  # warm both paths (imports, allocator) before timing
        naive_ms: list[float] = []
        pipeline_ms: list[float] = []
        for _ in range(args.repeats):  # interleaved, so drift on the machine hits both alike
            naive_ms.append(timed(naive, raw))
            pipeline_ms.append(timed(pipeline, raw))
        n, p = statistics.median(naive_ms), statistics.median(pipeline_ms)
        rows.append((number, len(raw), prepared, n, p))

    print()
    print(f"| image | input | sent | naive ms | prepare_image ms | speed-up |")
    print(f"|---|---|---|---:|---:|---:|")
    for number, size, prepared, n, p in rows:
        w, h = prepared.sent_size
        print(
            f"| {number} | {WIDTH}×{HEIGHT}, {size / 1e6:.1f} MB | {w}×{h}, {prepared.sent_bytes / 1e3:.0f} kB, "
            f"{prepared.tokens} tok | {n:.1f} | {p:.1f} | {n / p:.2f}× |"
        )
    total_naive = statistics.median([row[3] for row in rows])
    total_pipeline = statistics.median([row[4] for row in rows])
    ratio = total_naive / total_pipeline
    print(
        f"| **median** | | | **{total_naive:.1f}** | **{total_pipeline:.1f}** | "
        f"**{ratio:.2f}×** |"
    )
    print()
    print("where the time goes (image 1, median ms):")
    print()
    print("| step | ms |")
    print("|---|---:|")
    for name, ms in breakdown(photos[0], args.repeats).items():
        print(f"| {name} | {ms:.1f} |")
    print()
    print(f"target ≥ {TARGET_RATIO:g}×: {'met' if ratio >= TARGET_RATIO else 'NOT met'} "
          f"({args.repeats} repeats per image, median)")


if __name__ == "__main__":
    main()
