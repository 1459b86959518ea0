"""Class probe: a linear classifier on a frozen feature network, to say how much an image looks like each class.

    probe = get_probe(dspec, device, exclude=idx)   # fitted once per (training images, features, settings), cached
    probe.probs(x)                                  # (B, n_classes) softmax; x float in [0, 1], any resolution
    probe.probs_of(features)                        # the same from features already computed (shared with KID)
    probe.accuracy, probe.fingerprint               # held-out accuracy, identity of everything it was fitted on

No pretrained classifier can be downloaded here, and a small CNN trained on a few thousand images is too
weak to judge a hybrid (a first version of this probe reached 0.57 held-out accuracy on STL-10, so a
blurry frame spread its mass over every class).  The probe therefore reads images through the TF-Inception
network the suite already ships for FID (pool3, 2048 features; ``bench.weights``) and fits a multinomial
logistic regression on them (standardised features, L2 penalty, full-batch L-BFGS: deterministic on a CPU).

Protocol: fitted on a seeded, class-balanced sample of the labelled *train* split with every class
(``ProbeConfig.per_class`` images each, fewer where a class has fewer), minus the images a caller
excludes (a KID reference drawn from the train split must not be what the probe learnt from); held-out
accuracy on a seeded, class-balanced sample of the held-out split (``test_per_class`` each), which the
probe never sees in fitting.  The cache lives at ``$PEGASUS_CACHE/probes/<fingerprint[:24]>.pt``, keyed by
sha256 of the training images, labels, class names, the feature network's weights and every
``ProbeConfig`` field; it is written atomically.  No Inception weights: ``WeightsError`` (the pegasus
metrics that need the probe are then recorded unavailable with that reason).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench import store
from bench.data import sources as data_mod
from bench.errors import BenchError
from bench.metrics import fidelity, quality
from bench.paths import cache_root
from bench.weights import files as weights
from bench.weights import networks as pretrained

PROBE_VERSION = 2


@dataclass(frozen=True)
class ProbeConfig:
    """Everything that changes the fitted probe (all of it is in the cache key)."""
    per_class: int = 300            # training images per class (class-balanced, seeded)
    test_per_class: int = 100       # held-out images per class for the accuracy
    weight_decay: float = 1e-3      # L2 penalty on the weights (mean cross-entropy + wd/2 |W|^2)
    max_iter: int = 500             # L-BFGS iterations
    seed: int = 0


DEFAULT_CONFIG = ProbeConfig()   # read at call time, so a test can swap in a smaller probe


@dataclass(frozen=True)
class FeatureNet:
    """A frozen network images are read through: uint8 (N, 3, H, W) -> (N, D) float32 on the CPU."""
    name: str
    fingerprint: str                # identity of its weights (sha256)
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def inception_features(device: torch.device) -> FeatureNet:
    """TF-Inception pool3 features (the FID network); ``WeightsError`` when its weights are absent."""
    src = weights.fid_source()
    extractor = pretrained.build_inception(src, device)
    return FeatureNet(f"{src['extractor']} pool3 ({fidelity.RESIZE})", src["sha256"],
                      lambda x: fidelity._features(extractor, x, device))


FEATURES: Callable[[torch.device], FeatureNet] = inception_features   # swapped for a tiny network in tests


@dataclass
class Probe:
    weight: torch.Tensor            # (D, C), for standardised features
    bias: torch.Tensor              # (C,)
    mean: torch.Tensor              # (D,) standardisation fitted on the training features
    std: torch.Tensor
    features: FeatureNet
    classes: list[str]
    accuracy: float                 # on the held-out sample, all classes
    fingerprint: str                # sha256 of training images + features + ProbeConfig
    info: dict[str, Any]            # protocol: n_train, n_test, split names, config, cache path

    def probs_of(self, f: torch.Tensor) -> torch.Tensor:
        """(B, n_classes) class probabilities of features from ``self.features``."""
        return F.softmax(((f.float() - self.mean) / self.std) @ self.weight + self.bias, dim=1)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_classes) class probabilities of float images in [0, 1] (read as uint8, as FID reads them)."""
        if len(x) == 0:
            return torch.zeros(0, len(self.classes))
        return self.probs_of(self.features(quality.to_uint8(x.cpu())))

    def protocol(self) -> dict[str, Any]:
        """The fields every number produced with this probe carries."""
        return {"probe": "linear on " + self.features.name, "probe_accuracy": round(self.accuracy, 4),
                "probe_fingerprint": self.fingerprint[:16], "probe_n_train": self.info["n_train"],
                "probe_n_test": self.info["n_test"], "probe_classes": len(self.classes)}


# --------------------------------------------------------------------------- identity + cache

def fingerprint(images: torch.Tensor, labels: torch.Tensor, classes: list[str], cfg: ProbeConfig,
                features: str) -> str:
    """sha256 over the uint8 image bytes, labels, class names, feature weights, probe settings and version."""
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    h.update(json.dumps({"shape": list(images.shape), "classes": classes, "config": dataclasses.asdict(cfg),
                         "features": features, "version": PROBE_VERSION}, sort_keys=True).encode())
    return h.hexdigest()


