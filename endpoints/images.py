"""The vision image pipeline: chat ``image_url`` parts in, compact base64 images out.

Used by the HTTP API (chat ``content`` parts of type ``image_url``) and the playground's uploads;
the rules are those of ``spec/PRODUCT.md`` §5 (Vision):

* **Input.** ``data:`` URLs with base64 (``data:image/png;base64,…``). The declared media type is
  ignored: the format is identified from the bytes (Pillow), and only JPEG, PNG, GIF and WebP are
  accepted. Animated images (GIF, WebP, APNG) send their first frame, with a warning.
  ``http(s)`` URLs are refused with a 400 asking for a ``data:`` URL, unless fetching is enabled
  (see *Fetching* below).
* **Limits** (each a 400 naming the image's index and size): more than 100 images in a request;
  any side over 8000 px; when more than 20 images are sent, any side over 2000 px. Pillow's
  decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) is honoured too.
* **Pixel budget.** An image is decoded only when the pixels to decode fit ``IMAGE_MAX_PIXELS``
  (env ``FONDASI_IMAGE_MAX_PIXELS``, default 4096×4096 ≈ 16.8 Mpx), checked from the header
  before anything is decoded; a JPEG counts at the size it is decoded to (libjpeg's DCT scaling,
  below), so any JPEG within the side limit passes. Past the budget: a 400 naming the image and
  the limit. Decoding costs a few bytes per pixel, so the budget bounds memory.
* **Orientation.** EXIF orientation is applied, so the model sees the picture as people do.
* **Resizing.** When the long edge exceeds 1568 px or the estimate exceeds 1,600 tokens, the image
  is scaled down, keeping its aspect ratio, until both hold. Sides under 200 px give a warning.
* **Encoding.** Re-encoded as JPEG (quality 85, optimised) or, when the image really has
  transparency, PNG. Metadata (EXIF, GPS, ICC, comments) is not carried over.
* **Tokens.** ``ceil(width × height / 750)`` on the size actually sent: the spec's examples
  (200×200 ≈ 54, 1000×1000 ≈ 1334, 1092×1092 ≈ 1590) are all the ceiling, never the rounding.

Indexes in messages are the ``index`` given to :func:`prepare_image` (0-based, in request order,
when called through :func:`prepare_images`).

Speed: a JPEG that will be scaled down is decoded with libjpeg's DCT scaling
(``Image.draft``), at the smallest power-of-two reduction that is still at least the target
size, and only then resampled with Lanczos; other formats are resampled with a reducing gap.
Orientation is applied after the resize, on the smaller image.

Fetching (off by default). With the Django setting ``IMAGE_FETCH_ENABLED`` (or, when Django is
not configured or the setting is absent, the environment variable ``FONDASI_IMAGE_FETCH``) true,
``http(s)`` URLs are fetched with httpx:

* the host name is resolved once per hop, and **every** address it resolves to must be public
  (not loopback, link-local, private, multicast, reserved, unspecified, or otherwise not global;
  IPv4 addresses embedded in IPv6 ones are checked too), else the fetch is refused;
* the connection is made **to the checked address itself** (the URL's host is replaced by the IP;
  the ``Host`` header keeps the name, and for HTTPS the ``sni_hostname`` request extension keeps
  SNI and certificate verification on the name), so no second DNS lookup happens and a DNS
  rebinding answer cannot slip in between check and connect. The client ignores proxy
  environment variables (a proxy would resolve the name again);
* redirects are followed by hand, at most 3, and each hop is resolved and checked the same way;
* the body is read streaming and abandoned past ``IMAGE_FETCH_MAX_BYTES`` (default 20 MiB; counted
  after content decoding, so a gzip bomb is cut off too), and the whole fetch (DNS, redirects,
  body) must finish within ``IMAGE_FETCH_TIMEOUT`` seconds (default 10).

Every failure is a :class:`~endpoints.errors.ServingError`, almost always a 400 from
:func:`~endpoints.errors.invalid`. This module imports without Django settings configured.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import io
import ipaddress
import math
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import ExifTags, Image, UnidentifiedImageError

from .errors import ServingError, invalid

# --- the rules (spec/PRODUCT.md §5) ---------------------------------------------------------
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP")
MAX_IMAGES = 100
MAX_SIDE = 8000
MANY_IMAGES = 20  # more than this many images in one request ...
MANY_IMAGES_MAX_SIDE = 2000  # ... and each may be at most this many px on a side
MAX_LONG_EDGE = 1568
MAX_TOKENS = 1600
PIXELS_PER_TOKEN = 750
SMALL_EDGE = 200
JPEG_QUALITY = 85
# Lanczos from at most ``REDUCING_GAP`` times the target, after a cheap box reduction: visually
# the same as a full Lanczos pass, several times faster on big PNG/WebP images.
REDUCING_GAP = 3.0
# Images of one request decoded at the same time: Pillow releases the GIL while it decodes,
# resamples and encodes, so a few threads help; more would only multiply peak memory.
DECODE_CONCURRENCY = max(1, min(4, os.cpu_count() or 1))

# Images of one request fetched at the same time (http(s) URLs, when fetching is enabled).
FETCH_CONCURRENCY = 8
MAX_REDIRECTS = 3
DEFAULT_FETCH_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_FETCH_TIMEOUT = 10.0
DEFAULT_MAX_PIXELS = 4096 * 4096
USER_AGENT = "fondasi-gateway"

# What EXIF orientation (tag 0x0112) asks for, as Pillow's ``ImageOps.exif_transpose`` does it.
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = {5, 6, 7, 8}

# Formats people commonly send by mistake, by their magic bytes: named in the 400 so that the
# fix ("convert your HEIC to JPEG") is obvious. Only for the message; never decoded.
_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "Photoshop (PSD)"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_FTYP_BRANDS: dict[bytes, str] = {
    b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
    b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF",
}


@dataclass(frozen=True)
class PreparedImage:
    """One image as it will be sent to the model, and what was done to it.

    ``original_size`` is the size as displayed (after EXIF orientation), ``sent_size`` that of
    ``data``; ``tokens`` is :func:`estimate_tokens` of ``sent_size``. ``warnings`` are sentences
    for the user (animated image, small image), never reasons to reject.
    """

    index: int
    source_format: str
    original_size: tuple[int, int]
    sent_size: tuple[int, int]
    original_bytes: int
    sent_bytes: int
    media_type: str
    data: bytes = field(repr=False)
    tokens: int
    warnings: tuple[str, ...] = ()

    @property
    def base64(self) -> str:
        """``data`` in standard base64 (with padding)."""
        return base64.b64encode(self.data).decode("ascii")

    @property
    def data_url(self) -> str:
        """``data:<media_type>;base64,<data>``, ready for an ``image_url`` part."""
        return f"data:{self.media_type};base64,{self.base64}"

    @property
    def resized(self) -> bool:
        """Whether the sent size differs from the (oriented) original size."""
        return self.sent_size != self.original_size

    def report(self) -> dict[str, Any]:
        """What was sent, JSON-able, without the image data itself (for logs and the UI)."""
        return {
            "index": self.index,
            "source_format": self.source_format,
            "original_size": list(self.original_size),
            "sent_size": list(self.sent_size),
            "original_bytes": self.original_bytes,
            "sent_bytes": self.sent_bytes,
            "media_type": self.media_type,
            "tokens": self.tokens,
            "resized": self.resized,
            "warnings": list(self.warnings),
        }


def estimate_tokens(width: int, height: int) -> int:
    """Tokens an image of ``width`` × ``height`` px costs: ``ceil(width × height / 750)``.

    The ceiling, because it reproduces every example of the spec (200×200 → 54,
    1000×1000 → 1334, 1092×1092 → 1590) and never under-counts usage.
    """
    if width <= 0 or height <= 0:
        return 0
    # Integer ceiling: exact for any size, no float rounding at the boundary.
    return -(-(width * height) // PIXELS_PER_TOKEN)


def target_size(width: int, height: int) -> tuple[int, int]:
    """The size an image of ``width`` × ``height`` is sent at.

    Unchanged when its long edge is at most 1568 px and it costs at most 1,600 tokens; otherwise
    scaled by one factor (aspect ratio kept, to the pixel) so that both limits hold.
    """
    if max(width, height) <= MAX_LONG_EDGE and estimate_tokens(width, height) <= MAX_TOKENS:
        return width, height
    scale = min(
        MAX_LONG_EDGE / max(width, height),
        math.sqrt(MAX_TOKENS * PIXELS_PER_TOKEN / (width * height)),
    )
    # Floor (with a hair of slack so 1568/3000*3000 is not 1567.9999 → 1567), then make sure:
    # the float scale may still land one pixel over a limit.
    w = max(1, math.floor(width * scale + 1e-9))
    h = max(1, math.floor(height * scale + 1e-9))
    while max(w, h) > MAX_LONG_EDGE or estimate_tokens(w, h) > MAX_TOKENS:
        if w >= h:
            w -= 1
            h = max(1, round(w * height / width))
        else:
            h -= 1
            w = max(1, round(h * width / height))
    return w, h


# --- data: URLs -------------------------------------------------------------------------------
def decode_data_url(url: str, index: int = 0) -> bytes:
    """The bytes of a base64 ``data:`` URL; a 400 naming ``index`` if it is not one.

    The declared media type is not checked (the format is detected from the bytes later).
    Whitespace inside the payload (line-wrapped base64) and missing ``=`` padding are tolerated;
    any other character outside the standard base64 alphabet is not.
    """
    if not isinstance(url, str) or not url[:5].lower() == "data:":
        raise invalid(
            f"Image {index} is not a data: URL; send the image as data:image/jpeg;base64,… "
            "(or image/png, image/gif, image/webp)."
        )
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise invalid(f"Image {index}'s data: URL has no comma before its data; send data:<type>;base64,<data>.")
    params = [part.strip().lower() for part in header.split(";")]
    if "base64" not in params[1:]:
        raise invalid(
            f"Image {index}'s data: URL is not base64-encoded; send it as data:<type>;base64,<data>."
        )
    compact = "".join(payload.split())
    if not compact:
        raise invalid(f"Image {index}'s data: URL holds no data.")
    if len(compact) % 4:
        compact += "=" * (-len(compact) % 4)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(
            f"Image {index}'s data: URL does not hold valid base64; encode the image file's bytes "
            "with standard base64 (A–Z, a–z, 0–9, +, /)."
        ) from None
    if not raw:
        raise invalid(f"Image {index}'s data: URL holds no data.")
    return raw


# --- decoding, resizing, encoding ---------------------------------------------------------------
def prepare_image(raw: bytes, index: int = 0, *, total: int = 1) -> PreparedImage:
    """Validate, orient, scale and re-encode one image (synchronous and CPU-bound).

    ``total`` is the number of images in the request, for the "more than 20 images" rule.
    Raises :class:`ServingError` (400) naming ``index`` when the bytes are not an accepted,
    decodable image or break a size limit; never any other exception for bad input.
    """
    if not raw:
        raise _refused(f"Image {index} is empty.", "{name} is empty: choose the image file again.")
    try:
        # Only the four accepted plugins are tried: the format comes from the bytes, and no
        # other decoder ever sees untrusted input.
        im = Image.open(io.BytesIO(raw), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _bomb(index, exc) from None
    except Image.DecompressionBombWarning as exc:  # raised only where warnings are errors
        raise _bomb(index, exc) from None
    except UnidentifiedImageError:
        raise _unsupported(raw, index) from None
    except Exception:  # a plugin choked on a malformed header
        raise _refused(
            f"Image {index} could not be read: its data is corrupt or not an image. "
            "Send a JPEG, PNG, GIF or WebP file.", NOT_SUPPORTED,
        ) from None

    with im:
        source_format = im.format or "?"
        try:
            prepared = _prepare_open(im, raw, index, total, source_format)
        except ServingError:
            raise
        except Exception:
            # Pillow raises OSError, ValueError, SyntaxError, struct.error... on truncated or
            # corrupt data; all of them mean the same thing to the person sending the image.
            raise _refused(
                f"Image {index} could not be decoded as {_format_name(source_format)}: "
                "the data is truncated or corrupt.",
                f"{{name}} could not be read as {_format_name(source_format)}: the file is damaged or incomplete.",
            ) from None
    if prepared.source_format == "MPO":
        # Reported as JPEG: an MPO is a JPEG with extra pictures appended (many cameras write
        # one), opened by Pillow's JPEG plugin; its first picture is the photo.
        prepared = dataclasses.replace(prepared, source_format="JPEG")
    return prepared


def _prepare_open(
    im: Image.Image, raw: bytes, index: int, total: int, source_format: str
) -> PreparedImage:
    stored_w, stored_h = im.size
    # EXIF is in the header for JPEG/WebP/GIF; a PNG may keep it after the pixel data, and
    # reading it there decodes the whole image, which must wait until the size checks passed.
    early = source_format != "PNG" or "exif" in im.info
    orientation = _orientation(im) if early else 1
    shown_w, shown_h = _oriented(stored_w, stored_h, orientation)

    # Size limits, from the header alone: nothing has been decoded yet.
    if max(stored_w, stored_h) > MAX_SIDE:
        raise invalid(
            f"Image {index} is {shown_w}×{shown_h} px; images may be at most {MAX_SIDE} px on a side."
        )
    if total > MANY_IMAGES and max(stored_w, stored_h) > MANY_IMAGES_MAX_SIDE:
        raise invalid(
            f"Image {index} is {shown_w}×{shown_h} px; when more than {MANY_IMAGES} images are sent "
            f"in one request ({total} here), each may be at most {MANY_IMAGES_MAX_SIDE} px on a side."
        )
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; an operator who lowered the
    # limit means it as a limit. (With the default, ~89 Mpx, the 8000 px rule is stricter.)
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and stored_w * stored_h > limit:
        raise invalid(
            f"Image {index} is {shown_w}×{shown_h} px, more pixels than this server decodes "
            f"({limit}); send a smaller image."
        )

    budget = max_pixels()
    if source_format not in ("JPEG", "MPO"):
        _check_budget(index, (shown_w, shown_h), (stored_w, stored_h), budget)

    warnings: list[str] = []
    # An MPO (a JPEG with extra pictures: stereo pair, depth map) is a JPEG whose first picture
    # is the photo; it is not "animated".
    if source_format != "MPO" and getattr(im, "is_animated", False):
        # Frame 0 is the current frame after open (is_animated seeks back to it).
        warnings.append(
            f"Image {index} is an animated {_format_name(source_format)}; only its first frame is sent."
        )

    if not early:
        im.load()
        orientation = _orientation(im)
        shown_w, shown_h = _oriented(stored_w, stored_h, orientation)
    swapped = orientation in _SWAPS_SIDES
    target_w, target_h = target_size(shown_w, shown_h)
    stored_target = (target_h, target_w) if swapped else (target_w, target_h)
    if source_format in ("JPEG", "MPO") and stored_target != (stored_w, stored_h):
        # libjpeg scales by 1/2, 1/4 or 1/8 while decoding (DCT scaling), picking the largest
        # reduction that stays at least the requested size: most of the full-size decode is
        # never done, and the Lanczos pass below still makes the final pixels.
        im.draft("RGB", stored_target)
    # A JPEG is decoded at its drafted size (at best 1/8 of each side): what the budget counts.
    _check_budget(index, (shown_w, shown_h), im.size, budget)
    im.load()

    icc_profile = im.info.get("icc_profile")
    work, alpha = _normalise_mode(im)
    if work.size != stored_target:
        work = _resize(work, stored_target)
    # Rotating the small image is cheaper than rotating the big one.
    if orientation in _TRANSPOSE:
        work = work.transpose(_TRANSPOSE[orientation])

    # Vision models read pixel values as sRGB; a Display P3 / Adobe RGB photo would look washed
    # out to them, and the profile is not sent along. Converted on the small image: cheap.
    work = _to_srgb(work, icc_profile)
    if alpha and work.getchannel("A").getextrema() == (255, 255):
        # An alpha channel that is opaque everywhere: nothing to keep, and JPEG is far smaller.
        work = work.convert("L" if work.mode == "LA" else "RGB")
        alpha = False

    # Nothing of the source's metadata goes out (EXIF with GPS, ICC, text chunks, dpi): Pillow
    # would carry some of it over from ``info`` when saving a PNG.
    work.info = {}
    buffer = io.BytesIO()
    if alpha:
        media_type = "image/png"
        work.save(buffer, "PNG")  # zlib level 6: `optimize` costs ~10× the time for ~1 %
    else:
        media_type = "image/jpeg"
        work.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    data = buffer.getvalue()

    sent_w, sent_h = work.size
    if min(sent_w, sent_h) < SMALL_EDGE:
        warnings.append(
            f"Image {index} is sent at {sent_w}×{sent_h} px; images under {SMALL_EDGE} px on an "
            "edge may degrade quality."
        )
    return PreparedImage(
        index=index,
        source_format=source_format,
        original_size=(shown_w, shown_h),
        sent_size=(sent_w, sent_h),
        original_bytes=len(raw),
        sent_bytes=len(data),
        media_type=media_type,
        data=data,
        tokens=estimate_tokens(sent_w, sent_h),
        warnings=tuple(warnings),
    )


# Lanczos on horizontal strips, one per core: Pillow releases the GIL while resampling, and
# ``resize(box=…)`` maps a source region onto its strip with the same maths (the strips are
# pixel-identical to one resize). Worth it from this many output rows.
TILE_MIN_ROWS = 256
_TILE_WORKERS = max(1, min(4, os.cpu_count() or 1))
_tile_pool: Any = None


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to ``size`` with Lanczos (after a box reduction when far larger)."""
    global _tile_pool
    (src_w, src_h), (w, h) = image.size, size
    reduces = max(src_w / w, src_h / h) >= REDUCING_GAP  # then Pillow box-reduces first: one call
    if reduces or _TILE_WORKERS == 1 or h < TILE_MIN_ROWS:
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    if _tile_pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _tile_pool = ThreadPoolExecutor(_TILE_WORKERS, thread_name_prefix="image-resize")
    rows = [h * i // _TILE_WORKERS for i in range(_TILE_WORKERS + 1)]

    def strip(i: int) -> Image.Image:
        box = (0, src_h * rows[i] / h, src_w, src_h * rows[i + 1] / h)
        return image.resize((w, rows[i + 1] - rows[i]), Image.Resampling.LANCZOS, box=box)

    out = Image.new(image.mode, size)
    for i, part in enumerate(_tile_pool.map(strip, range(_TILE_WORKERS))):
        out.paste(part, (0, rows[i]))
    return out


def _check_budget(index: int, shown: tuple[int, int], decoded: tuple[int, int], budget: int) -> None:
    """A 400 when decoding ``decoded`` pixels would pass the pixel budget (nothing is decoded yet)."""
    if decoded[0] * decoded[1] > budget:
        raise invalid(
            f"Image {index} is {shown[0]}×{shown[1]} px: decoding it needs {decoded[0] * decoded[1] / 1e6:.1f} "
            f"megapixels, more than this server's budget of {budget / 1e6:.1f} megapixels per image "
            "(FONDASI_IMAGE_MAX_PIXELS). Send a smaller image, or a JPEG, which is decoded scaled down."
        )


def _oriented(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation in _SWAPS_SIDES else (width, height)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1–8); 1 when absent or unreadable."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # corrupt EXIF is not worth rejecting the picture over
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _normalise_mode(im: Image.Image) -> tuple[Image.Image, bool]:
    """``im`` in a mode that resamples and encodes well, and whether it has transparency.

    Transparency: an alpha channel (RGBA, LA, PA...) or a ``transparency`` entry (palette,
    grey or RGB images with a transparent colour). Opaque images become L or RGB (JPEG).
    """
    mode = im.mode
    transparent = "transparency" in im.info
    if mode == "RGBA":
        return im, True  # no copy: the decoded image is the largest thing in memory
    if mode in ("RGBa", "PA") or (mode in ("P", "RGB") and transparent):
        return im.convert("RGBA"), True
    if mode == "P" and im.palette is not None and im.palette.mode == "RGBA":
        return im.convert("RGBA"), True
    if mode in ("LA", "La") or (mode in ("L", "1") and transparent):
        return im.convert("LA"), True
    if mode in ("L", "RGB"):
        return im, False
    if mode == "1":
        return im.convert("L"), False
    if mode.startswith("I"):
        # 16/32-bit grey (16-bit PNG): scale to 8 bits; a plain convert would clip to white.
        return im.convert("I").point(lambda v: v / 256).convert("L"), False
    return im.convert("RGB"), False  # CMYK, YCbCr, P without transparency, ...


_srgb_profile: Any = None


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """``image`` converted to sRGB from its embedded RGB ICC profile; unchanged if it has none,
    it is already sRGB, it is not RGB(A), or the profile cannot be used (never an error)."""
    global _srgb_profile
    if not icc or image.mode not in ("RGB", "RGBA"):
        return image
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if source.profile.xcolor_space.strip() != "RGB":
            return image  # e.g. the CMYK profile of a CMYK JPEG already converted naively
        if (source.profile.profile_description or "").lower().startswith("srgb"):
            return image
        if _srgb_profile is None:
            _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        converted = ImageCms.profileToProfile(image, source, _srgb_profile, outputMode=image.mode)
        return converted if converted is not None else image
    except Exception:  # a broken profile is the sender's metadata problem, not a reason to fail
        return image


def _format_name(fmt: str) -> str:
    return {"WEBP": "WebP", "MPO": "JPEG"}.get(fmt, fmt)


def _bomb(index: int, exc: Exception) -> ServingError:
    return invalid(
        f"Image {index} has too many pixels to decode safely ({exc}); images may be at most "
        f"{MAX_SIDE}×{MAX_SIDE} px."
    )


def _unsupported(raw: bytes, index: int) -> ServingError:
    """The 400 for bytes that are not JPEG, PNG, GIF or WebP, naming the format if it is known."""
    found: str | None = None
    for offset, magic, name in _OTHER_FORMATS:
        if raw[offset:offset + len(magic)] == magic:
            found = name
            break
    if found is None and raw[4:8] == b"ftyp":
        found = _FTYP_BRANDS.get(raw[8:12])
    if found is None and raw.lstrip()[:5].lower() in (b"<?xml", b"<svg ", b"<svg>"):
        found = "SVG"
    if found:
        return _refused(
            f"Image {index} is a {found} image, which is not accepted; convert it to JPEG, PNG, "
            "GIF or WebP and send it again.",
            f"{{name}} is a {found} image, which is not supported: convert it to JPEG, PNG, GIF or WebP.",
        )
    return _refused(
        f"Image {index} is not a JPEG, PNG, GIF or WebP image (its bytes are none of these, "
        "whatever type its URL declares); send one of these formats.", NOT_SUPPORTED,
    )


# --- what the pages say -------------------------------------------------------------------------

#: How the pages word an upload that is no image they take (``{name}``: the file's name).
NOT_SUPPORTED = "{name} is not a supported image (JPEG, PNG, GIF or WebP)."
_NUMBERED = re.compile(r"^Image \d+(?=[ '])")


def _refused(message: str, plain: str) -> ServingError:
    """A 400 worded for API clients (``message``: "Image 0 …", numbered from 0 as the request's
    image parts are), with ``plain``: how the pages say it to a person, ``{name}`` the file's name."""
    error = invalid(message)
    error.plain = plain  # type: ignore[attr-defined]
    return error


def for_person(problem: ServingError | str, name: str) -> str:
    """What the playground shows for an image error or warning: named by ``name`` (the file's
    name, or "Image 1"…, counted from 1), in plain words where the API's are technical."""
    plain = getattr(problem, "plain", None)
    if plain:
        return plain.format(name=name)
    text = problem.message if isinstance(problem, ServingError) else problem
    return _NUMBERED.sub(lambda _: name, text, count=1)


# --- settings -------------------------------------------------------------------------------
def _raw_setting(name: str, env: str) -> Any:
    """A Django setting, else the environment variable ``env``, else None.

    Follows ``endpoints.providers.http.setting``: outside a configured Django (scripts, the
    benchmark) the environment is used; a Django setting that is present wins.
    """
    value: Any = None
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        try:
            value = getattr(settings, name, None)
        except (ImproperlyConfigured, ImportError):
            value = None
    except ImportError:
        value = None
    if value is None:
        value = os.environ.get(env)
    return None if value == "" else value


def fetch_enabled() -> bool:
    """``IMAGE_FETCH_ENABLED`` (Django) or ``FONDASI_IMAGE_FETCH`` (env): off unless truthy.

    Environment values 1/true/yes/on (any case) mean on; anything else means off.
    """
    value = _raw_setting("IMAGE_FETCH_ENABLED", "FONDASI_IMAGE_FETCH")
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _number_setting(name: str, env: str, default: float) -> float:
    value = _raw_setting(name, env)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number > 0:  # also NaN
        raise ServingError(f"The server setting {name} must be a positive number.", "INTERNAL_ERROR")
    return number


def max_pixels() -> int:
    """``IMAGE_MAX_PIXELS`` (env ``FONDASI_IMAGE_MAX_PIXELS``): the most pixels decoded for one image."""
    return int(_number_setting("IMAGE_MAX_PIXELS", "FONDASI_IMAGE_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def fetch_max_bytes() -> int:
    """``IMAGE_FETCH_MAX_BYTES`` (env ``FONDASI_IMAGE_FETCH_MAX_BYTES``), default 20 MiB."""
    return int(_number_setting("IMAGE_FETCH_MAX_BYTES", "FONDASI_IMAGE_FETCH_MAX_BYTES", DEFAULT_FETCH_MAX_BYTES))


def fetch_timeout() -> float:
    """``IMAGE_FETCH_TIMEOUT`` seconds (env ``FONDASI_IMAGE_FETCH_TIMEOUT``), default 10."""
    return _number_setting("IMAGE_FETCH_TIMEOUT", "FONDASI_IMAGE_FETCH_TIMEOUT", DEFAULT_FETCH_TIMEOUT)


# --- fetching -------------------------------------------------------------------------------
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_allowed(ip: IPAddress) -> bool:
    """Whether an image may be fetched from ``ip``: only public, unicast addresses.

    Refused: loopback, link-local, private, multicast, reserved, unspecified, site-local, and
    anything else Python does not consider global (carrier-grade NAT 100.64/10, ...). IPv4
    addresses carried inside IPv6 ones (IPv4-mapped, 6to4, Teredo) are checked as well, since
    the stack may route to them.
    """
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip.teredo is not None:
            candidates.extend(ip.teredo)
    for candidate in candidates:
        if (
            candidate.is_loopback
            or candidate.is_link_local
            or candidate.is_private
            or candidate.is_multicast  # 224/4 counts as "global" for ipaddress
            or candidate.is_reserved
            or candidate.is_unspecified
            or (isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local)
            or not candidate.is_global
        ):
            return False
    return True


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself), in resolver order."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Drop an IPv6 scope id ("fe80::1%eth0"); link-local is refused either way.
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


class _FetchFailed(Exception):
    """Internal: a reason to show after "Image N could not be fetched from HOST: "."""


async def fetch_image(url: str, index: int = 0) -> bytes:
    """The body of ``url`` under the fetch rules (see the module docstring); a 400 otherwise.

    Call only when :func:`fetch_enabled`; this function does not check it.
    """
    max_bytes = fetch_max_bytes()
    seconds = fetch_timeout()
    try:
        first = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise invalid(f"Image {index} has a malformed URL.") from None
    host = _host_for_messages(first)
    try:
        # One deadline for everything: DNS, every hop, the body.
        async with asyncio.timeout(seconds):
            return await _fetch(first, index, max_bytes, seconds)
    except _FetchFailed as exc:
        raise invalid(f"Image {index} could not be fetched from {host}: {exc}") from None
    except TimeoutError:
        raise invalid(
            f"Image {index} could not be fetched from {host}: no complete answer within {seconds:g} s."
        ) from None


def _host_for_messages(url: httpx.URL) -> str:
    # Host only: the path and query may carry signed tokens; the userinfo, a password.
    return url.host or "the URL"


async def _fetch(url: httpx.URL, index: int, max_bytes: int, seconds: float) -> bytes:
    async with httpx.AsyncClient(
        # No proxies from the environment (a proxy would resolve the name itself, outside our
        # check), no automatic redirects (each hop is checked below), TLS verified on the name.
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(seconds),
        headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
    ) as client:
        for hop in range(MAX_REDIRECTS + 1):
            response = await _send_pinned(client, url)
            try:
                if response.is_redirect:  # 301/302/303/307/308 with a Location
                    location = response.headers["location"]
                    if hop == MAX_REDIRECTS:
                        raise _FetchFailed(f"it redirected more than {MAX_REDIRECTS} times.")
                    try:
                        url = url.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise _FetchFailed("it redirected to a malformed URL.") from None
                    continue
                if response.status_code != 200:
                    raise _FetchFailed(f"it answered HTTP {response.status_code}.")
                return await _read_capped(response, max_bytes)
            finally:
                await response.aclose()
    raise AssertionError("unreachable")  # the loop returns or raises


async def _send_pinned(client: httpx.AsyncClient, url: httpx.URL) -> httpx.Response:
    """Send GET ``url`` to a checked address of its host, streaming; raises :class:`_FetchFailed`.

    The host is resolved here, once; all its addresses must pass :func:`address_allowed`, and
    the request is sent to those IPs (in order, the next on a connection failure) with the
    name kept in ``Host`` and, for HTTPS, in SNI / certificate verification.
    """
    if url.scheme not in ("http", "https"):
        raise _FetchFailed("only http and https URLs are fetched.")
    name = url.raw_host.decode("ascii")  # IDNA (punycode) form: what DNS and TLS see
    if not name:
        raise _FetchFailed("the URL has no host.")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = await resolve_host(name, port)
    except (OSError, UnicodeError):
        raise _FetchFailed("its host name could not be resolved.") from None
    if not addresses:
        raise _FetchFailed("its host name could not be resolved.")
    if not all(address_allowed(ip) for ip in addresses):
        # Refuse if *any* address is non-public: a name that mixes public and private answers
        # is an attempt to reach the inside. The addresses are not echoed (they are internal).
        raise _FetchFailed(
            "its host is a loopback, private, link-local or otherwise non-public address, "
            "which this server never fetches from."
        )
    host_header = url.netloc.decode("ascii")  # name[:port], without userinfo
    extensions = {"sni_hostname": name} if url.scheme == "https" else {}
    last_error: Exception | None = None
    for ip in addresses:
        request = client.build_request(
            "GET", url.copy_with(host=str(ip)), headers={"Host": host_header}, extensions=extensions
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last_error = exc
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise _FetchFailed(f"the connection failed ({type(exc).__name__}).") from None
    raise _FetchFailed(f"could not connect ({_describe(last_error)}).")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, read streaming; abandoned as soon as it is known to exceed ``max_bytes``."""
    too_big = f"the image is larger than {_mebibytes(max_bytes)}, the most this server fetches."
    declared = response.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise _FetchFailed(too_big)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise _FetchFailed(too_big)
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError as exc:
        raise _FetchFailed(f"the download failed ({type(exc).__name__}).") from None
    return b"".join(chunks)


def _mebibytes(n: int) -> str:
    return f"{n / 1048576:g} MiB" if n >= 1048576 else f"{n} bytes"


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "no address"
    text = str(exc).strip()
    return text[:200] if text else type(exc).__name__


# --- a request's images ---------------------------------------------------------------------
async def image_bytes(url: str, index: int = 0) -> bytes:
    """The raw bytes behind one ``image_url`` URL: a ``data:`` URL decoded, or an http(s) URL
    fetched when fetching is enabled; a 400 naming ``index`` otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise invalid(f"Image {index} has no URL; send data:image/jpeg;base64,… as its url.")
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        # Decoding megabytes of base64 takes milliseconds: keep it off the event loop.
        return await asyncio.to_thread(decode_data_url, url, index)
    if scheme in ("http", "https"):
        if not fetch_enabled():
            raise invalid(
                f"Image {index} is an {scheme} URL, and this server does not fetch images; send "
                "the image inline as a data: URL with base64 instead "
                "(data:image/jpeg;base64,…)."
            )
        return await fetch_image(url, index)
    raise invalid(
        f"Image {index}'s URL is not a data: URL; send the image as data:image/jpeg;base64,… "
        "(or image/png, image/gif, image/webp)."
    )


async def prepare_images(urls: list[str]) -> list[PreparedImage]:
    """Prepare every image of a request, in input order; indexes are 0-based positions.

    Checks the count first (more than 100 → 400) so nothing is decoded or fetched for a request
    that will be refused. Images are fetched/decoded and prepared in worker threads, a few at
    a time. If several fail, the error of the lowest index is raised, so the message does not
    depend on timing.
    """
    total = len(urls)
    if total > MAX_IMAGES:
        raise invalid(f"This request has {total} images; send at most {MAX_IMAGES} images per request.")
    if not urls:
        return []
    decoding = asyncio.Semaphore(DECODE_CONCURRENCY)
    # A fetched body (up to IMAGE_FETCH_MAX_BYTES) is held from its download until its decode
    # ends: bounding fetch-and-decode bounds that memory (data: URLs are in the request anyway).
    fetching = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(index: int, url: str) -> PreparedImage:
        remote = isinstance(url, str) and url.lstrip()[:5].lower() != "data:"
        async with fetching if remote else contextlib.nullcontext():
            raw = await image_bytes(url, index)
            async with decoding:
                return await asyncio.to_thread(prepare_image, raw, index, total=total)

    tasks = [asyncio.ensure_future(one(index, url)) for index, url in enumerate(urls)]
    prepared: list[PreparedImage] = []
    try:
        # Awaited in order: when image i fails, every image before it has succeeded, so the
        # error raised is the lowest index's whatever the timing; the later ones are cancelled
        # (a thread already decoding finishes, but nothing new is fetched or started).
        for task in tasks:
            prepared.append(await task)
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        # Collect them, so no "exception was never retrieved" is logged for the cancelled.
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()
    return prepared
