"""Datasets: built-in ones read from local files, and a user's own from ``module:function``.

Nothing is downloaded. Built-in datasets:

- ``digits``: scikit-learn's 8×8 handwritten digits (1,797 images, shipped inside scikit-learn),
  split 80/20, stratified, by ``seed``;
- ``fashion-mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` package, or of ``data_dir``;
- ``mnist``: the IDX files in ``data_dir``.

Images are scaled to [0, 1] and centred by the training set's mean image. ``module:function``
loads a user's dataset; it may take ``data_dir`` and ``seed`` keywords and returns one of

- a :class:`Dataset`, or ``(x_train, y_train, x_test, y_test)`` tensors or numpy arrays (held in
  memory; floating-point inputs become float32, integer inputs such as token ids keep their dtype;
  labels are integers, one per example ``(N,)`` or one per token ``(N, T)``);
- a ``torch.utils.data.Dataset`` or ``DataLoader``, or a ``(train, test)`` pair of them
  (:class:`LoaderData`): items or batches may be tensors, ``(x, y)`` tuples or dicts such as
  ``{"input_ids": …, "attention_mask": …, "labels": …}``. Without a test part, the test numbers
  are measured on the training data (and the run says so).
"""

from __future__ import annotations

import gzip
import inspect
import math
import os
import shutil
import subprocess
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.utils.data as tud
from torch import nn

from lcdsl.errors import DataError, ModelError, did_you_mean
from lcdsl.training.batch import LossFn, batch_loss, forward, logits_of, to_device
from lcdsl.training.zoo import load_factory

__all__ = ["Dataset", "LoaderData", "Data", "DATASETS", "load_data", "read_idx", "model_kwargs", "check_fits", "example_inputs"]

