"""Image modes are converted faithfully (alpha onto white, 16-bit scaled, EXIF applied); bad files are named."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lora_llava.data.images import load_image, open_encoded
from lora_llava.data.samples import SampleError


def png16(path, mode_code: int, pixel: tuple[int, ...], size=4):
    """A 16-bit-per-channel PNG written by hand (Pillow cannot write 16-bit RGB): colour type 2 RGB, 6 RGBA."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    row = b"\x00" + struct.pack(">" + "H" * len(pixel), *pixel) * size
    header = struct.pack(">IIBBBBB", size, size, 16, mode_code, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size))
                     + chunk(b"IEND", b""))
    return path


MODES = [  # (name, image maker, expected RGB at (0, 0))
    ("RGBA transparent -> white", lambda: Image.new("RGBA", (8, 8), (0, 0, 0, 0)), (255, 255, 255)),
    ("RGBA half red over white", lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 128)), (255, 127, 127)),
    ("LA transparent -> white", lambda: Image.new("LA", (8, 8), (0, 0)), (255, 255, 255)),
    ("L grey", lambda: Image.new("L", (8, 8), 100), (100, 100, 100)),
    ("CMYK cyan", lambda: Image.new("CMYK", (8, 8), (255, 0, 0, 0)), (0, 255, 255)),
    ("1 bit", lambda: Image.new("1", (8, 8), 1), (255, 255, 255)),
]


@pytest.mark.parametrize("name,make,expected", MODES, ids=[m[0] for m in MODES])
def test_modes_convert_to_rgb(tmp_path, name, make, expected):
    path = tmp_path / "x.png" if make().mode != "CMYK" else tmp_path / "x.jpg"
    make().save(path)
    image = load_image("s", path.name, tmp_path)
    assert image.mode == "RGB"
    assert all(abs(a - b) <= 2 for a, b in zip(image.getpixel((0, 0)), expected))


def test_palette_with_transparency_is_composited_onto_white(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    image.save(tmp_path / "p.png", transparency=0)
    out = load_image("s", "p.png", tmp_path)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (200, 0, 0)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "g16.png")
    assert load_image("s", "g16.png", tmp_path).getpixel((0, 0)) == (128, 128, 128)


def test_sixteen_bit_rgb_and_rgba(tmp_path):
    png16(tmp_path / "rgb16.png", 2, (65535, 32768, 0))
    png16(tmp_path / "rgba16.png", 6, (0, 0, 0, 0))
    assert load_image("s", "rgb16.png", tmp_path).getpixel((0, 0)) == (255, 128, 0)
    assert load_image("s", "rgba16.png", tmp_path).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image("s", "r.jpg", tmp_path)
    assert out.size == (20, 40)
    assert out.getpixel((10, 2))[0] > 200 and out.getpixel((10, 2))[1] < 60  # the strip is now on top


def test_encoded_bytes_decode_lazily_and_freshly():
    buffer = io.BytesIO()
    Image.new("RGBA", (6, 6), (0, 0, 255, 0)).save(buffer, "PNG")
    lazy = open_encoded(buffer.getvalue())
    assert isinstance(lazy, Image.Image)
    assert load_image("s", lazy).getpixel((0, 0)) == (255, 255, 255)
    assert lazy._im is None, "the shared image object must not keep decoded pixels"


def test_undecodable_bytes_are_reported_for_their_sample():
    ref = open_encoded(b"definitely not an image")
    with pytest.raises(SampleError, match=r"'hub-7'.*cannot decode image"):
        load_image("hub-7", ref)
