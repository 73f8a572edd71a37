"""Image loading that never lets a bad file through silently: path safety, decoding, mode conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from lora_llava.data.samples import SampleError


def resolve_path(sample_id: str, ref: str, root: str | Path | None) -> Path:
    """The file for an image reference, which must stay inside `root` when a root is given."""
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


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with EXIF orientation applied; transparency composited onto white (not black)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def load_image(sample_id: str, ref: Any, root: str | Path | None = None) -> Image.Image:
    """A decoded RGB image for `ref` (a path or a PIL image); raises SampleError naming the sample and file."""
    if isinstance(ref, Image.Image):
        return to_rgb(ref)
    path = resolve_path(sample_id, str(ref), root)
    if not path.is_file():
        raise SampleError(sample_id, "image file not found", str(path))
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except Image.DecompressionBombError as err:
        raise SampleError(sample_id, f"image exceeds the decompression-bomb limit: {err}", str(path)) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise SampleError(sample_id, f"cannot decode image ({err})", str(path)) from None
