"""Class probe: a small CNN the suite trains itself, to say how much an image looks like each class.

    probe = get_probe(dspec, device)    # trained once per training-data fingerprint, then cached
    probe.probs(x)                      # (B, n_classes) softmax; x float in [0, 1], any resolution
    probe.accuracy, probe.fingerprint   # held-out accuracy, identity of the training data + settings

No pretrained classifier can be downloaded here, so "is this a horse or a bird?" is answered by a
probe trained on the dataset's labelled *train* split, all classes (a run trained on a class
subset still gets a probe over every class, so "off-class mass" means something).  Held-out
images are never trained on; the probe's accuracy on them is stored with the probe and with
every number it produces.

Protocol: images are resized (antialiased bilinear) to ``min(resolution, ProbeConfig.side)``
inside the network, so it runs at 32 and 96 px alike; training is seeded (init, batch order,
flips and shifts come from one seed), batches are index permutations of a device-resident uint8
tensor.  The cache lives at ``$PEGASUS_CACHE/probes/<fingerprint[:24]>.pt``, keyed by sha256 of
the training images, labels, class names and every ``ProbeConfig`` field; it is written
atomically.  If the held-out set changes, the accuracy is re-measured and the file rewritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench import store
from bench.data import batches as batches_mod
from bench.data import sources as data_mod
from bench.errors import BenchError
from bench.paths import cache_root

PROBE_VERSION = 1
EVAL_BATCH = 256


@dataclass(frozen=True)
class ProbeConfig:
    """Everything that changes the trained probe (all of it is in the cache key)."""
    side: int = 48                              # images are resized to min(resolution, side)
    widths: tuple[int, ...] = (24, 48, 96, 128)
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    shift: int = 4                              # random translation, pixels at the probe's side
    hflip: bool = True
    seed: int = 0


DEFAULT_CONFIG = ProbeConfig()   # read at call time, so a test can swap in a smaller probe


class ProbeNet(nn.Module):
    """conv3x3-BN-ReLU stages with 2x2 max-pool between them, global average pool, linear head."""

    def __init__(self, n_classes: int, side: int, widths: tuple[int, ...]):
        super().__init__()
        self.side = side
        layers: list[nn.Module] = []
        c = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, n_classes)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, s, s), s = min(H, side), roughly zero-mean."""
        s = min(x.shape[-1], self.side)
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - 0.5) / 0.25

    def forward(self, x: torch.Tensor, prepared: bool = False) -> torch.Tensor:
        return self.head(self.body(x if prepared else self.prepare(x)))


@dataclass
class Probe:
    net: ProbeNet
    classes: list[str]
    accuracy: float                 # on the held-out split, all classes
    fingerprint: str                # sha256 of training data + ProbeConfig
    info: dict[str, Any]            # protocol: n_train, n_test, split names, config, cache path

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_classes) class probabilities of float images in [0, 1] (on the probe's device)."""
        p = next(self.net.parameters())
        self.net.eval()
        out = [F.softmax(self.net(x[i:i + EVAL_BATCH].to(p.device).float()), dim=1)
               for i in range(0, len(x), EVAL_BATCH)]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes), device=p.device)

    def protocol(self) -> dict[str, Any]:
        """The fields every number produced with this probe carries."""
        return {"probe_accuracy": round(self.accuracy, 4), "probe_fingerprint": self.fingerprint[:16],
                "probe_n_train": self.info["n_train"], "probe_n_test": self.info["n_test"],
                "probe_classes": len(self.classes)}


# --------------------------------------------------------------------------- identity + cache

def fingerprint(images: torch.Tensor, labels: torch.Tensor, classes: list[str], cfg: ProbeConfig) -> str:
    """sha256 over the uint8 image bytes, labels, class names, probe settings and version."""
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    h.update(json.dumps({"shape": list(images.shape), "classes": classes, "config": dataclasses.asdict(cfg),
                         "version": PROBE_VERSION}, sort_keys=True).encode())
    return h.hexdigest()


def cache_path(fp: str) -> Path:
    return cache_root() / "probes" / f"{fp[:24]}.pt"