def cache_path(fp: str) -> Path:
    return cache_root() / "probes" / f"{fp[:24]}.pt"


def balanced(labels: torch.Tensor, per_class: int, seed: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted indices of up to ``per_class`` labelled images of every class (seeded), none of ``exclude``."""
    allowed = labels >= 0
    if exclude is not None and len(exclude):
        allowed[exclude] = False
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels[allowed].unique(sorted=True):
        members = (allowed & (labels == c)).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.int64)

# --------------------------------------------------------------------------- fitting

@torch.enable_grad()      # also when called from a no_grad scoring pass (first use of a dataset)
def fit_linear(f: torch.Tensor, labels: torch.Tensor, n_classes: int, cfg: ProbeConfig
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight, bias, mean, std) of an L2-penalised multinomial logistic regression on standardised features."""
    f = f.double()
    mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
    z = (f - mean) / std
    w = torch.zeros(z.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=cfg.max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    y = labels.to(torch.int64)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + cfg.weight_decay / 2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float(), mean.float(), std.float()


def accuracy(probe: Probe, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy on uint8 images with labels >= 0."""
    if not len(images):
        return float("nan")
    p = probe.probs_of(probe.features(images))
    return float((p.argmax(1) == labels).float().mean())


# --------------------------------------------------------------------------- the cached probe

def all_classes(dspec: data_mod.DataSpec) -> data_mod.DataSpec:
    """The same dataset with every class (the probe and the held-out pairs ignore a class subset)."""
    return data_mod.DataSpec(**{**dspec.model_dump(), "classes": None})


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"class probe: {msg}", file=sys.stderr, flush=True)


def get_probe(dspec: data_mod.DataSpec, device: torch.device, cfg: ProbeConfig | None = None, *,
              exclude: torch.Tensor | None = None, features: FeatureNet | None = None,
              progress: bool = True) -> Probe:
    """The probe for ``dspec``'s dataset (all classes), fitted without the train-split images ``exclude``:
    from the cache, else fitted and cached."""
    cfg = cfg or DEFAULT_CONFIG
    features = features or FEATURES(device)
    spec = all_classes(dspec)
    train = data_mod.load(spec, "train")
    if not train.classes or not bool((train.labels >= 0).any()):
        raise BenchError(f"{train.name}: no class labels, so no class probe can be fitted (use a labelled dataset)")
    tr = balanced(train.labels, cfg.per_class, cfg.seed, exclude)
    x_tr, y_tr = train.images[tr].contiguous(), train.labels[tr].contiguous()
    test = data_mod.load(spec, "test")
    te = balanced(test.labels, cfg.test_per_class, cfg.seed + 1)
    x_te, y_te = test.images[te].contiguous(), test.labels[te].contiguous()
    fp = fingerprint(x_tr, y_tr, train.classes, cfg, features.fingerprint)
    test_fp = hashlib.sha256(x_te.numpy().tobytes() + y_te.numpy().tobytes()).hexdigest()
    path = cache_path(fp)
    blob = _read_cache(path, fp)
    if blob is None:
        _say(progress, f"features of {len(x_tr)} {train.name} training images ({features.name})")
        w, b, mu, sd = fit_linear(features(x_tr), y_tr, len(train.classes), cfg)
        blob = {"fingerprint": fp, "classes": list(train.classes), "config": dataclasses.asdict(cfg),
                "weight": w, "bias": b, "mean": mu, "std": sd, "n_train": len(x_tr),
                "n_excluded": 0 if exclude is None else len(exclude), "train": train.description,
                "features": features.name, "version": PROBE_VERSION}
    probe = Probe(blob["weight"], blob["bias"], blob["mean"], blob["std"], features, list(blob["classes"]),
                  float(blob.get("accuracy", float("nan"))), fp, {})
    if blob.get("test_fingerprint") != test_fp:       # new probe, or the held-out set changed
        _say(progress, f"held-out accuracy on {len(x_te)} images")
        blob.update(test_fingerprint=test_fp, accuracy=accuracy(probe, x_te, y_te), n_test=len(x_te),
                    test=test.description)
        store.torch_save(path, blob)
        probe.accuracy = float(blob["accuracy"])
    probe.info = {"n_train": blob["n_train"], "n_excluded": blob["n_excluded"], "n_test": blob["n_test"],
                  "train": blob["train"], "test": blob["test"], "config": blob["config"],
                  "features": blob["features"], "selection": "class-balanced seeded sample of each split",
                  "cache": str(path)}
    return probe


def _read_cache(path: Path, fp: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:   # unreadable (e.g. an interrupted disk): refit
        return None
    return blob if blob.get("fingerprint") == fp and blob.get("version") == PROBE_VERSION else None