DATASETS = ("digits", "fashion-mnist", "mnist")
"""Built-in dataset names."""

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` usually puts its files."""

_INSTALL_HINT = "apt-get update && apt-get install -y dataset-fashion-mnist"

# IDX type codes → big-endian numpy dtypes.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@attrs.frozen
class Dataset:
    """A classification dataset: train and test tensors, and what a model needs to know."""

    name: str
    """The name it was loaded by (``digits``, ``fashion-mnist``, ``pkg.mod:fn``)."""
    x_train: torch.Tensor = attrs.field(repr=False)
    """Training inputs, float32 (or integer token ids), ``(N, *input_shape)``."""
    y_train: torch.Tensor = attrs.field(repr=False)
    """Training labels, int64 in ``[0, num_classes)``, ``(N,)`` (or ``(N, T)``, one a token)."""
    x_test: torch.Tensor = attrs.field(repr=False)
    """Test inputs, like :attr:`x_train`, ``(M, *input_shape)``."""
    y_test: torch.Tensor = attrs.field(repr=False)
    """Test labels, like :attr:`y_train`."""
    num_classes: int
    """Number of classes."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input: ``(channels, height, width)`` for images, ``(features,)`` else."""
        return tuple(self.x_train.shape[1:])

    @property
    def features(self) -> int:
        """Numbers per input (784 for 28×28 images)."""
        return math.prod(self.input_shape)

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with its tensors on ``device``."""
        return attrs.evolve(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


Source = tud.Dataset | tud.DataLoader
"""What a :class:`LoaderData` holds: a torch dataset (its items are batched here) or a data loader."""


@attrs.frozen
class LoaderData:
    """A user's ``torch.utils.data`` datasets or data loaders, batched as training goes.

    A map-style dataset is batched here in the seeded order of :class:`~lcdsl.training.epochs.Batches`
    (``default_collate`` joins its items), so a resumed run sees the batches an uninterrupted one
    would. A ``DataLoader`` (or an iterable dataset) is iterated as it is: its order is its own
    sampler's, and lcdsl neither saves nor restores it, so after ``--resume`` the order is what a
    fresh loader gives (the same as the first run's only if the factory seeds the loader).
    """

    name: str
    """The name it was loaded by (``pkg.mod:fn``)."""
    train: Source = attrs.field(repr=False)
    """The training data."""
    test: Source | None = attrs.field(default=None, repr=False)
    """The test data; None measures the test numbers on the training data."""
    device: torch.device | None = None
    """Where batches are moved to (None: left where they are)."""

    num_classes = None
    """Unknown: a model for this data comes from a factory, not from the data's shapes."""

    def to(self, device: torch.device | str) -> LoaderData:
        """The same data, its batches moved to ``device``."""
        return attrs.evolve(self, device=torch.device(device))

    def first_batch(self, n: int = 2) -> object:
        """A small training batch on :attr:`device`: ``n`` items of a dataset, a loader's first batch."""
        source = self.train
        if isinstance(source, tud.DataLoader) or isinstance(source, tud.IterableDataset):
            batch = next(iter(source if isinstance(source, tud.DataLoader) else tud.DataLoader(source, batch_size=n)))
        else:
            batch = tud.default_collate([source[i] for i in range(min(n, len(source)))])
        return to_device(batch, self.device)


Data = Dataset | LoaderData
"""Everything :func:`load_data` returns."""


def _centred(
    name: str, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor
) -> Dataset:
    """Images already in [0, 1], centred by the training mean image."""
    mean = x_train.mean(dim=0, keepdim=True)  # (1, C, H, W)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, x_train - mean, y_train, x_test - mean, y_test, num_classes)


# ---------------------------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """One IDX file (plain or gzip-compressed), as a tensor of its own dtype and shape.

    Raises:
        DataError: the file is missing, truncated, too long, or not IDX (naming the file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":  # gzip magic
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read it: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long"
        raise DataError(
            f"{path}: {what}: the header says {'×'.join(map(str, dims))} values ({expected} bytes), "
            f"the file has {len(raw)} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _find(folder: Path, split: str, kind: str) -> Path:
    """The IDX file of ``split`` (train/t10k) and ``kind`` (images/labels) in ``folder``."""
    ndim = 3 if kind == "images" else 1
    names = [f"{split}-{kind}-idx{ndim}-ubyte", f"{split}-{kind}.idx{ndim}-ubyte"]
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{folder}: no {names[0]}[.gz] in it")


def _load_idx_folder(name: str, folder: Path) -> Dataset:
    if not folder.is_dir():
        raise DataError(f"{name}: {folder} is not a folder")
    tensors = {}
    for split in ("train", "t10k"):
        images_path, labels_path = _find(folder, split, "images"), _find(folder, split, "labels")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.dim() != 3:
            raise DataError(f"{images_path}: expected images (N, height, width), got shape {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{labels_path}: expected {images.shape[0]} labels to match {images_path.name}, "
                f"got shape {tuple(labels.shape)}"
            )
        x = images.to(torch.float32).unsqueeze(1) / 255.0  # (N, 1, H, W) in [0, 1]
        tensors[split] = (x, labels.to(torch.int64))
    (x_train, y_train), (x_test, y_test) = tensors["train"], tensors["t10k"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{folder}: train images are {tuple(x_train.shape[2:])}, test images {tuple(x_test.shape[2:])}")
    return _centred(name, x_train, y_train, x_test, y_test)


def _fashion_mnist_dir() -> Path:
    """The folder ``dpkg -L dataset-fashion-mnist`` lists, or the usual one."""
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if "train-images" in line:
                return Path(line.strip()).parent
    return Path(FASHION_MNIST_DIR)


# ------------------------------------------------------------------------------------ digits


def _digits(seed: int) -> Dataset:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise DataError(
            "the 'digits' dataset ships with scikit-learn, which is not installed: pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0  # (1797, 8, 8), pixels 0..16 → [0, 1]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    return _centred(
        "digits",
        torch.from_numpy(x_train).unsqueeze(1),  # (1437, 1, 8, 8)
        torch.from_numpy(y_train),
        torch.from_numpy(x_test).unsqueeze(1),  # (360, 1, 8, 8)
        torch.from_numpy(y_test),
    )


# ------------------------------------------------------------------------------- user data


def _as_tensor(value: object, what: str, reference: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise DataError(f"'{reference}' returned {type(value).__name__} for {what}, not a tensor or numpy array")


def _from_factory(reference: str, data_dir: str | None, seed: int) -> Data:
    try:
        factory = load_factory(reference)
    except ModelError as exc:
        raise DataError(str(exc)) from exc
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in (("data_dir", data_dir), ("seed", seed)) if k in accepted}
    try:
        result = factory(**kwargs)
    except Exception as exc:  # the user's function may raise anything
        raise DataError(f"data factory '{reference}' raised {type(exc).__name__}: {exc}") from exc
    if isinstance(result, Dataset):
        return result
    if isinstance(result, Source):
        return LoaderData(reference, result)
    if isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(r, Source) for r in result):
        return LoaderData(reference, result[0], result[1])
    if not isinstance(result, (tuple, list)) or len(result) != 4:
        raise DataError(
            f"data factory '{reference}' must return an lcdsl.training.data.Dataset, "
            "(x_train, y_train, x_test, y_test), a torch.utils.data Dataset or DataLoader, "
            f"or a (train, test) pair of them; got {type(result).__name__}"
        )
    names = ("x_train", "y_train", "x_test", "y_test")
    x_train, y_train, x_test, y_test = (_as_tensor(v, n, reference) for v, n in zip(result, names))
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if y.dim() < 1 or x.dim() < 2 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"data factory '{reference}': {split} inputs {tuple(x.shape)} and labels {tuple(y.shape)} "
                "do not match (want (N, ...) and (N,) or (N, T))"
            )
        if y.is_floating_point() or y.numel() == 0 or int(y.min()) < 0:
            raise DataError(f"data factory '{reference}': {split} labels must be non-negative integers")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"data factory '{reference}': train inputs are {tuple(x_train.shape[1:])}, "
            f"test inputs {tuple(x_test.shape[1:])}"
        )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(
        reference, _inputs(x_train), y_train.to(torch.int64), _inputs(x_test), y_test.to(torch.int64), num_classes
    )


def _inputs(x: torch.Tensor) -> torch.Tensor:
    """Floating-point inputs as float32 (the models' dtype); integer ones (token ids) as they are."""
    return x.to(torch.float32) if x.is_floating_point() else x


# ----------------------------------------------------------------------------------- public


def load_data(name: str, *, data_dir: str | None = None, seed: int = 0) -> Data:
    """A dataset by built-in name (``digits``, ``fashion-mnist``, ``mnist``) or ``module:function``.

    Args:
        name: the dataset.
        data_dir: a folder of IDX files (``fashion-mnist``, ``mnist``); passed to a
            ``module:function`` that takes a ``data_dir`` keyword.
        seed: the seed of the ``digits`` split (and of a factory that takes ``seed``).

    Raises:
        DataError: unknown name, missing or malformed files, a factory that fails.
    """
    if ":" in name:
        return _from_factory(name, data_dir, seed)
    if name == "digits":
        return _digits(seed)
    if name == "fashion-mnist":
        folder = Path(data_dir) if data_dir else _fashion_mnist_dir()
        if data_dir is None and not folder.is_dir():
            raise DataError(
                f"fashion-mnist is not installed (no {folder}): run '{_INSTALL_HINT}' "
                "or give --data-dir with its IDX files"
            )
        return _load_idx_folder(name, folder)
    if name == "mnist":
        if data_dir is None:
            raise DataError(
                "mnist needs --data-dir: a folder with train-images-idx3-ubyte[.gz] and the other IDX files"
            )
        return _load_idx_folder(name, Path(data_dir))
    raise DataError(
        f"unknown dataset '{name}'{did_you_mean(name, DATASETS)} (built-in: {', '.join(DATASETS)}; "
        "or give module:function)"
    )


def example_inputs(data: Dataset | LoaderData, n: int = 2) -> torch.Tensor | None:
    """``n`` training inputs to run a model on once (what a flops budget over a convolution counts
    output positions with); None for loader data, whose batches take the user's own forward."""
    return data.x_train[:n] if isinstance(data, Dataset) else None


def model_kwargs(model: str, data: Data) -> dict[str, int]:
    """The keyword arguments that fit a built-in model to ``data`` (none for ``module:function``).

    Raises:
        ModelError: a built-in model with data from a torch dataset or loader (give a factory).
    """
    if ":" in model:
        return {}
    if isinstance(data, LoaderData):
        raise ModelError(
            f"built-in model '{model}' is sized from in-memory data; with a torch Dataset/DataLoader "
            f"('{data.name}') give --model module:function"
        )
    if model == "lenet300":
        return {"in_features": data.features, "num_classes": data.num_classes}
    if model in ("lenet5", "resnet18", "resnet-small"):
        shape = data.input_shape
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ModelError(f"{model} needs square images (channels, side, side); '{data.name}' has inputs {shape}")
        return {"in_channels": shape[0], "image_size": shape[1], "num_classes": data.num_classes}
    return {}


def check_fits(model: nn.Module, data: Data, model_name: str = "the model", loss_fn: LossFn | None = None) -> None:
    """Run two training examples through ``model`` and compute their loss.

    With in-memory class labels ``(N,)`` and no ``loss_fn``, the model must give ``(2, num_classes)``
    scores (a tensor, or a ``ModelOutput``/dict with ``logits``).

    Raises:
        ModelError: the model rejects the inputs, gives another output shape, or no loss can be
            computed from what it gives (:func:`lcdsl.training.batch.batch_loss`).
    """
    if isinstance(data, LoaderData):
        try:
            batch = data.first_batch()
        except Exception as exc:  # the user's dataset may raise anything
            raise DataError(f"cannot draw a batch from '{data.name}': {type(exc).__name__}: {exc}") from exc
        shape = "its first batch"
    else:
        batch = (data.x_train[:2], data.y_train[:2])
        shape = f"inputs of shape {tuple(data.x_train.shape[1:])}"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = forward(model, batch)
    except Exception as exc:  # any shape error inside the user's forward()
        raise ModelError(f"{model_name} does not fit '{data.name}': {shape} fail in forward(): {exc}") from exc
    finally:
        model.train(was_training)
    if isinstance(data, Dataset) and loss_fn is None and data.y_train.dim() == 1:
        logits = logits_of(out)
        if logits is None or tuple(logits.shape) != (2, data.num_classes):
            got = tuple(logits.shape) if logits is not None else type(out).__name__
            raise ModelError(
                f"{model_name} does not fit '{data.name}': it gives outputs {got} for 2 inputs, "
                f"expected (2, {data.num_classes}) class scores"
            )
    try:
        with torch.no_grad():
            batch_loss(out, batch, loss_fn)
    except ModelError as exc:
        raise ModelError(f"{model_name} on '{data.name}': {exc}") from exc
    except Exception as exc:  # the user's loss function may raise anything
        raise ModelError(f"{model_name} on '{data.name}': the loss fails: {type(exc).__name__}: {exc}") from exc
