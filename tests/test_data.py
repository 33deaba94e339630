"""Datasets: the IDX reader, IDX folders, digits' split, user factories, model/data fit."""

from __future__ import annotations

import gzip
import struct
import textwrap

import numpy as np
import pytest
import torch

from lcdsl.errors import DataError, ModelError
from lcdsl.training.data import Dataset, check_fits, load_data, model_kwargs, read_idx
from lcdsl.training.zoo import load_model


def write_idx(path, array: np.ndarray, *, code: int = 0x08, gz: bool = False, magic: bytes | None = None) -> None:
    """Write ``array`` as an IDX file (big-endian values after the magic number and dims)."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    header = magic if magic is not None else bytes([0, 0, code, array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + np.asarray(array, dtype=dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_idx_folder(folder, n_train: int = 12, n_test: int = 6, side: int = 4, seed: int = 0) -> None:
    """A tiny MNIST-like folder: train and t10k images and labels, gzip-compressed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, side, side)), gz=True)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 3, gz=True)


# ---------------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_bytes(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, array, gz=gz)
    out = read_idx(path)
    assert out.dtype == torch.uint8
    assert out.shape == (2, 3, 5)
    assert np.array_equal(out.numpy(), array)


def test_read_idx_reads_big_endian_ints_and_floats(tmp_path):
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    write_idx(tmp_path / "i.idx", ints, code=0x0C)
    assert read_idx(tmp_path / "i.idx").tolist() == ints.tolist()
    floats = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    write_idx(tmp_path / "f.idx", floats, code=0x0D)
    assert read_idx(tmp_path / "f.idx").tolist() == floats.tolist()


def test_read_idx_truncated_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((4, 3, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated"):
        read_idx(path)


def test_read_idx_too_long_is_refused(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.zeros(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="labels: too long"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"])
def test_read_idx_bad_magic(tmp_path, magic):
    path = tmp_path / "bad.idx"
    write_idx(path, np.zeros(4, dtype=np.uint8), magic=magic)
    with pytest.raises(DataError, match=r"bad\.idx: not an IDX file"):
        read_idx(path)


def test_read_idx_damaged_gzip_and_missing_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 100) + bytes(100))[:-12])
    with pytest.raises(DataError, match=r"x\.gz: cannot read it"):
        read_idx(path)
    with pytest.raises(DataError, match="nope.idx: no such file"):
        read_idx(tmp_path / "nope.idx")


# ---------------------------------------------------------------------------- IDX folders


def test_mnist_folder_is_scaled_and_centred(tmp_path):
    write_idx_folder(tmp_path / "m", n_train=12, n_test=6, side=4)
    data = load_data("mnist", data_dir=str(tmp_path / "m"))
    assert data.x_train.shape == (12, 1, 4, 4) and data.x_test.shape == (6, 1, 4, 4)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 3 and data.input_shape == (1, 4, 4) and data.features == 16
    assert torch.allclose(data.x_train.mean(dim=0), torch.zeros(1, 4, 4), atol=1e-6)  # centred
    raw = read_idx(tmp_path / "m" / "train-images-idx3-ubyte.gz").float() / 255
    spread = data.x_train.squeeze(1) - (raw - raw.mean(dim=0))
    assert spread.abs().max() < 1e-6  # scaled to [0, 1] before centring


def test_plain_idx_files_with_dotted_names_are_found(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{split}-images.idx3-ubyte", rng.integers(0, 256, (n, 2, 2)))
        write_idx(tmp_path / f"{split}-labels.idx1-ubyte", np.arange(n) % 2)
    data = load_data("fashion-mnist", data_dir=str(tmp_path))
    assert data.x_test.shape == (3, 1, 2, 2) and data.name == "fashion-mnist"


def test_label_count_must_match_images(tmp_path):
    write_idx_folder(tmp_path, n_train=5)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8), gz=True)
    with pytest.raises(DataError, match="expected 5 labels"):
        load_data("mnist", data_dir=str(tmp_path))


