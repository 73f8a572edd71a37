"""Preprocessed pixels of image files, cached on disk across epochs.

ScienceQA recipes run several epochs; decoding and resizing the same PNG every epoch is work the GPU waits for.
The first epoch stores each image's `pixel_values` exactly as the image processor produced them (one .npy file,
float32, ~1.3 MB at 336 px); later epochs read them back. Entries are keyed by the file (resolved path, size,
modification time) and by a fingerprint of the image processor (its class, its full config, the transformers
version), so editing an image or changing the processor makes new entries rather than serving stale ones. The
folder is bounded: beyond `max_bytes` the least recently used entries are deleted. In-memory images (PIL objects
from a dataset) are processed every time: there is no decoding to save.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lora_llava.data.images import load_image, resolve_path

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

    def _entry(self, path: Path) -> Path:
        path = path.resolve()
        stat = path.stat()
        key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def _open(self, entry: Path) -> np.ndarray | None:
        """The cached array, memory-mapped (copied once, straight into the batch), or None on a miss."""
        try:
            array = np.load(entry, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):  # absent, or a torn file from a killed writer: recompute it
            return None
        os.utime(entry)  # marks it recently used for eviction
        return array

    def _write(self, entry: Path, pixels: torch.Tensor) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed, so a reader (another dataloader worker) never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, pixels.numpy(), allow_pickle=False)
        os.replace(tmp, entry)
        self._grow(entry.stat().st_size)

    def _grow(self, size: int) -> None:
        if self._bytes is None:
            self._bytes = sum(f.stat().st_size for f in self.root.rglob("*.npy"))
        else:
            self._bytes += size
        if self._bytes > self.max_bytes:
            self.evict()

    def evict(self) -> None:
        """Delete the least recently used entries until the folder is under KEEP_AFTER_EVICTION of the bound."""
        files = sorted(((f.stat().st_mtime, f.stat().st_size, f) for f in self.root.rglob("*.npy")),
                       key=lambda item: item[0])
        total = sum(size for _, size, _ in files)
        for _, size, f in files:
            if total <= self.max_bytes * KEEP_AFTER_EVICTION:
                break
            f.unlink(missing_ok=True)
            total -= size
        self._bytes = total

    def _process(self, images: list[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def pixel_values(self, refs: list[tuple[str, Any]], image_root: str | Path | None = None) -> torch.Tensor:
        """Stacked pixel_values for (sample id, image reference) pairs, in order; as the image processor would
        return for the decoded images. Bad files raise SampleError exactly as without the cache."""
        cached: list[np.ndarray | None] = [None] * len(refs)
        todo = []  # (position, cache entry or None, decoded image)
        for pos, (sample_id, ref) in enumerate(refs):
            entry = None
            if not isinstance(ref, Image.Image):
                path = resolve_path(sample_id, str(ref), image_root)
                entry = self._entry(path) if path.is_file() else None
                cached[pos] = self._open(entry) if entry is not None else None
            if cached[pos] is None:
                todo.append((pos, entry, load_image(sample_id, ref, image_root)))
        self.hits += len(refs) - len(todo)
        self.misses += len(todo)
        fresh = self._process([image for _, _, image in todo]) if todo else None
        if fresh is not None:
            shape, dtype = fresh.shape[1:], fresh.dtype
        else:
            shape, dtype = cached[0].shape, torch.from_numpy(np.empty(0, cached[0].dtype)).dtype
        out = torch.empty((len(refs), *shape), dtype=dtype)  # hits are copied once, straight from the file
        for pos, array in enumerate(cached):
            if array is not None:
                out[pos].numpy()[...] = array
        for (pos, entry, _), pixels in zip(todo, fresh if fresh is not None else []):
            out[pos] = pixels
            if entry is not None:
                self._write(entry, pixels.contiguous())
        return out


def build_image_cache(data_cfg, image_processor) -> PixelCache | None:
    """The cache `data.image_cache*` asks for, or None when it is switched off."""
    if not data_cfg.image_cache:
        return None
    return PixelCache(image_processor, data_cfg.image_cache_dir, data_cfg.image_cache_gb)
