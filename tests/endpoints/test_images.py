"""The vision image pipeline (endpoints/images.py): spec/PRODUCT.md §5.

Every image is generated here with Pillow. Fetch tests only ever connect to 127.0.0.1 (a local
http.server thread); refused addresses are refused before any connection is attempted, which
the tests check by failing on any send.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import httpx
import pytest
from PIL import Image

from endpoints import images
from endpoints.errors import ServingError
from endpoints.images import (
    PreparedImage,
    decode_data_url,
    estimate_tokens,
    prepare_image,
    prepare_images,
)


# --- helpers ------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid(size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB", colour=(200, 30, 30), **options) -> bytes:
    return encode(Image.new(mode, size, colour), fmt, **options)


def data_url(raw: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def opened(prepared: PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


def rejected(call: Callable[[], object]) -> ServingError:
    with pytest.raises(ServingError) as caught:
        call()
    assert caught.value.status == 400
    assert caught.value.code == "INVALID_PARAMETER_VALUE"
    return caught.value


async def rejected_async(awaitable) -> ServingError:
    with pytest.raises(ServingError) as caught:
        await awaitable
    assert caught.value.status == 400
    return caught.value


# --- formats ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_it_accepts_each_format(fmt):
    prepared = prepare_image(solid((320, 240), fmt), 0)

    assert prepared.source_format == fmt
    assert prepared.original_size == prepared.sent_size == (320, 240)
    assert prepared.media_type == "image/jpeg"
    assert opened(prepared).format == "JPEG"
    assert prepared.warnings == ()


@pytest.mark.asyncio
async def test_it_detects_the_format_from_the_bytes_not_the_declared_media_type():
    png = solid((300, 300), "PNG")

    [prepared] = await prepare_images([data_url(png, "image/gif")])

    assert prepared.source_format == "PNG"


def test_it_sends_only_the_first_frame_of_an_animated_gif_with_a_warning():
    frames = [Image.new("RGB", (300, 300), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    raw = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    prepared = prepare_image(raw, 2)

    assert prepared.source_format == "GIF"
    assert len(prepared.warnings) == 1
    assert "Image 2" in prepared.warnings[0] and "first frame" in prepared.warnings[0]
    r, g, b = opened(prepared).convert("RGB").getpixel((150, 150))
    assert r > 200 and b < 60  # red: the first frame


def test_it_does_not_warn_about_a_still_gif():
    assert prepare_image(solid((300, 300), "GIF"), 0).warnings == ()


def test_it_names_a_known_unaccepted_format():
    error = rejected(lambda: prepare_image(solid((300, 300), "BMP"), 4))

    assert "Image 4 is a BMP image" in error.message
    assert "JPEG, PNG, GIF or WebP" in error.message


def test_it_rejects_bytes_that_are_not_an_image():
    error = rejected(lambda: prepare_image(b"this is not an image at all, just text", 1))

    assert "Image 1 is not a JPEG, PNG, GIF or WebP image" in error.message


def test_it_rejects_a_truncated_image():
    raw = encode(Image.effect_noise((400, 400), 50).convert("RGB"), "JPEG")

    error = rejected(lambda: prepare_image(raw[: len(raw) // 2], 5))

    assert "Image 5" in error.message and "truncated or corrupt" in error.message


# --- orientation ----------------------------------------------------------------------------
def test_it_applies_the_exif_orientation():
    # Stored 300×200 with the left half red and the right half blue; orientation 6 means
    # "rotate 90° clockwise to display", so the picture is 200×300 with red on top.
    image = Image.new("RGB", (300, 200), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 150, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = encode(image, "JPEG", exif=exif.tobytes(), quality=95)

    prepared = prepare_image(raw, 0)

    assert prepared.original_size == (200, 300)
    assert prepared.sent_size == (200, 300)
    sent = opened(prepared).convert("RGB")
    assert sent.size == (200, 300)
    top, bottom = sent.getpixel((100, 20)), sent.getpixel((100, 280))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60
    assert "exif" not in sent.info  # metadata is not carried over


def test_it_applies_the_exif_orientation_before_choosing_the_size():
    # 3000×1000 stored, displayed 1000×3000: the long edge (now the height) is brought to 1568.
    image = Image.new("RGB", (3000, 1000), (10, 120, 10))
    exif = Image.Exif()
    exif[0x0112] = 8
    prepared = prepare_image(encode(image, "JPEG", exif=exif.tobytes()), 0)

    assert prepared.original_size == (1000, 3000)
    assert prepared.sent_size[1] == 1568 or estimate_tokens(*prepared.sent_size) <= 1600
    assert prepared.sent_size[0] < prepared.sent_size[1]


# --- size limits ----------------------------------------------------------------------------
def test_it_rejects_a_side_over_8000_px_naming_the_index_and_size():
    raw = solid((9000, 600), "PNG", mode="L", colour=0)

    error = rejected(lambda: prepare_image(raw, 3))

    assert error.message == "Image 3 is 9000×600 px; images may be at most 8000 px on a side."


@pytest.mark.asyncio
async def test_it_rejects_a_2100_px_side_when_21_images_are_sent():
    small = data_url(solid((300, 300), "PNG"))
    wide = data_url(solid((2100, 100), "PNG"))
    urls = [small] * 21
    urls[5] = wide

    error = await rejected_async(prepare_images(urls))

    assert error.message.startswith("Image 5 is 2100×100 px;")
    assert "more than 20 images" in error.message and "2000 px" in error.message


@pytest.mark.asyncio
async def test_it_accepts_20_images_of_2100_px():
    wide = data_url(solid((2100, 100), "PNG"))

    prepared = await prepare_images([wide] * 20)

    assert len(prepared) == 20
    assert [p.index for p in prepared] == list(range(20))
    assert all(p.original_size == (2100, 100) and max(p.sent_size) <= 1568 for p in prepared)


@pytest.mark.asyncio
async def test_it_rejects_more_than_100_images():
    tiny = data_url(solid((10, 10), "PNG"))

    error = await rejected_async(prepare_images([tiny] * 101))

    assert "101 images" in error.message and "at most 100" in error.message


@pytest.mark.asyncio
async def test_it_accepts_no_images():
    assert await prepare_images([]) == []


@pytest.mark.asyncio
async def test_it_reports_the_lowest_failing_index_when_several_images_fail():
    good = data_url(solid((300, 300), "PNG"))
    bad = data_url(b"not an image")

    error = await rejected_async(prepare_images([good, good, bad, good, bad]))

    assert error.message.startswith("Image 2 ")


def test_it_rejects_a_decompression_bomb():
    # A real PNG whose header claims 100000×100000 px: Pillow's guard refuses it at open,
    # before any pixel is decoded.
    raw = bytearray(solid((10, 10), "PNG"))
    ihdr = 8  # after the signature: length (4), "IHDR" (4), data (13), CRC (4)
    assert raw[ihdr + 4:ihdr + 8] == b"IHDR"
    raw[ihdr + 8:ihdr + 16] = struct.pack(">II", 100_000, 100_000)
    raw[ihdr + 21:ihdr + 25] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr + 4:ihdr + 21])))

    error = rejected(lambda: prepare_image(bytes(raw), 7))

    assert "Image 7" in error.message and "too many pixels" in error.message


def test_it_honours_a_lowered_max_image_pixels(monkeypatch):
    # Between MAX_IMAGE_PIXELS and twice it Pillow only warns; a limit is a limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    raw = solid((80, 80), "PNG")  # 6400 px

    with pytest.warns(Image.DecompressionBombWarning):
        error = rejected(lambda: prepare_image(raw, 0))
    assert "80×80 px" in error.message

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 6400 > 2 × 1000: Pillow's error
    error = rejected(lambda: prepare_image(raw, 0))
    assert "too many pixels" in error.message


def claiming(size: tuple[int, int]) -> bytes:
    """A small real PNG whose header claims ``size``: refused from the header, or it fails to decode."""
    raw = bytearray(solid((10, 10), "PNG"))
    ihdr = 8
    raw[ihdr + 8:ihdr + 16] = struct.pack(">II", *size)
    raw[ihdr + 21:ihdr + 25] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr + 4:ihdr + 21])))
    return bytes(raw)


BUDGET = ("more than this server's budget of {} megapixels per image (FONDASI_IMAGE_MAX_PIXELS). "
          "Send a smaller image, or a JPEG, which is decoded scaled down.")


def test_the_default_pixel_budget_refuses_an_8000_px_png_from_its_header():
    # 8000×8000 is within the side limit, but decoding it took ~800 MiB (RGBA).
    error = rejected(lambda: prepare_image(claiming((8000, 8000)), 4))
    assert error.message == "Image 4 is 8000×8000 px: decoding it needs 64.0 megapixels, " + BUDGET.format("16.8")


def test_an_image_past_the_pixel_budget_is_refused_and_one_at_it_decoded(settings):
    settings.IMAGE_MAX_PIXELS = 1000 * 1000
    error = rejected(lambda: prepare_image(solid((1250, 801), "WEBP"), 2))
    assert error.message == "Image 2 is 1250×801 px: decoding it needs 1.0 megapixels, " + BUDGET.format("1.0")
    assert prepare_image(solid((1000, 1000), "PNG"), 0).sent_size == (1000, 1000)


def test_a_jpeg_counts_against_the_pixel_budget_at_its_reduced_decoding_size(settings):
    settings.IMAGE_MAX_PIXELS = 2000 * 1500  # a 4000×3000 JPEG decodes at 1/2 scale (DCT scaling)
    assert prepare_image(solid((4000, 3000), "JPEG"), 0).sent_size == (1264, 948)
    settings.IMAGE_MAX_PIXELS = 2000 * 1500 - 1
    error = rejected(lambda: prepare_image(solid((4000, 3000), "JPEG"), 0))
    assert error.message == "Image 0 is 4000×3000 px: decoding it needs 3.0 megapixels, " + BUDGET.format("3.0")


# --- resizing and tokens ----------------------------------------------------------------------
def test_it_scales_a_3000_px_long_edge_to_1568_keeping_the_aspect_ratio():
    prepared = prepare_image(solid((3000, 600), "JPEG"), 0)

    w, h = prepared.sent_size
    assert w == 1568
    assert abs(w / h - 3000 / 600) < 0.02
    assert prepared.tokens <= 1600
    assert prepared.report()["resized"] is True
    assert opened(prepared).size == (w, h)


def test_it_scales_until_both_limits_hold():
    prepared = prepare_image(solid((3000, 2000), "PNG"), 0)

    w, h = prepared.sent_size
    assert max(w, h) <= 1568 and estimate_tokens(w, h) <= 1600
    assert abs(w / h - 1.5) < 0.01


def test_it_scales_1400x1400_down_to_at_most_1600_tokens():
    # Under the 1568 px edge, but 2614 tokens.
    prepared = prepare_image(solid((1400, 1400), "JPEG"), 0)

    w, h = prepared.sent_size
    assert w == h
    assert prepared.tokens == estimate_tokens(w, h) <= 1600
    assert prepared.tokens > 1590  # scaled just enough, not more


def test_it_leaves_an_image_within_the_limits_at_its_size():
    prepared = prepare_image(solid((1092, 1092), "JPEG"), 0)

    assert prepared.sent_size == (1092, 1092)
    assert prepared.tokens == 1590
    assert prepared.report()["resized"] is False


def test_it_decodes_a_large_jpeg_at_reduced_scale(monkeypatch):
    from PIL import JpegImagePlugin

    drafts: list[tuple] = []
    loaded: list[tuple[int, int]] = []
    real_draft, real_load = JpegImagePlugin.JpegImageFile.draft, JpegImagePlugin.JpegImageFile.load

    def draft(self, mode, size):
        drafts.append((mode, size))
        return real_draft(self, mode, size)

    def load(self):
        loaded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)

    prepared = prepare_image(solid((4000, 3000), "JPEG"), 0)

    assert prepared.sent_size == (1264, 948)
    assert drafts == [("RGB", (1264, 948))]
    assert loaded[0] == (2000, 1500)  # decoded at 1/2 scale, never at 4000×3000


def test_it_warns_about_an_image_under_200_px():
    prepared = prepare_image(solid((100, 100), "PNG"), 6)

    assert prepared.sent_size == (100, 100)
    assert len(prepared.warnings) == 1
    assert "Image 6" in prepared.warnings[0] and "may degrade quality" in prepared.warnings[0]


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((200, 200), 54), ((1000, 1000), 1334), ((1092, 1092), 1590), ((750, 1), 1), ((751, 1), 2)],
)
def test_it_estimates_tokens_as_the_ceiling_of_pixels_over_750(size, tokens):
    assert estimate_tokens(*size) == tokens


def test_it_counts_tokens_on_the_sent_size():
    prepared = prepare_image(solid((200, 200), "PNG"), 0)

    assert prepared.tokens == 54


# --- encoding ---------------------------------------------------------------------------------
def test_it_sends_an_image_with_transparency_as_png():
    image = Image.new("RGBA", (300, 300), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 150, 300))

    prepared = prepare_image(encode(image, "PNG"), 0)

    assert prepared.media_type == "image/png"
    sent = opened(prepared)
    assert sent.format == "PNG" and sent.mode == "RGBA"
    assert sent.getpixel((10, 10))[3] == 0 and sent.getpixel((290, 10))[3] == 255


def test_it_sends_a_transparent_palette_gif_as_png():
    image = Image.new("P", (300, 300), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 100, 300))
    raw = encode(image, "GIF", transparency=1)

    prepared = prepare_image(raw, 0)

    assert prepared.media_type == "image/png"


def test_it_sends_an_opaque_image_as_jpeg():
    prepared = prepare_image(solid((300, 300), "PNG"), 0)

    assert prepared.media_type == "image/jpeg"
    assert opened(prepared).format == "JPEG"


def test_it_sends_an_alpha_channel_that_is_opaque_everywhere_as_jpeg():
    prepared = prepare_image(solid((300, 300), "PNG", mode="RGBA", colour=(1, 2, 3, 255)), 0)

    assert prepared.media_type == "image/jpeg"


def test_it_scales_16_bit_grey_to_8_bits_instead_of_clipping():
    prepared = prepare_image(solid((300, 300), "PNG", mode="I;16", colour=32768), 0)

    grey = opened(prepared).getpixel((150, 150))
    assert 120 <= grey <= 136


def _linear_rgb_icc() -> bytes:
    """A minimal ICC v2 RGB profile: sRGB primaries, but linear (gamma 1.0) curves."""

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + b"\0" * 4 + struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))

    text = b"linear RGB\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * (4 + 4 + 2 + 1 + 67)
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 256) + b"\0\0"  # gamma 1.0 (u8.8)
    tags = [
        (b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
        + b"\0" * 12 + b"acsp" + b"\0" * 28 + struct.pack(">3i", 63190, 65536, 54061) + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def test_it_converts_an_image_with_another_rgb_profile_to_srgb():
    icc = _linear_rgb_icc()
    raw = solid((300, 300), "PNG", colour=(128, 128, 128), icc_profile=icc)

    prepared = prepare_image(raw, 0)

    sent = opened(prepared)
    assert "icc_profile" not in sent.info
    grey = sent.convert("RGB").getpixel((150, 150))
    assert all(180 <= channel <= 196 for channel in grey)  # linear 0.5 is sRGB ~188


def test_it_leaves_srgb_pixels_alone():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    raw = solid((300, 300), "PNG", colour=(128, 128, 128), icc_profile=srgb)

    grey = opened(prepare_image(raw, 0)).convert("RGB").getpixel((150, 150))

    assert all(125 <= channel <= 131 for channel in grey)


def test_it_reports_what_was_sent_without_the_data():
    prepared = prepare_image(solid((3000, 600), "PNG"), 9)

    report = prepared.report()

    assert json.loads(json.dumps(report)) == report
    assert set(report) == {
        "index", "source_format", "original_size", "sent_size", "original_bytes", "sent_bytes",
        "media_type", "tokens", "resized", "warnings",
    }
    assert report["index"] == 9 and report["original_size"] == [3000, 600]
    assert report["sent_bytes"] == len(prepared.data)
    assert "data" not in repr(prepared).replace("data_url", "")


def test_it_gives_the_image_as_base64_and_as_a_data_url():
    prepared = prepare_image(solid((300, 300), "PNG"), 0)

    assert base64.b64decode(prepared.base64) == prepared.data
    assert prepared.data_url.startswith("data:image/jpeg;base64,")
    assert decode_data_url(prepared.data_url) == prepared.data


# --- data: URLs -------------------------------------------------------------------------------
def test_it_decodes_a_data_url_with_line_breaks_and_without_padding():
    raw = b"\x89PNG-ish bytes!"
    text = base64.b64encode(raw).decode().rstrip("=")

    assert decode_data_url(f"data:image/png;base64,{text[:8]}\n{text[8:]}") == raw


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("data:image/png;base64,!!!not base64???", "does not hold valid base64"),
        ("data:image/png;base64,", "holds no data"),
        ("data:image/png,rawbytes", "not base64-encoded"),
        ("data:image/png;base64", "no comma"),
        ("file:///etc/passwd", "not a data: URL"),
    ],
)
def test_it_rejects_a_malformed_data_url(url, problem):
    error = rejected(lambda: decode_data_url(url, 8))

    assert "Image 8" in error.message and problem in error.message


@pytest.mark.asyncio
async def test_it_rejects_garbage_base64_through_the_request_path():
    error = await rejected_async(prepare_images(["data:image/jpeg;base64,@@@@"]))

    assert error.message.startswith("Image 0's data: URL does not hold valid base64")


@pytest.mark.asyncio
async def test_it_rejects_a_url_of_another_scheme():
    error = await rejected_async(prepare_images(["ftp://example.com/cat.png"]))

    assert "not a data: URL" in error.message


# --- http(s) URLs -----------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """Fail on any HTTP request; the list records what was attempted."""
    attempts: list[str] = []

    async def refuse(self, request, **kwargs):
        attempts.append(str(request.url))
        raise AssertionError(f"no request may be sent, but one went to {request.url}")

    monkeypatch.setattr(httpx.AsyncClient, "send", refuse)
    return attempts


@pytest.fixture
def fetching(settings, monkeypatch):
    monkeypatch.delenv("FONDASI_IMAGE_FETCH", raising=False)
    settings.IMAGE_FETCH_ENABLED = True
    settings.IMAGE_FETCH_TIMEOUT = 5
    return settings


@pytest.mark.asyncio
async def test_it_asks_for_a_data_url_when_fetching_is_off(settings, monkeypatch, no_network):
    monkeypatch.delenv("FONDASI_IMAGE_FETCH", raising=False)
    settings.IMAGE_FETCH_ENABLED = False

    error = await rejected_async(prepare_images(["https://example.com/cat.jpg"]))

    assert error.message.startswith("Image 0 is an https URL")
    assert "send the image inline as a data: URL with base64" in error.message
    assert no_network == []


def test_it_is_off_by_default_and_reads_the_environment_without_the_setting(settings, monkeypatch):
    del settings.IMAGE_FETCH_ENABLED
    monkeypatch.delenv("FONDASI_IMAGE_FETCH", raising=False)
    assert images.fetch_enabled() is False

    monkeypatch.setenv("FONDASI_IMAGE_FETCH", "true")
    assert images.fetch_enabled() is True

    settings.IMAGE_FETCH_ENABLED = False  # the Django setting wins
    assert images.fetch_enabled() is False


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cat.png",
        "http://10.0.0.1/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/cat.png",
        "https://localhost/cat.png",
        "http://[::ffff:127.0.0.1]/cat.png",
        "http://0.0.0.0/cat.png",
    ],
)
async def test_it_refuses_to_fetch_from_loopback_private_and_link_local_addresses(fetching, no_network, url):
    error = await rejected_async(prepare_images([url]))

    assert error.message.startswith("Image 0 could not be fetched from ")
    assert "non-public address" in error.message
    assert no_network == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("224.0.0.1", False),  # multicast (which ipaddress calls global)
        ("240.0.0.1", False),  # reserved
        ("0.0.0.0", False),
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
    ],
)
def test_it_allows_only_public_addresses(address, allowed):
    import ipaddress

    assert images.address_allowed(ipaddress.ip_address(address)) is allowed


# A local server: the only thing fetch tests connect to.
class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
    hosts: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hosts.append(self.headers.get("Host", ""))
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server(fetching, monkeypatch) -> Iterator[tuple[str, dict, list]]:
    """(base URL, routes, Host headers seen) of an http.server on 127.0.0.1, which — and only
    which — the address check is told to allow."""
    import ipaddress

    loopback = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(images, "address_allowed", lambda ip: ip == loopback)
    handler = type("Handler", (_Handler,), {"routes": {}, "hosts": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", handler.routes, handler.hosts
    finally:
        httpd.shutdown()
        httpd.server_close()


def _body(payload: bytes, *, length: bool = True, status: int = 200):
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")  # a lie; ignored
        if length:
            handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()
        handler.close_connection = True

    return route


def _redirect(location: str):
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


@pytest.mark.asyncio
async def test_it_fetches_an_image_when_fetching_is_on(server):
    base, routes, hosts = server
    routes["/cat.png"] = _body(solid((400, 300), "PNG"))

    [prepared] = await prepare_images([f"{base}/cat.png"])

    assert prepared.source_format == "PNG" and prepared.sent_size == (400, 300)
    assert hosts == [base.removeprefix("http://")]


@pytest.mark.asyncio
async def test_it_connects_to_the_address_it_checked_and_keeps_the_name_in_host(server, monkeypatch):
    # The name resolves once per hop, and that answer is where the request goes: a second,
    # rebinding answer never gets asked for.
    import ipaddress

    base, routes, hosts = server
    port = int(base.rsplit(":", 1)[1])
    routes["/cat.png"] = _body(solid((400, 300), "JPEG"))
    lookups: list[str] = []

    async def resolve(host: str, port: int):
        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(images, "resolve_host", resolve)

    [prepared] = await prepare_images([f"http://images.example:{port}/cat.png"])

    assert prepared.source_format == "JPEG"
    assert lookups == ["images.example"]
    assert hosts == [f"images.example:{port}"]


@pytest.mark.asyncio
async def test_it_follows_a_redirect_and_checks_the_next_hop(server):
    base, routes, hosts = server
    routes["/start"] = _redirect("/cat.webp")
    routes["/cat.webp"] = _body(solid((300, 300), "WEBP"))

    [prepared] = await prepare_images([f"{base}/start"])

    assert prepared.source_format == "WEBP"
    assert len(hosts) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/cat.png", "http://[::1]:1/cat.png"],
)
async def test_it_refuses_a_redirect_to_a_non_public_address(server, target):
    base, routes, hosts = server
    routes["/start"] = _redirect(target)

    error = await rejected_async(prepare_images([f"{base}/start"]))

    assert "non-public address" in error.message
    assert len(hosts) == 1  # only the first hop ever reached a server


@pytest.mark.asyncio
async def test_it_follows_at_most_3_redirects(server):
    base, routes, hosts = server
    for hop in range(4):
        routes[f"/{hop}"] = _redirect(f"/{hop + 1}")
    routes["/4"] = _body(solid((300, 300), "PNG"))

    error = await rejected_async(prepare_images([f"{base}/0"]))

    assert "redirected more than 3 times" in error.message
    assert len(hosts) == 4

    [prepared] = await prepare_images([f"{base}/1"])  # 3 redirects: fine
    assert prepared.source_format == "PNG"


@pytest.mark.asyncio
@pytest.mark.parametrize("declared", [True, False])
async def test_it_refuses_a_body_over_the_size_cap(server, settings, declared):
    base, routes, _ = server
    settings.IMAGE_FETCH_MAX_BYTES = 1000
    payload = encode(Image.effect_noise((200, 200), 60), "PNG")
    assert len(payload) > 1000
    routes["/big.png"] = _body(payload, length=declared)

    error = await rejected_async(prepare_images([f"{base}/big.png"]))

    assert "Image 0 could not be fetched from 127.0.0.1" in error.message
    assert "larger than 1000 bytes" in error.message


@pytest.mark.asyncio
async def test_it_gives_up_on_a_slow_server(server, settings):
    base, routes, _ = server
    settings.IMAGE_FETCH_TIMEOUT = 0.3

    def slow(handler):
        time.sleep(1.5)
        _body(b"late")(handler)

    routes["/slow.png"] = slow

    started = time.monotonic()
    error = await rejected_async(prepare_images([f"{base}/slow.png"]))

    assert time.monotonic() - started < 1.4  # the server would answer after 1.5 s
    assert "no complete answer within 0.3 s" in error.message


@pytest.mark.asyncio
async def test_it_reports_an_error_status_of_the_image_server(server):
    base, _, _ = server

    error = await rejected_async(prepare_images([f"{base}/missing.png"]))

    assert "answered HTTP 404" in error.message


@pytest.mark.asyncio
async def test_it_rejects_fetched_bytes_that_are_not_an_image(server):
    base, routes, _ = server
    routes["/page.html"] = _body(b"<html><body>hello</body></html>")

    error = await rejected_async(prepare_images([f"{base}/page.html"]))

    assert "Image 0 is not a JPEG, PNG, GIF or WebP image" in error.message


def test_the_resize_in_strips_gives_the_same_pixels_as_one_resize():
    from PIL import Image as PILImage

    from endpoints.images import _resize

    rng = __import__("random").Random(3)
    source = PILImage.frombytes("RGB", (2000, 1500), bytes(rng.randrange(256) for _ in range(2000 * 1500 * 3)))
    whole = source.resize((1264, 948), PILImage.Resampling.LANCZOS)
    assert _resize(source, (1264, 948)).tobytes() == whole.tobytes()


def test_the_pages_name_a_refused_upload_by_its_file_in_plain_words():
    from endpoints.images import for_person

    error = rejected(lambda: prepare_image(b"this is not an image at all, just text", 0))
    assert error.message.startswith("Image 0 is not a JPEG, PNG, GIF or WebP image")  # the API's own wording
    assert for_person(error, "photo.png") == "photo.png is not a supported image (JPEG, PNG, GIF or WebP)."
    bmp = rejected(lambda: prepare_image(solid((300, 300), "BMP"), 2))
    assert for_person(bmp, "scan.bmp") == (
        "scan.bmp is a BMP image, which is not supported: convert it to JPEG, PNG, GIF or WebP.")
    big = rejected(lambda: prepare_image(solid((8001, 2)), 0))
    assert for_person(big, "Image 1") == "Image 1 is 8001×2 px; images may be at most 8000 px on a side."
    small = prepare_image(solid((100, 100)), 0)
    assert for_person(small.warnings[0], "icon.png").startswith("icon.png is sent at 100×100 px;")
