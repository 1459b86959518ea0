"""bench.data.sources: sources read their real formats exactly, specs fail early, caches and batches are exact."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from bench.data import batches as B
from bench.data import sources as D
from bench.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may touch the network: torchvision downloads always fail here."""
    def refuse(*args, **kwargs):
        raise RuntimeError("network disabled in tests")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", refuse)
    monkeypatch.setattr(torchvision.datasets, "STL10", refuse)


def rand_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, h, w), dtype=np.uint8)


def write_folder(root: Path, split: str, per_class: dict[str, np.ndarray]) -> None:
    """per_class[name] = (n, 3, H, W) uint8 -> root/split/name/000i.png"""
    for name, imgs in per_class.items():
        d = root / split / name
        d.mkdir(parents=True)
        for i, im in enumerate(imgs):
            Image.fromarray(im.transpose(1, 2, 0)).save(d / f"{i:04d}.png")


# ----------------------------------------------------------------------------- shapes

def test_shapes_deterministic_and_varied():
    a, b = D.shapes("train", n_train=64), D.shapes("train", n_train=64)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    other = D.shapes("train", n_train=64, seed=1)
    assert not torch.equal(a.images, other.images)
    test = D.shapes("test", n_test=64)
    assert not torch.equal(a.images, test.images)
    assert a.images.shape == (64, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.labels.dtype == torch.int64 and len(a.labels.unique()) >= 4
    assert a.classes == D.SHAPE_KINDS
    big = D.shapes("test", size=96, n_test=8)
    assert big.images.shape == (8, 3, 96, 96) and big.images.dtype == torch.uint8
    # not blank: every image has a visible shape (foreground differs from background)
    assert (a.images.float().std(dim=(1, 2, 3)) > 10).all()


def test_shapes_train_test_disjoint():
    train = D.shapes("train", n_train=200).images.flatten(1)
    test = D.shapes("test", n_test=200).images.flatten(1)
    assert torch.cdist(train.float(), test.float()).min() > 0


def test_shapes_labels_cover_every_class():
    raw = D.shapes("train", n_train=500)
    assert raw.labels.min() >= 0 and raw.labels.max() < len(D.SHAPE_KINDS)
    assert (torch.bincount(raw.labels, minlength=len(D.SHAPE_KINDS)) > 50).all()


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, H, W) Rec. 601 luma in [0, 1]."""
    x = images.float() / 255
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _power_spectrum_exponent(images: torch.Tensor) -> float:
    """a in P(f) ~ 1/f**a: least-squares slope of the log radially averaged luma power spectrum
    (mean over images) against log f, f = 1 .. S/2 cycles per image."""
    y = _luma(images)
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    size = y.shape[-1]
    power = torch.fft.fft2(y).abs().square().mean(0)  # (S, S)
    f = torch.fft.fftfreq(size) * size
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).round()
    ks = torch.arange(1, size // 2 + 1, dtype=torch.float32)
    radial = torch.stack([power[radius == k].mean() for k in ks])
    design = torch.stack([torch.ones_like(ks), ks.log()], 1)
    slope = torch.linalg.lstsq(design, radial.log().unsqueeze(1)).solution[1, 0]
    return -float(slope)


def _local_luma_std(images: torch.Tensor) -> torch.Tensor:
    """(N, H-2, W-2) standard deviation of luma in every 3x3 neighbourhood."""
    y = _luma(images).unsqueeze(1)
    mean = torch.nn.functional.avg_pool2d(y, 3, stride=1)
    mean_sq = torch.nn.functional.avg_pool2d(y * y, 3, stride=1)
    return (mean_sq - mean * mean).clamp_min(0).sqrt().squeeze(1)


@pytest.mark.parametrize("size", [32, 96])
def test_shapes_have_natural_image_statistics(size):
    """Textured mid-tone images, not flat colour.  Measured by these helpers: the former
    flat-colour shapes had luma std 0.09, 70-94% flat 3x3 patches, median local std 0.002,
    power exponent 3.0, HSV saturation 0.68, 3% clipped values; CIFAR-10 test photos have 0.20,
    2%, 0.055, 2.8, 0.27, 3%; these shapes 0.13, <= 4%, >= 0.027, 2.5-2.6, 0.37, 1%."""
    images = D.shapes("test", size=size, n_test=400 if size == 32 else 64).images
    spatial_std = _luma(images).std(dim=(-2, -1))  # (N,)
    assert spatial_std.mean() > 0.11 and spatial_std.min() > 0.02
    local = _local_luma_std(images)
    assert (local < 1 / 255).float().mean() < 0.1  # few flat 3x3 patches
    assert local.flatten(1).median(1).values.mean() > 0.015  # per-pixel detail (CIFAR-10: 0.055)
    # natural images: power ~ 1/f^a with a around 2 (flat regions with sharp edges fall faster)
    assert 1.5 < _power_spectrum_exponent(images) < 2.9
    # mid-tone colours: moderate saturation, few clipped channel values
    x = images.float() / 255
    top, bottom = x.max(1).values, x.min(1).values
    saturation = ((top - bottom) / top.clamp_min(1e-6)).mean()
    assert 0.15 < saturation < 0.5
    assert ((images <= 2) | (images >= 253)).float().mean() < 0.02


# ----------------------------------------------------------------------------- cifar10 pickles

def write_cifar(root: Path, n_per_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    imgs, labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = rand_images(n_per_batch, 32, 32, seed=i)
        y = [(i + j) % 10 for j in range(n_per_batch)]
        with open(d / name, "wb") as f:  # the original format: bytes keys, (N, 3072) rows
            pickle.dump({b"data": x.reshape(n_per_batch, 3072), b"labels": y,
                         b"batch_label": name.encode()}, f)
        imgs.append(x)
        labels.append(y)
    return np.concatenate(imgs), np.concatenate(labels)


def test_cifar10_pickle_layout(tmp_path):
    imgs, labels = write_cifar(tmp_path)
    train = D.cifar10("train", root=str(tmp_path), download=False)
    assert train.images.shape == (15, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(imgs[:15]))
    assert train.labels.tolist() == labels[:15].tolist()
    test = D.cifar10("test", root=str(tmp_path), download=False)
    assert torch.equal(test.images, torch.from_numpy(imgs[15:]))
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"


def test_cifar10_missing_data_offline(tmp_path):
    root = tmp_path / "nothing"
    with pytest.raises(DataError) as err:
        D.cifar10("train", root=str(root))  # download=True, but the network is off
    msg = str(err.value)
    assert str(root.resolve()) in msg and "download failed" in msg and "\n" not in msg
    assert "network disabled" in msg


def test_cifar10_reads_image_folders(tmp_path):
    x = rand_images(2, 32, 32)
    write_folder(tmp_path, "test", {"cat": x, "truck": x[::-1]})
    raw = D.cifar10("test", root=str(tmp_path))
    assert raw.labels.tolist() == [3, 3, 9, 9]  # canonical class indices, not folder order
    assert torch.equal(raw.images[:2], torch.from_numpy(x))
    with pytest.raises(DataError, match=str(tmp_path / "train")):
        D.cifar10("train", root=str(tmp_path))


# ----------------------------------------------------------------------------- stl10 binary

def write_stl(root: Path, train: np.ndarray, y: np.ndarray, unlabeled: np.ndarray) -> None:
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    # the original format stores each 3x96x96 image column-major: transpose H and W on disk
    train.transpose(0, 1, 3, 2).tofile(d / "train_X.bin")
    (y + 1).astype(np.uint8).tofile(d / "train_y.bin")
    unlabeled.transpose(0, 1, 3, 2).tofile(d / "unlabeled_X.bin")


def test_stl10_binary_orientation_and_concat(tmp_path):
    train = rand_images(3, 96, 96, seed=1)
    train[0, :, :10, :] = 255  # a white band at the TOP of image 0: orientation is visible
    train[0, :, 10:, :] = 0
    unlabeled = rand_images(2, 96, 96, seed=2)
    write_stl(tmp_path, train, np.array([0, 6, 9]), unlabeled)
    raw = D.stl10("train", root=str(tmp_path), download=False)
    assert torch.equal(raw.images, torch.from_numpy(train))
    assert (raw.images[0, :, :10] == 255).all() and (raw.images[0, :, 10:] == 0).all()
    assert raw.labels.tolist() == [0, 6, 9] and raw.classes[6] == "horse"
    full = D.stl10("train+unlabeled", root=str(tmp_path), download=False)
    assert torch.equal(full.images, torch.from_numpy(np.concatenate([train, unlabeled])))
    assert full.labels.tolist() == [0, 6, 9, -1, -1]
    with pytest.raises(DataError, match="test_X.bin"):
        D.stl10("test", root=str(tmp_path), download=False)


def test_stl10_unlabelled_with_class_filter_is_an_error(tmp_path):
    write_stl(tmp_path, rand_images(2, 96, 96), np.array([6, 1]), rand_images(2, 96, 96))
    spec = D.DataSpec(source="stl10", root=str(tmp_path), resolution=96,
                      train_split="train+unlabeled", classes=["horse"])
    with pytest.raises(DataError, match="unlabelled"):
        D.load(spec, "train")
    spec = D.DataSpec(source="stl10", root=str(tmp_path), resolution=96, classes=["horse"])
    assert D.load(spec, "train").labels.tolist() == [0]


def test_stl10_missing_data_offline(tmp_path):
    with pytest.raises(DataError, match="stl10: no data at .*stl10_binary/.*download failed"):
        D.stl10("train", root=str(tmp_path / "none"))


# ----------------------------------------------------------------------------- imagefolder + spec

@pytest.fixture
def folder(tmp_path):
    imgs = {"bird": rand_images(3, 16, 16, 1), "cat": rand_images(2, 16, 16, 2),
            "horse": rand_images(4, 16, 16, 3)}
    write_folder(tmp_path, "train", imgs)
    write_folder(tmp_path, "test", {k: v[:1] for k, v in imgs.items()})
    return tmp_path, imgs


def test_imagefolder_exact_pixels(folder):
    root, imgs = folder
    s = D.load(D.DataSpec(source="imagefolder", root=str(root), resolution=16), "train")
    assert s.classes == ["bird", "cat", "horse"]
    assert torch.equal(s.images, torch.from_numpy(np.concatenate(list(imgs.values()))))
    assert s.labels.tolist() == [0] * 3 + [1] * 2 + [2] * 4
    assert s.images.is_contiguous() and s.images.dtype == torch.uint8
    assert len(D.load(D.DataSpec(source="imagefolder", root=str(root), resolution=16), "test")) == 3


def test_imagefolder_resize(folder):
    root, imgs = folder
    s = D.load(D.DataSpec(source="imagefolder", root=str(root), resolution=8), "train")
    assert s.images.shape == (9, 3, 8, 8) and s.images.dtype == torch.uint8
    # antialiased bilinear = PIL's BILINEAR resize (the reference), within rounding
    want = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize((8, 8), Image.BILINEAR))
                     for im in imgs["bird"]]).transpose(0, 3, 1, 2)
    assert (s.images[:3].int() - torch.from_numpy(want).int()).abs().max() <= 1


def test_class_subset_by_name(folder):
    root, imgs = folder
    s = D.load(D.DataSpec(source="imagefolder", root=str(root), resolution=16,
                          classes=["horse", "bird"]), "train")
    assert s.classes == ["horse", "bird"]
    assert sorted(s.labels.tolist()) == [0] * 4 + [1] * 3  # re-indexed into the subset's order
    assert torch.equal(s.images[s.labels == 0], torch.from_numpy(imgs["horse"]))


def test_unknown_class_did_you_mean(folder):
    root, _ = folder
    spec = D.DataSpec(source="imagefolder", root=str(root), resolution=16, classes=["hrose"])
    with pytest.raises(ConfigError) as err:
        D.load(spec, "train")
    assert err.value.key == "classes" and "did you mean 'horse'" in str(err.value)
    # known-class sources fail in check(), before any file is touched
    with pytest.raises(ConfigError, match="did you mean 'airplane'") as err:
        D.DataSpec(source="cifar10", root="/nonexistent", resolution=32, classes=["airplan"]).check()
    assert err.value.key == "classes"


def test_missing_split_folder(folder):
    root, _ = folder
    spec = D.DataSpec(source="imagefolder", root=str(root), resolution=16, test_split="val")
    with pytest.raises(DataError, match=str(root / "val")):
        D.load(spec, "test")


def test_spec_check_errors_have_keys():
    with pytest.raises(ConfigError, match="did you mean 'shapes'") as err:
        D.DataSpec(source="shape", resolution=32).check()
    assert err.value.key == "source"
    with pytest.raises(ConfigError) as err:
        D.DataSpec(source="shapes", resolution=32, n_trian=10).check()
    assert err.value.key == "n_trian" and "n_train" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'hflip'") as err:
        D.DataSpec(source="shapes", resolution=32, hflp=True).check()
    assert err.value.key == "hflp"
    with pytest.raises(ConfigError) as err:
        D.DataSpec(source="shapes", resolution=32, size="big").check()
    assert err.value.key == "size"
    with pytest.raises(ConfigError) as err:
        D.DataSpec(source="imagefolder", resolution=32).check()
    assert err.value.key == "root"
    with pytest.raises(ConfigError) as err:
        D.DataSpec(source="shapes", resolution=32, holdout=1.5).check()
    assert err.value.key == "holdout"
    spec = D.DataSpec(source="shapes", resolution=32, n_train=10, model={"latent_dim": 8})
    assert spec.source_args() == {"size": 32, "n_train": 10, "n_test": 1000, "seed": 0}
    assert spec.model == {"latent_dim": 8}


def test_default_datasets_are_valid_specs():
    for d in D.DEFAULT_DATASETS.values():
        D.DataSpec(**d).check()
    assert D.DEFAULT_DATASETS["stl10"]["train_split"] == "train+unlabeled"


def test_limit_and_holdout(tmp_path):
    imgs = {c: rand_images(10, 8, 8, i) for i, c in enumerate(["a", "b"])}
    write_folder(tmp_path, "train", imgs)  # no test folder, like stl10-png
    base = {"source": "imagefolder", "root": str(tmp_path), "resolution": 8}
    with pytest.raises(DataError, match="missing split folder"):
        D.load(D.DataSpec(**base), "test")
    spec = D.DataSpec(**base, holdout=0.3)
    train, test = D.load(spec, "train"), D.load(spec, "test")
    assert len(train) == 14 and len(test) == 6
    assert torch.bincount(test.labels).tolist() == [3, 3]   # the same fraction of every class
    all_rows = {bytes(x.numpy()) for x in torch.cat([train.images, test.images])}
    assert len(all_rows) == 20  # disjoint and complete
    small = D.load(D.DataSpec(**base, limit_train=4), "train")
    large = D.load(D.DataSpec(**base, limit_train=8), "train")
    assert len(small) == 4 and len(large) == 8
    assert {bytes(x.numpy()) for x in small.images} <= {bytes(x.numpy()) for x in large.images}


def test_npz(tmp_path):
    x = rand_images(4, 8, 8)
    np.savez(tmp_path / "d.npz", x_train=x.transpose(0, 2, 3, 1), y_train=np.array([0, 1, 1, 2]),
             x_test=x[:2])
    train = D.npz("train", path=str(tmp_path / "d.npz"))
    assert torch.equal(train.images, torch.from_numpy(x)) and train.classes == ["0", "1", "2"]
    test = D.npz("test", path=str(tmp_path / "d.npz"))
    assert torch.equal(test.images, torch.from_numpy(x[:2])) and test.labels.tolist() == [-1, -1]
    with pytest.raises(DataError, match="x_val"):
        D.npz("val", path=str(tmp_path / "d.npz"))


# ----------------------------------------------------------------------------- cache

def test_cache_hit_equals_first_load(folder, monkeypatch, tmp_path_factory):
    root, _ = folder
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path_factory.mktemp("cache")))
    spec = D.DataSpec(source="imagefolder", root=str(root), resolution=16)
    first = D.load(spec, "train")
    files = list(D.cache_dir().glob("*.pt"))
    assert len(files) == 1 and not list(D.cache_dir().glob("*.tmp"))

    def fail(*a, **k):
        raise AssertionError("decoded again instead of using the cache")
    monkeypatch.setattr(D, "_decode_files", fail)
    second = D.load(spec, "train")
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.classes == second.classes
    # a different resolution or a changed folder is a different cache entry (-> decodes -> fails)
    with pytest.raises(AssertionError, match="decoded again"):
        D.load(D.DataSpec(source="imagefolder", root=str(root), resolution=8), "train")
    Image.fromarray(rand_images(1, 16, 16)[0].transpose(1, 2, 0)).save(root / "train/cat/new.png")
    with pytest.raises(AssertionError, match="decoded again"):
        D.load(spec, "train")


# ----------------------------------------------------------------------------- batches

def test_batches_deterministic_and_in_range():
    imgs = D.shapes("train", n_train=50, size=8).images
    a = B.Batches(imgs, batch_size=16, seed=3)
    b = B.Batches(imgs, batch_size=16, seed=3)
    c = B.Batches(imgs, batch_size=16, seed=4)
    xs = [a.next() for _ in range(7)]  # crosses two epoch boundaries (3 batches per epoch)
    assert all(torch.equal(x, b.next()) for x in xs)
    assert not torch.equal(xs[0], c.next())
    assert len(a) == 3 and xs[0].shape == (16, 3, 8, 8) and xs[0].dtype == torch.float32
    assert all(x.min() >= 0 and x.max() <= 1 for x in xs)
    # one epoch = distinct images, drop_last: 48 of 50 seen
    epoch = torch.cat(xs[:3]).flatten(1)
    assert len({bytes(r.numpy()) for r in epoch}) == 48


def test_batches_resume_identical():
    imgs = D.shapes("train", n_train=40, size=8).images
    ref = B.Batches(imgs, batch_size=12, seed=0, hflip=True)
    want = [ref.next() for _ in range(10)]
    run = B.Batches(imgs, batch_size=12, seed=0, hflip=True)
    for _ in range(4):
        run.next()
    state = run.state_dict()
    state = pickle.loads(pickle.dumps(state))  # as through a checkpoint file
    resumed = B.Batches(imgs, batch_size=12, seed=123, hflip=True)  # seed is overridden by state
    resumed.load_state_dict(state)
    for i in range(4, 10):
        assert torch.equal(resumed.next(), want[i]), f"batch {i} differs after resume"


def test_batches_hflip_flips_some():
    imgs = D.shapes("train", n_train=64, size=8).images
    plain = B.Batches(imgs, batch_size=64, seed=0, hflip=False).next()
    flipped = B.Batches(imgs, batch_size=64, seed=0, hflip=True).next()  # same permutation
    same = (flipped == plain).flatten(1).all(1)
    mirrored = (flipped == plain.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 10 < int((mirrored & ~same).sum()) < 54


def test_batches_errors():
    imgs = D.shapes("train", n_train=10, size=8).images
    with pytest.raises(DataError, match="batch_size"):
        B.Batches(imgs, batch_size=11, seed=0)
    with pytest.raises(DataError, match="uint8"):
        B.Batches(imgs.float(), batch_size=2, seed=0)


def test_to_float():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    y = B.to_float(x, "cpu")
    assert y.dtype == torch.float32
    assert torch.equal(y.flatten(), torch.tensor([0.0, 128 / 255, 1.0], dtype=torch.float32))


# ----------------------------------------------------------------------------- real data (opt-in)

@pytest.mark.realdata
def test_real_cifar10_jpeg_and_stl10_png():
    root = Path(os.environ["PEGASUS_DATASETS"])
    t = time.perf_counter()
    cifar = D.load(D.DataSpec(source="cifar10", root=str(root / "cifar10-jpeg"), resolution=32,
                              download=False), "test")
    print(f"\ncifar10-jpeg test: {len(cifar)} images in {time.perf_counter() - t:.2f}s")
    assert cifar.images.shape == (10000, 3, 32, 32) and len(cifar.classes) == 10
    assert torch.equal(cifar.labels.bincount(), torch.full((10,), 1000))
    stl = D.load(D.DataSpec(source="stl10", root=str(root / "stl10-png"), resolution=96,
                            classes=["horse", "bird"], download=False), "train")
    assert stl.images.shape == (1000, 3, 96, 96) and stl.classes == ["horse", "bird"]
    assert torch.equal(stl.labels.bincount(), torch.tensor([500, 500]))
