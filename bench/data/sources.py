"""Datasets: sources -> one uint8 tensor (N, 3, H, W) + labels, cached (the batches: ``bench.data.batches``;
the embedded scenes: ``bench.data.scenes``).

A *source* is a registered factory ``(split, **typed args) -> RawSet`` that reads one split of
one dataset format.  ``DataSpec`` describes a dataset as the ablation YAML does (source, its
arguments, resolution, class subset, limits); ``load(spec, "train" | "test")`` turns it into an
``ImageSet``, decoding once and caching the result on disk.

Order of operations in ``load`` (each step deterministic):

1. read the split (``holdout > 0`` and no test split: carve a held-out fraction of train, below);
2. class subset by name (labels re-indexed into ``spec.classes`` order);
3. ``limit_*``: a class-stratified sample of N (``bench.data.subsets.stratified``, seed 0), kept in
   original order;
4. resize to ``resolution`` x ``resolution`` (antialiased bilinear) if the size differs;
5. write the cache (atomic).

``holdout``: when > 0 and the source has no test split (e.g. ``stl10-png`` has only ``train/``),
a class-stratified held-out set is carved from the train split (``holdout_indices``: the same
fraction of every class, fixed permutation with seed 0, before any class subset), and the rest
is the train set.  When the test split exists, ``holdout`` is ignored.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pydantic
import torch
import torch.nn.functional as F

from bench.data import scenes
from bench.data.scenes import SHAPE_KINDS
from bench.data.subsets import stratified
from bench.errors import ConfigError, DataError
from bench.paths import cache_root
from bench.registry import Registry

SOURCES = Registry("data source")

PROGRESS = True     # decoding bars for large folders; `--no-progress` switches them off
CACHE_VERSION = 5      # 5: shapes rendered on one thread (identical pixels on every machine)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
# Class lists known without touching files (used by DataSpec.check).
KNOWN_CLASSES = {"shapes": SHAPE_KINDS, "cifar10": CIFAR10_CLASSES, "stl10": STL10_CLASSES}

DEFAULT_DATASETS: dict[str, dict] = {
    "shapes": {"source": "shapes", "resolution": 32, "model": {"latent_dim": 32}},
    "shapes96": {"source": "shapes", "size": 96, "resolution": 96, "model": {"latent_dim": 128}},
    "cifar10": {"source": "cifar10", "root": "data/cifar10", "resolution": 32,
                "model": {"latent_dim": 128}},
    "stl10": {"source": "stl10", "root": "data/stl10", "train_split": "train+unlabeled",
              "resolution": 96, "model": {"latent_dim": 1024}},
}


class RawSet(NamedTuple):
    images: torch.Tensor  # (N, 3, H, W) uint8 RGB
    labels: torch.Tensor  # (N,) int64, -1 = unlabelled
    classes: list[str]


class MissingSplit(DataError):
    """The dataset is there but this split is not (lets ``holdout`` carve a test set)."""


@dataclasses.dataclass
class ImageSet:
    images: torch.Tensor  # (N, 3, R, R) uint8, contiguous, CPU
    labels: torch.Tensor  # (N,) int64, -1 = unlabelled
    classes: list[str]
    name: str
    description: str = ""

    def __len__(self) -> int:
        return len(self.images)


# ----------------------------------------------------------------------------- decoding helpers

def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _decode_files(files: list[Path], desc: str) -> torch.Tensor:
    """Decode image files to one (N, 3, H, W) uint8 tensor (threads; progress bar if many)."""
    # PIL rather than torchvision.io: it reads BMP too, and torchvision's image codecs are
    # deprecated since 0.29.  It releases the GIL while decoding, so threads help.
    from PIL import Image
    from tqdm import tqdm

    def decode(chunk: list[Path]) -> list[torch.Tensor]:
        out = []
        for f in chunk:
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
            except Exception as exc:  # corrupt or unsupported file
                raise DataError(f"cannot decode image {f}: {_short(exc)}") from None
            out.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()))
        return out

    chunks = [files[i:i + 256] for i in range(0, len(files), 256)]
    images: list[torch.Tensor] = []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(files), desc=desc, unit="img", file=sys.stderr,
                 disable=len(files) <= 1000 or not PROGRESS, leave=False) as bar:
        for decoded in pool.map(decode, chunks):
            images.extend(decoded)
            bar.update(len(decoded))
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in {desc}")
    sizes = {tuple(im.shape[1:]) for im in images}
    if len(sizes) > 1:
        raise DataError(f"images in {desc} have different sizes {sorted(sizes)[:3]}; "
                        "resize them to one size first")
    return torch.stack(images)


def _read_image_folder(split_dir: Path, classes: list[str] | None = None) -> RawSet:
    """Read split_dir/<class>/*.<ext>.  ``classes`` fixes the label order (canonical datasets)."""
    if not split_dir.is_dir():
        raise MissingSplit(f"missing split folder {split_dir.resolve()}")
    folders = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not folders:
        raise DataError(f"no class folders in {split_dir.resolve()} (expected <class>/*.png|jpg)")
    if classes is None:
        classes = folders
    unknown = [f for f in folders if f not in classes]
    if unknown:
        raise DataError(f"unexpected class folder {split_dir.resolve() / unknown[0]} "
                        f"(expected one of {', '.join(classes)})")
    files: list[Path] = []
    labels: list[int] = []
    for name in folders:
        found = _list_images(split_dir / name)
        files += found
        labels += [classes.index(name)] * len(found)
    images = _decode_files(files, str(split_dir.resolve()))
    return RawSet(images, torch.tensor(labels, dtype=torch.int64), list(classes))


def _has_folder_layout(root: Path) -> bool:
    return root.is_dir() and any((root / s).is_dir() for s in ("train", "test", "unlabeled"))


def _short(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:100]}" if text else type(exc).__name__


def _no_data(name: str, root: Path, expected: str, reason: str) -> DataError:
    return DataError(f"{name}: no data at {root.resolve()} (expected {expected}); download failed "
                     f"({reason}) — on a networked machine run `python -m bench data fetch {name} "
                     f"--root {root}` or set the dataset's root")


def fetch(name: Literal["cifar10", "stl10"], root: str) -> None:
    """Download a dataset's original files into ``root`` with torchvision (needs network)."""
    import torchvision.datasets as tvd
    try:
        if name == "cifar10":
            tvd.CIFAR10(root, train=True, download=True)
        elif name == "stl10":
            tvd.STL10(root, split="train", download=True)
        else:
            raise ConfigError(f"cannot fetch {name!r}; fetchable: cifar10, stl10")
    except ConfigError:
        raise
    except Exception as exc:
        raise DataError(f"{name}: download to {Path(root).resolve()} failed ({_short(exc)})") from None


# ----------------------------------------------------------------------------- sources

@SOURCES.register("shapes")
def shapes(split: str, size: int = 32, n_train: int = 4000, n_test: int = 1000,
           seed: int = 0) -> RawSet:
    """Embedded procedural dataset (no files needed): one labelled object (SHAPE_KINDS) per image.

    Built to have natural-image statistics rather than flat colour, so every reconstruction loss
    has local structure to fit: a background from one of three scene families (earth, foliage,
    sky; ``bench.data.scenes``) as two related mid-tone colours blended along a gradient, with 1/f
    ("pink") luma texture and slow chroma drift; the object in a contrasting colour with a
    surface texture (stripes, checks, spots or pink grain), shaded by one light per image (lit
    side, darker rim, optional highlight) and casting a soft shadow.
    """
    if split not in ("train", "test"):
        raise MissingSplit(f"shapes: unknown split {split!r} (expected 'train' or 'test')")
    if size < 4:
        raise ConfigError(f"shapes size must be >= 4, got {size}", key="size")
    images, labels = scenes.generate(split, size, n_train, n_test, seed)
    return RawSet(images, labels, list(SHAPE_KINDS))


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise MissingSplit(f"cifar10: missing file {path.resolve()}")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


@SOURCES.register("cifar10")
def cifar10(split: str, root: str = "data/cifar10", download: bool = True) -> RawSet:
    """CIFAR-10 (32x32, 10 classes): original python pickles, or root/{train,test}/<class>/ images."""
    if split not in ("train", "test"):
        raise MissingSplit(f"cifar10: unknown split {split!r} (expected 'train' or 'test')")
    base = Path(root)
    pickles = base / "cifar-10-batches-py"
    if not pickles.is_dir() and _has_folder_layout(base):
        return _read_image_folder(base / split, CIFAR10_CLASSES)
    if not pickles.is_dir():
        expected = "cifar-10-batches-py/ or train/<class>/ image folders"
        if not download:
            raise _no_data("cifar10", base, expected, "download=False")
        try:
            import torchvision.datasets as tvd
            tvd.CIFAR10(str(base), train=True, download=True)
        except Exception as exc:
            raise _no_data("cifar10", base, expected, _short(exc)) from None
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batches = [_unpickle(pickles / n) for n in names]
    data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return RawSet(images, torch.from_numpy(labels), list(CIFAR10_CLASSES))


def _read_stl_binary(folder: Path, parts: list[str]) -> RawSet:
    """stl10_binary/<part>_X.bin: uint8, each image 3x96x96 stored column-major."""
    per_image = 3 * 96 * 96
    xs = [folder / f"{p}_X.bin" for p in parts]
    for x in xs:
        if not x.is_file():
            raise MissingSplit(f"stl10: missing file {x.resolve()}")
        if x.stat().st_size % per_image:
            raise DataError(f"stl10: {x.resolve()} is not a whole number of 3x96x96 images")
    counts = [x.stat().st_size // per_image for x in xs]
    images = torch.empty(sum(counts), 3, 96, 96, dtype=torch.uint8)
    labels = torch.full((sum(counts),), -1, dtype=torch.int64)
    start = 0
    for part, x, n in zip(parts, xs, counts):
        mm = np.memmap(x, dtype=np.uint8, mode="r", shape=(n, 3, 96, 96))
        for i in range(0, n, 4096):  # chunked: the unlabelled split alone is 2.8 GB
            j = min(n, i + 4096)
            images[start + i:start + j] = torch.from_numpy(np.ascontiguousarray(
                mm[i:j].transpose(0, 1, 3, 2)))
        del mm
        if part != "unlabeled":
            y = folder / f"{part}_y.bin"
            if not y.is_file():
                raise MissingSplit(f"stl10: missing file {y.resolve()}")
            ys = torch.from_numpy(np.fromfile(y, dtype=np.uint8).astype(np.int64)) - 1
            if len(ys) != n or ys.min() < 0 or ys.max() > 9:
                raise DataError(f"stl10: {y.resolve()} does not hold {n} labels in 1..10")
            labels[start:start + n] = ys
        start += n
    return RawSet(images, labels, list(STL10_CLASSES))


@SOURCES.register("stl10")
def stl10(split: str, root: str = "data/stl10", download: bool = True) -> RawSet:
    """STL-10 (96x96): stl10_binary/*.bin or root/<split>/<class>/ images; split may be 'train+unlabeled'."""
    parts = split.split("+")
    bad = [p for p in parts if p not in ("train", "test", "unlabeled")]
    if bad:
        raise MissingSplit(f"stl10: unknown split {bad[0]!r} (expected train, test, unlabeled "
                           "or a '+' combination such as train+unlabeled)")
    base = Path(root)
    binary = base / "stl10_binary"
    if not binary.is_dir() and _has_folder_layout(base):
        sets = [_read_image_folder(base / p, STL10_CLASSES) if p != "unlabeled"
                else _read_unlabeled_folder(base / p) for p in parts]
        return RawSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]),
                      list(STL10_CLASSES))
    if not binary.is_dir():
        expected = "stl10_binary/ or train/<class>/ image folders"
        if not download:
            raise _no_data("stl10", base, expected, "download=False")
        try:
            import torchvision.datasets as tvd
            tvd.STL10(str(base), split="train", download=True)
        except Exception as exc:
            raise _no_data("stl10", base, expected, _short(exc)) from None
    return _read_stl_binary(binary, parts)


def _read_unlabeled_folder(folder: Path) -> RawSet:
    """An unlabelled image folder: folder/*.<ext> or folder/<anything>/*.<ext>; labels -1."""
    if not folder.is_dir():
        raise MissingSplit(f"missing split folder {folder.resolve()}")
    files = _list_images(folder) + [f for d in sorted(folder.iterdir()) if d.is_dir()
                                    for f in _list_images(d)]
    images = _decode_files(files, str(folder.resolve()))
    return RawSet(images, torch.full((len(images),), -1, dtype=torch.int64), [])


@SOURCES.register("imagefolder")
def imagefolder(split: str, root: str) -> RawSet:
    """Any image folder: root/<split>/<class>/*.{png,jpg,jpeg,bmp,webp}; classes = sorted folder names."""
    return _read_image_folder(Path(root) / split)


@SOURCES.register("npz")
def npz(split: str, path: str) -> RawSet:
    """A NumPy .npz with x_<split> (N,H,W,3 or N,3,H,W uint8) and optional y_<split> (+ classes)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"npz: missing file {p.resolve()}")
    with np.load(p, allow_pickle=False) as f:
        if f"x_{split}" not in f:
            raise MissingSplit(f"npz: {p.resolve()} has no array x_{split} "
                               f"(has: {', '.join(sorted(f.files))})")
        x = f[f"x_{split}"]
        y = f.get(f"y_{split}")
        classes = [str(c) for c in f["classes"]] if "classes" in f else None
    if x.dtype != np.uint8 or x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise DataError(f"npz: x_{split} in {p.resolve()} must be uint8 (N,H,W,3) or (N,3,H,W), "
                        f"got {x.dtype} {x.shape}")
    if x.shape[1] != 3:
        x = x.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(x))
    if y is None:
        labels = torch.full((len(x),), -1, dtype=torch.int64)
    else:
        labels = torch.from_numpy(np.asarray(y).astype(np.int64).reshape(-1))
        if len(labels) != len(x):
            raise DataError(f"npz: y_{split} has {len(labels)} labels for {len(x)} images")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) else []
    return RawSet(images, labels, classes)


# ----------------------------------------------------------------------------- spec + load

class DataSpec(pydantic.BaseModel):
    """One dataset as written in YAML; extra keys are the source's arguments (see SOURCES).
    Frozen: a variant is ``spec.model_copy(update=...)``."""
    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    source: str
    resolution: int
    train_split: str = "train"
    test_split: str = "test"
    classes: list[str] | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    hflip: pydantic.StrictBool = False
    holdout: float = 0.0
    model: dict[str, Any] = {}

    def source_args(self) -> dict[str, Any]:
        """The source's arguments (extra keys), validated and completed with defaults."""
        extras = dict(self.model_extra or {})
        if "split" in extras:
            raise ConfigError("use train_split / test_split instead", key="split")
        try:
            args = SOURCES.bind(self.source, {"split": self.train_split, **extras})
        except ConfigError as exc:  # a misspelt DataSpec field lands in the extras: say so
            close = difflib.get_close_matches(exc.key or "", list(type(self).model_fields), n=1)
            if exc.key in extras and close:
                raise ConfigError(f"unknown dataset key (did you mean {close[0]!r}?)",
                                  key=exc.key) from None
            raise
        del args["split"]
        return args

    def check(self) -> None:
        """Validate everything that does not need the files; raises ConfigError with key."""
        if self.source not in SOURCES:
            try:
                SOURCES.get(self.source)
            except ConfigError as exc:
                raise ConfigError(exc.message, key="source") from None
        self.source_args()
        if self.resolution < 1:
            raise ConfigError(f"must be >= 1, got {self.resolution}", key="resolution")
        for key in ("limit_train", "limit_test"):
            if (v := getattr(self, key)) is not None and v < 1:
                raise ConfigError(f"must be >= 1 (or omitted), got {v}", key=key)
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.holdout}", key="holdout")
        if self.classes is not None:
            if not self.classes:
                raise ConfigError("must name at least one class (or be omitted)", key="classes")
            if len(set(self.classes)) != len(self.classes):
                raise ConfigError(f"repeated class name in {self.classes}", key="classes")
            if self.source in KNOWN_CLASSES:
                _check_classes(self.classes, KNOWN_CLASSES[self.source])


def _check_classes(wanted: list[str], known: list[str]) -> None:
    for name in wanted:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown class {name!r}{hint}; known: {', '.join(known)}",
                              key="classes")


def _fingerprint(args: dict[str, Any], splits: list[str]) -> list:
    """Cheap fingerprint of the files behind root/path args: count, total size, max mtime."""
    out = []
    for key in ("root", "path"):
        if key not in args:
            continue
        base = Path(args[key])
        parts = [base / p for s in splits for p in s.split("+") if (base / p).is_dir()] or [base]
        count = size = 0
        mtime = 0.0
        for top in parts:
            if top.is_file():
                st = top.stat()
                count, size, mtime = count + 1, size + st.st_size, max(mtime, st.st_mtime)
                continue
            for dirpath, _, names in os.walk(top):
                for name in names:
                    st = os.stat(os.path.join(dirpath, name))
                    count, size, mtime = count + 1, size + st.st_size, max(mtime, st.st_mtime)
        out.append([key, count, size, mtime])
    return out


def cache_dir() -> Path:
    return cache_root() / "data"


def _cache_key(spec: DataSpec, args: dict[str, Any], role: str) -> str:
    split = spec.train_split if role == "train" else spec.test_split
    splits = [spec.train_split, spec.test_split] if spec.holdout > 0 else [split]
    key = {
        "version": CACHE_VERSION, "source": spec.source, "args": args, "role": role,
        "split": split, "splits": splits, "resolution": spec.resolution, "classes": spec.classes,
        "limit": spec.limit_train if role == "train" else spec.limit_test,
        "holdout": spec.holdout, "files": _fingerprint(args, splits),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _subset(raw: RawSet, idx: torch.Tensor) -> RawSet:
    return RawSet(raw.images[idx], raw.labels[idx], raw.classes)


def holdout_indices(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """Sorted indices of the held-out images: ``round(n_c * fraction)`` of every class c (at least
    one per class with >= 2 images), each class in a fixed permutation (seed 0); unlabelled images
    (label -1) are one more group.  The carve happens before any class subset, so an arm trained
    on ``classes: [horse, bird]`` is scored on exactly the held-out horses and birds of the full set.
    """
    g = torch.Generator().manual_seed(0)
    picked = []
    for c in labels.unique(sorted=True):
        members = (labels == c).nonzero().flatten()
        k = round(len(members) * fraction)
        if k == 0 and len(members) >= 2:
            k = 1
        picked.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.int64)


def _read_role(spec: DataSpec, args: dict[str, Any], role: str) -> RawSet:
    """Read the split for ``role``, carving a held-out test set from train when configured."""
    factory = SOURCES.get(spec.source)
    split = spec.train_split if role == "train" else spec.test_split
    if spec.holdout <= 0:
        return factory(split, **args)
    try:
        test = factory(spec.test_split, **args)
    except MissingSplit:
        train = factory(spec.train_split, **args)
        test_idx = holdout_indices(train.labels, spec.holdout)
        if role == "test":
            return _subset(train, test_idx)
        keep = torch.ones(len(train.labels), dtype=torch.bool)
        keep[test_idx] = False
        return _subset(train, keep.nonzero().flatten())
    return test if role == "test" else factory(spec.train_split, **args)


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, R, R) uint8, antialiased bilinear (chunked)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    out = torch.empty(len(images), 3, resolution, resolution, dtype=torch.uint8)
    for i in range(0, len(images), 1024):
        x = images[i:i + 1024].float()
        y = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                          align_corners=False, antialias=True)
        out[i:i + 1024] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load(spec: DataSpec, split_role: Literal["train", "test"], *, cache: bool = True) -> ImageSet:
    """The train or test images of ``spec`` as one uint8 tensor, decoded once and cached."""
    if split_role not in ("train", "test"):
        raise ValueError(f"split_role must be 'train' or 'test', got {split_role!r}")
    spec.check()
    args = spec.source_args()
    for key in ("root", "path"):  # cache key and messages use absolute paths
        if key in args:
            args[key] = str(Path(args[key]).expanduser().resolve())
    split = spec.train_split if split_role == "train" else spec.test_split
    limit = spec.limit_train if split_role == "train" else spec.limit_test
    path = cache_dir() / f"{spec.source}-{split.replace('+', '_')}-{spec.resolution}-" \
                         f"{_cache_key(spec, args, split_role)[:16]}.pt"
    if cache and path.is_file():
        try:
            d = torch.load(path, weights_only=True)
            return ImageSet(d["images"], d["labels"], list(d["classes"]), d["name"], d["description"])
        except Exception as exc:  # unreadable cache (e.g. interrupted disk): rebuild it
            print(f"warning: unreadable data cache {path} ({type(exc).__name__}); rebuilding", file=sys.stderr)

    if spec.classes is not None and "unlabeled" in split.split("+"):  # fail before decoding
        raise DataError(f"{spec.source}: split {split!r} has unlabelled images, so it cannot be "
                        f"filtered to classes {spec.classes} (use a labelled split)")
    raw = _read_role(spec, args, split_role)
    if spec.classes is not None:
        if (raw.labels < 0).any():
            raise DataError(f"{spec.source}: split {split!r} has unlabelled images, so it cannot be "
                            f"filtered to classes {spec.classes} (use a labelled split)")
        _check_classes(spec.classes, raw.classes)
        old = [raw.classes.index(c) for c in spec.classes]
        keep = torch.isin(raw.labels, torch.tensor(old))
        remap = torch.full((len(raw.classes),), -1, dtype=torch.int64)
        remap[old] = torch.arange(len(old))
        raw = RawSet(raw.images[keep], remap[raw.labels[keep]], list(spec.classes))
    if limit is not None and limit < len(raw.images):
        raw = _subset(raw, stratified(raw.labels, limit, seed=0).indices)
    images = resize(raw.images, spec.resolution).contiguous()
    name = f"{spec.source}:{split}"
    desc = (f"{name} {len(images)} images {spec.resolution}x{spec.resolution}"
            + (f" classes={spec.classes}" if spec.classes else "")
            + (f" limit={limit}" if limit else "") + (f" holdout={spec.holdout}" if spec.holdout else ""))
    out = ImageSet(images, raw.labels.to(torch.int64).contiguous(), list(raw.classes), name, desc)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(dataclasses.asdict(out), tmp)
        os.replace(tmp, path)
    return out