def test_missing_files_and_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="mnist needs --data-dir"):
        load_data("mnist")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_data("fashion-mnist", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="is not a folder"):
        load_data("mnist", data_dir=str(tmp_path / "absent"))
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_data("digit")


# ---------------------------------------------------------------------------------- digits


def test_digits_split_is_deterministic_stratified_and_centred():
    a, b, c = load_data("digits", seed=0), load_data("digits", seed=0), load_data("digits", seed=1)
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class (~36)
    assert a.x_train.mean(dim=0).abs().max() < 1e-5
    spread = a.x_train.amax(dim=0) - a.x_train.amin(dim=0)  # (1, 8, 8), per pixel
    assert spread.max() <= 1.0 + 1e-6 and spread.max() > 0.9  # pixels 0..16 scaled to [0, 1], then centred


# ------------------------------------------------------------------------------- factories


def test_user_factory_tuple_and_dataset(tmp_path, monkeypatch):
    (tmp_path / "userdata.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import torch
            from lcdsl.training.data import Dataset

            def arrays(seed=0):
                rng = np.random.default_rng(seed)
                return rng.normal(size=(20, 5)), np.arange(20) % 4, rng.normal(size=(8, 5)), np.arange(8) % 4

            def ready():
                x = torch.zeros(3, 2)
                return Dataset("mine", x, torch.tensor([0, 1, 1]), x, torch.tensor([1, 0, 1]), 2)

            def broken():
                return [1, 2]

            def labels_float():
                return np.zeros((3, 2)), np.zeros(3), np.zeros((3, 2)), np.zeros(3)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_data("userdata:arrays", seed=3)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 4 and data.input_shape == (5,)
    assert isinstance(load_data("userdata:ready"), Dataset)
    with pytest.raises(DataError, match="must return"):
        load_data("userdata:broken")
    with pytest.raises(DataError, match="labels must be non-negative integers"):
        load_data("userdata:labels_float")
    with pytest.raises(DataError, match="has no attribute"):
        load_data("userdata:absent")


# ----------------------------------------------------------------------------- model fit


def test_built_in_models_fit_digits():
    data = load_data("digits")
    assert model_kwargs("lenet300", data) == {"in_features": 64, "num_classes": 10}
    assert model_kwargs("lenet5", data) == {"in_channels": 1, "image_size": 8, "num_classes": 10}
    for name in ("lenet300", "lenet5"):
        check_fits(load_model(name, **model_kwargs(name, data)), data, name)


def test_a_model_that_does_not_fit_is_a_model_error():
    data = load_data("digits")
    with pytest.raises(ModelError, match=r"does not fit 'digits'.*\(1, 8, 8\)"):
        check_fits(load_model("lenet300"), data, "lenet300")  # 784 inputs expected
    with pytest.raises(ModelError, match=r"expected \(2, 10\)"):
        check_fits(load_model("lenet300", in_features=64, num_classes=7), data, "lenet300")
    flat = Dataset("flat", torch.zeros(4, 6), torch.zeros(4, dtype=torch.int64), torch.zeros(2, 6),
                   torch.zeros(2, dtype=torch.int64), 2)  # fmt: skip
    with pytest.raises(ModelError, match="square images"):
        model_kwargs("lenet5", flat)


def test_fashion_mnist_is_read_when_installed_and_explained_when_not(tmp_path, monkeypatch):
    import lcdsl.training.data as data_module

    folder = data_module._fashion_mnist_dir()
    if (folder / "train-images-idx3-ubyte.gz").is_file():  # CI installs the Debian package
        data = load_data("fashion-mnist")
        assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
        assert data.num_classes == 10 and data.features == 784
    monkeypatch.setattr(data_module.shutil, "which", lambda name: None)  # no dpkg
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"apt-get install -y dataset-fashion-mnist.*or give --data-dir"):
        load_data("fashion-mnist")
