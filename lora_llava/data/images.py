"""Image loading that never lets a bad file through silently: path safety, decoding, mode conversion.

Every failure is a SampleError naming the sample, the file and the reason: a missing file, a path that escapes
the image root, a corrupt or truncated file, an image over Pillow's decompression-bomb limit.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, ImageOps

from lora_llava.data.samples import SampleError

NAME_MAX, PATH_MAX = 255, 4096  # Linux limits; longer names fail in the OS with an unhelpful error

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def resolve_path(sample_id: str, ref: str, root: str | Path | None) -> Path:
    """The file for an image reference, which must stay inside `root` when a root is given."""
    check_path_name(sample_id, ref)
    path = Path(ref)
    if root is None:
        return path
    root = Path(root).resolve()
    if path.is_absolute():
        raise SampleError(sample_id, f"absolute image path {ref!r} is not allowed; use a path under {root}", ref)
    full = (root / path).resolve()
    if root != full and root not in full.parents:
        raise SampleError(sample_id, f"image path {ref!r} escapes the image root {root}", ref)
    return full


def check_path_name(sample_id: str, ref: str) -> None:
    """Names no file system can hold: a NUL character, or over-long names (reported, not crashed on)."""
    if "\x00" in ref:
        raise SampleError(sample_id, "image path contains a NUL character", repr(ref[:80]))
    if len(ref.encode()) > PATH_MAX or any(len(part.encode()) > NAME_MAX for part in Path(ref).parts):
        raise SampleError(sample_id, f"image path is too long ({len(ref)} characters)", ref[:80] + "...")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with EXIF orientation applied; transparency composited onto white (not black); 16-bit scaled."""
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        # A plain convert("L") clips 16-bit values at 255, turning most of the picture white. 32-bit "I" images
        # are scaled the same way only when they use more than 8 bits.
        if image.mode != "I" or image.getextrema()[1] > 255:
            image = image.point(lambda v: v / 256)
        image = image.convert("L")
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _decode(sample_id: str, source, where: str | None) -> Image.Image:
    """Open and fully decode `source` (a path or a file object); every Pillow failure becomes a SampleError."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; such an image is refused like a larger one.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.load()
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise SampleError(sample_id, f"image exceeds the decompression-bomb limit ({err})", where) from None
    except PermissionError as err:
        raise SampleError(sample_id, f"cannot read image file: permission denied ({err.strerror})", where) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # OSError covers unreadable, unidentified and truncated files ("image file is truncated").
        raise SampleError(sample_id, f"cannot decode image: corrupt or truncated file ({err})", where) from None


def _encoded_bytes(image: Image.Image) -> bytes | None:
    """The encoded bytes behind a lazily opened in-memory image (how the data sources keep Hub images), so each
    use decodes a fresh copy and the shared object never caches its pixels; None for any other image."""
    fp = getattr(image, "fp", None)
    return fp.getvalue() if isinstance(image, ImageFile.ImageFile) and isinstance(fp, io.BytesIO) else None


def open_encoded(data: bytes) -> Image.Image | bytes:
    """A lazily decoded image for encoded bytes (a `datasets` image column read with decode=False). Bytes that
    Pillow cannot even identify are returned as they are, so the failure is reported for the right sample when
    the image is loaded, not while the whole split is being read."""
    try:
        return Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - any failure is reported later by load_image, naming the sample
        return data


def load_image(sample_id: str, ref: Any, root: str | Path | None = None) -> Image.Image:
    """A decoded RGB image for `ref`: a path (resolved under `root`), a PIL image, or encoded bytes.
    Raises SampleError naming the sample and file."""
    if isinstance(ref, (bytes, bytearray)):
        if not ref:
            raise SampleError(sample_id, "image field is empty (0 bytes)")
        return _decode(sample_id, io.BytesIO(ref), None)
    if isinstance(ref, Image.Image):
        encoded = _encoded_bytes(ref)
        if encoded is not None:
            return _decode(sample_id, io.BytesIO(encoded), getattr(ref, "filename", None) or None)
        return to_rgb(ref)
    path = resolve_path(sample_id, str(ref), root)
    try:
        found = path.is_file()
    except OSError as err:  # e.g. a name the file system refuses
        raise SampleError(sample_id, f"cannot look up image file ({err.strerror})", str(path)) from None
    if not found:
        hint = f" under data.image_root={root}" if root is not None else ""
        raise SampleError(sample_id, f"image file not found{hint}", str(path))
    return _decode(sample_id, path, str(path))
