"""``data.dataset: hf``: a Hugging Face dataset saved with ``save_to_disk``."""
import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from noisylab.data import DataError, load_dataset  # noqa: E402
from noisylab.data.custom import data_kind  # noqa: E402


def images(n, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)) for _ in range(n)]


def test_class_label_dataset_dict_with_a_test_split(tmp_path):
    feat = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=["cat", "dog", "emu"]),
                              "file_name": datasets.Value("string")})
    train = datasets.Dataset.from_dict({"img": images(6), "fine": [0, 1, 2, 2, 1, 0],
                                        "file_name": [f"a/{i}.png" for i in range(6)]}, features=feat)
    test = datasets.Dataset.from_dict({"img": images(3, 1), "fine": [2, 0, 1], "file_name": ["t0", "t1", "t2"]},
                                      features=feat)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "d"))
    assert data_kind(tmp_path / "d") == "hf"
    b = load_dataset("hf", root=str(tmp_path / "d"), image_size=8)
    assert b.class_names == ["cat", "dog", "emu"] and b.train_labels.tolist() == [0, 1, 2, 2, 1, 0]
    assert b.test_labels.tolist() == [2, 0, 1] and b.train_x.shape == (6, 3, 8, 8) and str(b.train_x.dtype) == "torch.uint8"
    assert b.extra["train_files"][2] == "a/2.png" and not b.labels_are_clean
    # the pixels: shorter side (10) resized to 8, then the centre crop, as image files are decoded
    from noisylab.data.files import crop_array, resize_short_side

    want = crop_array(np.asarray(resize_short_side(train[4]["img"].convert("RGB"), 8)), 8)
    assert np.array_equal(b.train_x[4].permute(1, 2, 0).numpy(), want)


def test_string_labels_in_a_plain_dataset(tmp_path):
    ds = datasets.Dataset.from_dict({"image": images(4), "label": ["b", "a", "b", "c"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "d"))
    b = load_dataset("hf", root=str(tmp_path / "d"), image_size=6, color="gray")
    assert b.class_names == ["a", "b", "c"] and b.train_labels.tolist() == [1, 0, 1, 2]
    assert b.train_x.shape == (4, 1, 6, 6) and b.test_x is None and b.extra["train_files"] is None


@pytest.mark.parametrize("columns, message", [
    ({"pixels": [1, 2], "label": [0, 1]}, "no image column found"),
    ({"image": "IMAGES", "target": [0, 1]}, "no label column found"),
])
def test_missing_columns_are_named(tmp_path, columns, message):
    data = {k: (images(2) if v == "IMAGES" else v) for k, v in columns.items()}
    feats = {k: (datasets.Image() if k == "image" else datasets.Value("int64")) for k in data}
    datasets.Dataset.from_dict(data, features=datasets.Features(feats)).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match=message):
        load_dataset("hf", root=str(tmp_path / "d"))


def test_a_folder_that_is_no_saved_dataset_is_one_line(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "state.json").write_text("{}")
    with pytest.raises(DataError, match="save_to_disk"):
        load_dataset("hf", root=str(tmp_path / "d"))
