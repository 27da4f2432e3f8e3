"""Thumbnails of the most suspected examples: from the files named in ``label_issues.csv``, or
from the training inputs of the dataset rebuilt with the run's config."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .run_files import RunFiles, as_float

THUMB_PX = 64  # thumbnail size


def thumbnail(image):
    """``image`` (PIL) as RGB, shrunk to fit THUMB_PX, small images enlarged by whole pixels."""
    from PIL import Image

    image = image.convert("RGB")
    image.thumbnail((THUMB_PX, THUMB_PX))
    factor = THUMB_PX // max(image.size)
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image


def array_image(x: Any):
    """One input ``[C, H, W]`` (uint8, or float of any range; 1 or 3 channels) as a PIL image;
    None when it is not an image."""
    from PIL import Image

    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        return None
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    a = a.transpose(1, 2, 0)
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def images_from_paths(run: RunFiles, rows: list[dict[str, str]]) -> tuple[list, str]:
    """The images named in the ``path`` column (relative paths: from the run folder too), and a
    note when some cannot be read."""
    from PIL import Image, UnidentifiedImageError

    images, missing = [], []
    for r in rows:
        path = Path(r.get("path", ""))
        if not path.is_file() and not path.is_absolute() and (run.folder / path).is_file():
            path = run.folder / path
        try:
            with Image.open(path) as im:
                images.append(thumbnail(im))
        except (OSError, UnidentifiedImageError, ValueError):
            images.append(None)
            missing.append(str(path))
    text = (f"{len(missing)} of {len(rows)} images could not be read (moved or deleted?), e.g. '{missing[0]}'"
            if missing else "")
    return images, text


def images_from_dataset(run: RunFiles, rows: list[dict[str, str]]) -> tuple[list, str]:
    """The training inputs at the rows' ``index``, from the dataset rebuilt with the run's config;
    ``([], "")`` for non-image data and ``([], note)`` when the dataset cannot be loaded."""
    try:
        from ..config import load_config
        from ..data import example_paths
        from ..data.prepare import prepare_data

        cfg = load_config(run.folder / "config.yaml")
        labels_file = run.folder / "noisy_labels.npz"
        bundle = prepare_data(cfg, labels_file if labels_file.is_file() else None).bundle
        index = [int(as_float(r.get("index"))) for r in rows]
        if bundle.stored_in_files:  # open them by path
            paths = example_paths(bundle, "train")
            return images_from_paths(run, [{"path": paths[i]} for i in index]) if paths else ([], "")
        if not bundle.is_images:
            return [], ""  # not images (features, 1-D signals)
        return [None if (im := array_image(bundle.train_x[i])) is None else thumbnail(im) for i in index], ""
    except (ValueError, OSError, ImportError, IndexError) as err:
        return [], f"Images not shown: the dataset could not be loaded ({' '.join(str(err).split())})"