def _labelled(s: data_mod.ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    keep = s.labels >= 0
    if bool(keep.all()):
        return s.images, s.labels
    return s.images[keep].contiguous(), s.labels[keep].contiguous()


# --------------------------------------------------------------------------- training

def _augment(x: torch.Tensor, cfg: ProbeConfig, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and per-image translations (reflect-padded crops) of (B, 3, s, s)."""
    b, _, s, _ = x.shape
    if cfg.hflip:
        flip = (torch.rand(b, generator=g) < 0.5).to(x.device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    p = cfg.shift
    if p > 0:
        xp = F.pad(x, (p, p, p, p), mode="reflect")
        dy, dx = (torch.randint(0, 2 * p + 1, (2, b), generator=g)).to(x.device)
        ar = torch.arange(s, device=x.device)
        rows = (dy.view(b, 1) + ar).view(b, s, 1)          # (B, s, 1)
        cols = (dx.view(b, 1) + ar).view(b, 1, s)          # (B, 1, s)
        bi = torch.arange(b, device=x.device).view(b, 1, 1)
        x = xp.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 3, 1, 2)   # (B, 3, s, s)
    return x


@torch.enable_grad()      # also when called from a no_grad scoring pass (first use of a dataset)
def train_probe(images: torch.Tensor, labels: torch.Tensor, n_classes: int, cfg: ProbeConfig,
                device: torch.device, *, progress: bool = True, desc: str = "probe") -> ProbeNet:
    """Train a ProbeNet on uint8 (N, 3, H, W) images with labels in 0..n_classes-1."""
    from tqdm.auto import tqdm

    if len(images) < 2:
        raise BenchError(f"{desc}: the class probe needs labelled training images (got {len(images)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = ProbeNet(n_classes, cfg.side, cfg.widths).to(device)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    data = images.to(device)                                  # (N, 3, H, W) uint8, resident
    targets = labels.to(device)
    bs = min(cfg.batch_size, len(data))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(k, cfg.steps) / cfg.steps)))
    net.train()
    perm, pos = torch.randperm(len(data), generator=g), 0
    bar = tqdm(total=cfg.steps, desc=desc, file=sys.stderr, disable=not progress, leave=False,
               dynamic_ncols=True, mininterval=1.0)
    for _ in range(cfg.steps):
        if pos + bs > len(perm):
            perm, pos = torch.randperm(len(data), generator=g), 0
        idx = perm[pos:pos + bs].to(device)
        pos += bs
        x = _augment(net.prepare(data[idx].float().div_(255)), cfg, g)    # (B, 3, s, s)
        loss = F.cross_entropy(net(x, prepared=True), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
    bar.close()
    return net.eval()


@torch.no_grad()
def accuracy(net: ProbeNet, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Top-1 accuracy on uint8 images with labels >= 0."""
    net.eval()
    correct = 0
    for i in range(0, len(images), EVAL_BATCH):
        logits = net(batches_mod.to_float(images[i:i + EVAL_BATCH], device))
        correct += int((logits.argmax(1).cpu() == labels[i:i + EVAL_BATCH]).sum())
    return correct / max(len(images), 1)


# --------------------------------------------------------------------------- the cached probe

def all_classes(dspec: data_mod.DataSpec) -> data_mod.DataSpec:
    """The same dataset with every class (the probe and the held-out pairs ignore a class subset)."""
    return data_mod.DataSpec(**{**dspec.model_dump(), "classes": None})


def get_probe(dspec: data_mod.DataSpec, device: torch.device, cfg: ProbeConfig | None = None, *,
              progress: bool = True) -> Probe:
    """The probe for ``dspec``'s dataset (all classes): from the cache, else trained and cached."""
    cfg = cfg or DEFAULT_CONFIG
    spec = all_classes(dspec)
    train = data_mod.load(spec, "train")
    x_tr, y_tr = _labelled(train)
    if not train.classes or len(x_tr) == 0:
        raise BenchError(f"{train.name}: no class labels, so no class probe can be trained "
                         "(use a labelled dataset)")
    test = data_mod.load(spec, "test")
    x_te, y_te = _labelled(test)
    fp = fingerprint(x_tr, y_tr, train.classes, cfg)
    test_fp = hashlib.sha256(x_te.numpy().tobytes() + y_te.numpy().tobytes()).hexdigest()
    path = cache_path(fp)
    blob = _read_cache(path, fp)
    if blob is None:
        net = train_probe(x_tr, y_tr, len(train.classes), cfg, device, progress=progress,
                          desc=f"class probe {train.name} ({len(x_tr)} images)")
        blob = {"fingerprint": fp, "classes": list(train.classes), "config": dataclasses.asdict(cfg),
                "state": {k: v.cpu() for k, v in net.state_dict().items()}, "n_train": len(x_tr),
                "train": train.description, "version": PROBE_VERSION}
    net = ProbeNet(len(blob["classes"]), cfg.side, cfg.widths)
    net.load_state_dict(blob["state"])
    net = net.to(device).eval()
    if blob.get("test_fingerprint") != test_fp:       # new probe, or the held-out set changed
        blob.update(test_fingerprint=test_fp, accuracy=accuracy(net, x_te, y_te, device),
                    n_test=len(x_te), test=test.description)
        store.torch_save(path, blob)
    info = {"n_train": blob["n_train"], "n_test": blob["n_test"], "train": blob["train"],
            "test": blob["test"], "config": blob["config"], "cache": str(path)}
    return Probe(net, list(blob["classes"]), float(blob["accuracy"]), fp, info)


def _read_cache(path: Path, fp: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:   # unreadable (e.g. an interrupted disk): retrain
        return None
    return blob if blob.get("fingerprint") == fp and blob.get("version") == PROBE_VERSION else None
