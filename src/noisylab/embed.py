"""Embeddings of a dataset from a frozen pretrained backbone, computed once and cached on disk.

    feats = embed_dataset("photos/", "timm:convnext_tiny")      # Embeddings: features [N, D], labels, names
    noisylab find-issues photos/ --backbone timm:convnext_tiny   # then the features path, in seconds

Each image is prepared as the backbone expects (:class:`noisylab.models.pretrained.BackboneInput`:
shorter side resized, centre crop, the backbone's mean and std) and passed once through the network
in evaluation mode. The result is cached under ``NOISYLAB_CACHE`` (default
``~/.cache/noisylab``)``/features/<key>.npz``; the key hashes the backbone, its weights file and,
for every image file, its path, size and modification time (for ``.npz`` and saved Hugging Face
datasets, their files'), so a changed image or backbone is embedded again and nothing else is.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Embeddings:
    """``features float32 [N, D]``, ``labels int64 [N]``, ``class_names [C]``, ``names`` (a file per
    row, or None), whether they came from the cache, and the seconds it took."""

    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    names: list[str] | None
    cached: bool
    seconds: float


def cache_dir() -> Path:
    return Path(os.environ.get("NOISYLAB_CACHE", Path.home() / ".cache" / "noisylab")).expanduser() / "features"


def _stat(path: str | Path) -> list:
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _source(data: str | Path, size: int):
    """``(kind, paths or uint8 images [N, C, H, W], labels, class names, names, files that key the cache)``."""
    from .data import example_paths, load_dataset
    from .data.custom import data_kind

    kind = data_kind(data)
    root = str(Path(data).expanduser().resolve())
    if kind in ("folder", "csv"):
        bundle = load_dataset(kind, root=root, in_memory=False)  # lists (and screens) the files, decodes none
        paths = example_paths(bundle, "train")
        return kind, paths, bundle.train_labels, bundle.class_names, paths, paths
    options = {"image_size": size} if kind == "hf" else {}
    bundle = load_dataset(kind, root=root, **options)
    x = bundle.train_x
    if not bundle.is_images or bundle.input_dtype != torch.uint8:
        raise ValueError(f"{data}: a backbone needs images (uint8 [N, C, H, W]), found {bundle.input_shape} "
                         f"{bundle.input_dtype}")
    keyed = [root] if kind == "npz" else sorted(str(p) for p in Path(root).rglob("*") if p.is_file())
    return kind, x, bundle.train_labels, bundle.class_names, example_paths(bundle, "train"), keyed


def _batches(images, inp, batch_size: int):
    """uint8 ``[B, 3, size, size]`` batches from paths (decoded here) or a uint8 tensor."""
    from .data.base import run_in_chunks
    from .data.files import crop_array, open_image, resize_short_side

    n = len(images)
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        if isinstance(images, torch.Tensor):
            x = images[lo:hi]
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            if x.shape[-2:] != (inp.size, inp.size):
                x = torch.nn.functional.interpolate(x.float(), size=(inp.size, inp.size), mode="bilinear",
                                                    antialias=True, align_corners=False).round().clamp(0, 255)
            yield x.to(torch.uint8)
            continue
        out = np.empty((hi - lo, inp.size, inp.size, 3), dtype=np.uint8)

        def work(a: int, b: int) -> None:
            for i in range(a, b):
                out[i] = crop_array(np.asarray(resize_short_side(open_image(images[lo + i], 3), inp.resize)), inp.size)

        run_in_chunks(work, hi - lo, 16)
        yield torch.from_numpy(out).permute(0, 3, 1, 2)


def embed_dataset(data: str | Path, backbone: str, *, pretrained: bool = True, checkpoint: str | Path | None = None,
                  batch_size: int = 64, device: str = "auto", use_cache: bool = True, progress: bool = True) -> Embeddings:
    """The frozen ``backbone``'s features of every training image of ``data`` (see the module doc)."""
    from .models.pretrained import create_backbone

    t0 = time.perf_counter()
    net, inp = create_backbone(backbone, pretrained=pretrained, checkpoint=checkpoint)
    kind, images, labels, class_names, names, keyed = _source(data, inp.size)
    key_parts = {"backbone": backbone, "pretrained": pretrained, "input": list(inp.__dict__.values()),
                 "checkpoint": _stat(checkpoint) if checkpoint else None, "kind": kind,
                 "files": [_stat(p) for p in keyed]}
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = cache_dir() / f"{key}.npz"
    if use_cache and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return Embeddings(z["features"], z["labels"], z["class_names"].tolist(),
                              z["names"].tolist() if "names" in z.files else None, True, time.perf_counter() - t0)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto"
                                                                                        else device))
    net = net.to(dev).eval()
    mean = torch.tensor(inp.mean, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(inp.std, device=dev).view(1, 3, 1, 1) * 255
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(labels), desc=f"embedding with {backbone}", unit="img", leave=False)
    chunks = []
    with torch.inference_mode():
        for x in _batches(images, inp, batch_size):
            x = (x.to(dev).float() - mean) / std
            chunks.append(net(x).flatten(1).float().cpu().numpy())
            if bar is not None:
                bar.update(len(x))
    if bar is not None:
        bar.close()
    features = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    out = Embeddings(features.astype(np.float32), np.asarray(labels, dtype=np.int64), list(class_names),
                     list(names) if names is not None else None, False, time.perf_counter() - t0)
    if use_cache:
        from .checkpoint import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"features": out.features, "labels": out.labels, "class_names": np.asarray(out.class_names)}
        if out.names is not None:
            arrays["names"] = np.asarray(out.names)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(path, write)
    return out
