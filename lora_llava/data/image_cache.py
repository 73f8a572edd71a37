"""Preprocessed pixels of image files, cached on disk across epochs.

ScienceQA recipes run several epochs; decoding and resizing the same PNG every epoch is work the GPU waits for.
The first epoch stores what the image processor produced for a sample's images (one .npz file, float32: ~1.3 MB
per 336 px view; anyres families store every tile and the `image_sizes` the model needs to unpad them); later
epochs read it back. Entries are keyed by the files (resolved path, size, modification time) and by a fingerprint
of the image processor (its class, its full config, tile grids included, and the transformers version), so
editing an image or changing the processor makes new entries rather than serving stale ones. The folder is
bounded: beyond `max_bytes` the least recently used entries are deleted. In-memory images (PIL objects from a
dataset) are processed every time: there is no decoding to save.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lora_llava.data.images import load_image, resolve_path

ENTRY_GLOB = "*.npz"
KEEP_AFTER_EVICTION = 0.9  # evict down to this share of the bound, so eviction does not run on every write


def default_cache_dir() -> Path:
    root = os.environ.get("LORA_LLAVA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lora_llava")
    return Path(root) / "pixels"


def processor_fingerprint(image_processor) -> str:
    import transformers

    text = f"{type(image_processor).__name__}|{transformers.__version__}|{image_processor.to_json_string()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PixelCache:
    def __init__(self, image_processor, root: str | Path | None = None, max_gb: float = 20.0):
        self.image_processor = image_processor
        self.root = Path(root) if root else default_cache_dir()
        self.folder = self.root / processor_fingerprint(image_processor)
        self.max_bytes = int(max_gb * 1024**3)
        self._bytes: int | None = None  # size of the whole root, counted on the first write
        self.hits = self.misses = 0

    def _entry(self, sample_id: str, refs: list, image_root) -> Path | None:
        """The entry of these image files, or None when one is in memory or absent (load_image says why)."""
        parts = []
        for ref in refs:
            if isinstance(ref, Image.Image):
                return None
            path = resolve_path(sample_id, str(ref), image_root)
            if not path.is_file():
                return None
            stat = path.resolve().stat()
            parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
        key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npz"

    def _open(self, entry: Path) -> dict[str, torch.Tensor] | None:
        try:
            with np.load(entry, allow_pickle=False) as arrays:
                out = {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # absent or torn by a killed writer
            return None
        os.utime(entry)  # marks it recently used for eviction
        return out

    def _write(self, entry: Path, inputs: dict[str, torch.Tensor]) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed, so a reader (another dataloader worker) never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{name: value.contiguous().numpy() for name, value in inputs.items()})
        os.replace(tmp, entry)
        self._grow(entry.stat().st_size)

    def _grow(self, size: int) -> None:
        if self._bytes is None:
            self._bytes = sum(f.stat().st_size for f in self.root.rglob(ENTRY_GLOB))
        else:
            self._bytes += size
        if self._bytes > self.max_bytes:
            self.evict()

    def evict(self) -> None:
        """Delete the least recently used entries until the folder is under KEEP_AFTER_EVICTION of the bound."""
        files = sorted(((f.stat().st_mtime, f.stat().st_size, f) for f in self.root.rglob(ENTRY_GLOB)),
                       key=lambda item: item[0])
        total = sum(size for _, size, _ in files)
        for _, size, f in files:
            if total <= self.max_bytes * KEEP_AFTER_EVICTION:
                break
            f.unlink(missing_ok=True)
            total -= size
        self._bytes = total

    def image_inputs(self, sample_id: str, refs: list, image_root, process: Callable) -> dict[str, torch.Tensor]:
        """`process(decoded images)` for one sample's images, from disk when these files were processed before.
        Bad files raise SampleError exactly as without the cache."""
        entry = self._entry(sample_id, refs, image_root)
        cached = self._open(entry) if entry is not None else None
        if cached is not None:
            self.hits += len(refs)
            return cached
        self.misses += len(refs)
        out = process([load_image(sample_id, ref, image_root) for ref in refs])
        if entry is not None:
            self._write(entry, out)
        return out

    def pixel_values(self, refs: list[tuple[str, Any]], image_root: str | Path | None = None) -> torch.Tensor:
        """Stacked pixel_values for (sample id, image reference) pairs, one image at a time, in order."""
        def process(images):
            return {"pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"]}

        return torch.cat([self.image_inputs(sid, [ref], image_root, process)["pixel_values"] for sid, ref in refs])


def build_image_cache(data_cfg, image_processor) -> PixelCache | None:
    """The cache `data.image_cache*` asks for, or None when it is switched off."""
    if not data_cfg.image_cache:
        return None
    return PixelCache(image_processor, data_cfg.image_cache_dir, data_cfg.image_cache_gb)
