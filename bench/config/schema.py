"""Ablation files: strict YAML loading, validation and expansion into runs.

    load(path, overrides) -> AblationSpec      # every mistake raised here, as file:line: key: message
    expand(spec)          -> [RunSpec, ...]    # arms x datasets x seeds, fully resolved

YAML pitfalls handled by the loader: duplicate keys are rejected; ``1e-3`` is a float
(PyYAML's YAML 1.1 resolver reads it as a string); only ``true``/``false`` are booleans (``off``,
``no``, ``yes`` stay strings, so a pydantic type check catches them).

Resolution order for one run (later wins):
    built-in dataset definition < ``data.<dataset>`` in the file (and its bases)
    model args:  ``data.<dataset>.model`` < ``defaults.model`` < ``arms.<arm>.model``
    loss list:   ``defaults.loss``, replaced wholesale by ``arms.<arm>.loss``
    train/eval:  ``defaults.train`` < ``arms.<arm>.train`` (key by key)
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from bench.config import grid
from bench.data import sources as data_mod
from bench.errors import BenchError, ConfigError
from losses import LossEntry, parse_loss
from models import MODELS

CLAIM_IDS = [f"C{i}" for i in range(1, 12)]
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


# --------------------------------------------------------------------------- YAML with lines

class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans and floats."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

Origin = tuple[str, int]          # (file, line)
KeyPath = tuple[Any, ...]            # ("arms", "ssim", "loss", 1, "name")


def _walk(node: yaml.Node, file: str, path: KeyPath, lines: dict[KeyPath, Origin]) -> Any:
    lines[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = _Loader.construct_object(_Loader(""), knode) if not isinstance(knode, yaml.ScalarNode) \
                else _scalar(knode, file)
            if not isinstance(key, (str, int)):
                raise ConfigError("mapping keys must be plain names", file=file,
                                  line=knode.start_mark.line + 1, key=_dotted(path))
            if key in out:
                raise ConfigError(f"duplicate key {key!r} (an earlier value would be silently dropped)",
                                  file=file, line=knode.start_mark.line + 1, key=_dotted(path + (key,)))
            out[key] = _walk(vnode, file, path + (key,), lines)
            lines[path + (key,)] = (file, knode.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(v, file, path + (i,), lines) for i, v in enumerate(node.value)]
    return _scalar(node, file)


def _scalar(node: yaml.Node, file: str) -> Any:
    loader = _Loader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read value: {exc.problem or exc}", file=file,
                          line=node.start_mark.line + 1) from None


def read_yaml(text: str, file: str) -> tuple[Any, dict[KeyPath, Origin]]:
    """Parse YAML text; return (data, {path: (file, line)})."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"YAML syntax error: {exc.problem}", file=file,
                          line=mark.line + 1 if mark else None) from None
    lines: dict[KeyPath, Origin] = {}
    if node is None:
        return {}, lines
    return _walk(node, file, (), lines), lines


def _dotted(path: KeyPath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _merge(base: Any, over: Any) -> Any:
    """Deep-merge mappings; anything else in ``over`` replaces ``base``. Inputs are not mutated."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


# --------------------------------------------------------------------------- schema

class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)   # .nan / .inf are refused


class TrainSpec(_Strict):
    """Optimisation settings of one run (shared by every arm unless an arm overrides a key).
    The defaults are the paper's setup; this is their only home (ablations/_base.yaml
    does not restate them).  Frozen: vary a run with ``RunSpec.replace(train={...})``."""
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    steps: int = pydantic.Field(20000, ge=1)
    batch_size: int = pydantic.Field(128, ge=1)
    lr: float = pydantic.Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    grad_clip: float | None = pydantic.Field(None, gt=0)
    log_every: int = pydantic.Field(100, ge=1)
    ckpt_every: int = pydantic.Field(1000, ge=1)
    val_every: int = pydantic.Field(500, ge=1)    # held-out loss + sheets in TensorBoard (bench/train/live.py)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: pydantic.StrictBool = True            # bf16 autocast, CUDA only
    channels_last: pydantic.StrictBool = True  # memory format of weights and batches (bench/train/runtime.py)
    compile: pydantic.StrictBool = False       # torch.compile the model
    # steps at which the weights are kept and scored too (a budget curve from one run; bench/train/loop.py)
    snapshots: tuple[pydantic.PositiveInt, ...] = ()

    @pydantic.field_validator("snapshots")
    @classmethod
    def _snapshots_inside_the_run(cls, snapshots: tuple[int, ...], info: pydantic.ValidationInfo) -> tuple[int, ...]:
        if list(snapshots) != sorted(set(snapshots)):
            raise ValueError(f"snapshots must be increasing steps without repeats (got {list(snapshots)})")
        steps = info.data.get("steps")
        if snapshots and steps is not None and snapshots[-1] >= steps:
            raise ValueError(f"snapshots must be steps before the last ({steps}, which is scored anyway); "
                             f"got {snapshots[-1]}")
        return snapshots


class EvalSpec(_Strict):
    """What the scoring pass measures on a finished run (frozen, like TrainSpec)."""
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    n_test: int | None = pydantic.Field(10000, ge=1)   # test images scored (None = all)
    n_samples: int = pydantic.Field(10000, ge=16)      # prior samples scored
    batch_size: int = pydantic.Field(250, ge=1)
    sheet: int = pydantic.Field(64, ge=4)              # images per PNG sheet
    fidelity: pydantic.StrictBool = True               # FID/KID/LPIPS (pretrained networks)
    n_fid: int | None = pydantic.Field(None, ge=2)     # cap on images for FID/KID/LPIPS (None = all scored)
    kid_subset: int | None = pydantic.Field(None, ge=2)  # KID subset size (None: n_fid // 2, at most 1000)
    fid_recon: pydantic.StrictBool = True              # also FID of reconstructions vs their originals
    # Score every arm on the held-out images of these classes (e.g. [horse, bird] for C10, so the
    # full-data arm and the horse+bird arm meet on the same images); None = the run's own test set.
    classes: list[str] | None = None
    # Latent interpolation metrics between two classes of a labelled dataset (C11), e.g. [horse, bird]:
    # hybrid score, path length and midpoint realism vs the pixel cross-fade (bench/pegasus/evaluate.py).
    pegasus: list[str] | None = pydantic.Field(None, min_length=2, max_length=2)


class ArmSpec(_Strict):
    data: dict[str, Any] = {}      # dataset keys for this arm, e.g. {classes: [horse, bird]} (C10)
    swept: dict[str, Any] = {}     # set by the grid block (bench/config/grid.py): {dotted key: value}
    model: dict[str, Any] = {}
    loss: list[dict[str, Any]] | None = None
    train: dict[str, Any] = {}
    eval: dict[str, Any] = {}


class DefaultsSpec(_Strict):
    model: dict[str, Any] = {"name": "conv"}
    loss: list[dict[str, Any]] = [{"name": "kl"}, {"name": "mse"}]
    train: dict[str, Any] = {}
    eval: dict[str, Any] = {}


class AblationSpec(_Strict):
    name: str = pydantic.Field(pattern=NAME_RE)
    question: str
    claims: list[Literal[tuple(CLAIM_IDS)]] = []  # type: ignore[valid-type]
    base: str | None = None
    datasets: list[str] = pydantic.Field(min_length=1)
    seeds: list[int] = pydantic.Field(min_length=1)
    baseline: str | None = None
    data: dict[str, dict[str, Any]] = {}
    defaults: DefaultsSpec = DefaultsSpec()
    arms: dict[str, ArmSpec] = pydantic.Field(min_length=1)
    # filled by load(): where the file came from and the --set overrides, for reproduce lines
    source: str = ""
    overrides: list[str] = []

    def baseline_arm(self) -> str:
        return self.baseline or next(iter(self.arms))


@dataclass(frozen=True)
class RunSpec:
    """One fully resolved training run: typed parts, validated once by :func:`expand`."""
    ablation: str
    arm: str
    dataset: str
    seed: int
    model: dict[str, Any]          # {"name": ..., **bound args incl. image_size} (the model registry's signature)
    loss: tuple[LossEntry, ...]
    train: TrainSpec
    eval: EvalSpec
    data: data_mod.DataSpec        # source arguments completed with their defaults
    hash8: str = field(default="")
    swept: dict[str, Any] = field(default_factory=dict)   # grid values of this arm (bench/config/grid.py)

    @property
    def rel_dir(self) -> Path:
        return Path(self.ablation) / self.arm / self.dataset / f"s{self.seed}-{self.hash8}"

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with some parts changed (``train`` / ``eval`` may be given as a dict of changed keys)."""
        for key, spec in (("train", self.train), ("eval", self.eval)):
            if isinstance(changes.get(key), dict):
                changes[key] = spec.model_copy(update=changes[key])
        return dataclasses.replace(self, **changes)

    def resolved(self) -> dict[str, Any]:
        """Plain data (config.yaml, metrics.json, the run hash); :meth:`from_resolved` reads it back."""
        return {"ablation": self.ablation, "arm": self.arm, "dataset": self.dataset, "seed": self.seed,
                "hash8": self.hash8, "model": self.model, "loss": [e.as_dict() for e in self.loss],
                "train": self.train.model_dump(), "eval": self.eval.model_dump(),
                "data": self.data.model_dump(), **({"swept": self.swept} if self.swept else {})}

    @classmethod
    def from_resolved(cls, doc: dict[str, Any]) -> RunSpec:
        return cls(doc["ablation"], doc["arm"], doc["dataset"], doc["seed"], dict(doc["model"]),
                   parse_loss(doc["loss"]), TrainSpec(**doc["train"]), EvalSpec(**doc["eval"]),
                   data_mod.DataSpec(**doc["data"]), doc.get("hash8", ""), dict(doc.get("swept") or {}))


# --------------------------------------------------------------------------- loading

_PATH_KEYS = {"root", "path"}


class _Lines:
    """Maps dotted error keys back to the file and line that set them."""

    def __init__(self, lines: dict[KeyPath, Origin], file: str):
        self.lines, self.file = lines, file

    def error(self, msg: str, *candidates: KeyPath) -> ConfigError:
        """Blame the candidate path that the files set most specifically (the first one on ties)."""
        best, best_n, best_rank = None, 0, (-1, -1)
        for cand in candidates:
            n = next((n for n in range(len(cand), 0, -1) if cand[:n] in self.lines), 0)
            rank = (2 if n == len(cand) else 1 if n == len(cand) - 1 else 0, n)  # the key > its parent > deeper
            if n and rank > best_rank:
                best, best_n, best_rank = cand, n, rank
        if best is None:
            return ConfigError(msg, file=self.file, key=_dotted(candidates[0]) if candidates else None)
        f, line = self.lines[best[:best_n]]
        return ConfigError(msg, file=f, line=line or None, key=_dotted(best))


def _read_file(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict[KeyPath, Origin]]:
    """Read one file and its ``base:`` chain; return merged data and line origins."""
    shown = _show(path)
    if path in seen:
        raise ConfigError("circular base: " + " -> ".join(_show(p) for p in seen + (path,)), file=shown)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", file=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=shown) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a UTF-8 text file (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                          "an ablation file is YAML text", file=shown) from None
    if not text.strip():
        raise ConfigError("empty file: an ablation file needs name:, question:, datasets:, seeds: and arms:",
                          file=shown)
    if "\x00" in text:
        raise ConfigError("contains NUL bytes: a binary file, not YAML text", file=shown) from None
    data, lines = read_yaml(text, shown)
    if not isinstance(data, dict):
        raise ConfigError("an ablation file must be a mapping (name:, datasets:, arms: ...)", file=shown, line=1)
    base = data.get("base")
    if base is None:
        return data, lines
    if not isinstance(base, str):
        raise ConfigError("must be a file path", file=shown, line=lines[("base",)][1], key="base")
    base_path = (path.parent / base).resolve()
    if not base_path.exists():
        raise ConfigError(f"base file not found: {_show(base_path)}", file=shown, line=lines[("base",)][1],
                          key="base")
    bdata, blines = _read_file(base_path, seen + (path,))
    bdata.pop("base", None)
    blines = {k: v for k, v in blines.items() if k[:1] != ("base",)}
    return _merge(bdata, data), {**blines, **lines}


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _set_path(data: dict, path: KeyPath, value: Any) -> None:
    cur: Any = data
    for p in path[:-1]:
        if isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
            continue
        if not isinstance(cur, dict):
            raise ConfigError("cannot set a key inside a non-mapping value", file="--set", key=_dotted(path))
        cur = cur.setdefault(p, {})
    if (isinstance(cur, list) and isinstance(path[-1], int) and path[-1] < len(cur)) or isinstance(cur, dict):
        cur[path[-1]] = value
    else:
        raise ConfigError("cannot set a key inside a non-mapping value", file="--set", key=_dotted(path))


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """``train.steps=300`` -> (("train", "steps"), 300); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"expected KEY=VALUE, got {text!r}", file="--set")
    key, raw = text.split("=", 1)
    if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+", key):
        raise ConfigError(f"bad key {key!r}", file="--set")
    path: list[Any] = []
    for part in key.split("."):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
        if not m:
            raise ConfigError(f"bad key {key!r}", file="--set")
        path.append(m.group(1))
        path += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    value, _ = read_yaml(raw, f"--set {text}")
    return tuple(path), value


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AblationSpec:
    """Read, merge, override and validate an ablation file. Raises ConfigError; writes nothing."""
    path = Path(path)
    data, lines = _read_file(path.resolve() if path.exists() else path)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, key, value)
        lines[key] = (f"--set {text}", 0)
    shown = _show(path)
    data.pop("base", None)
    where = _Lines(lines, shown)
    grid.expand(data, lines, where.error)             # arms x grid values, before validation
    try:
        spec = AblationSpec(**data, source=shown, overrides=list(overrides))
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(str(loc[-1]), _fields_at(loc))
        elif err["type"] == "missing":
            msg = "required key is missing"
        raise where.error(msg, loc) from None
    _check(spec, where)
    return spec


def _fields_at(loc: KeyPath) -> list[str]:
    model: Any = AblationSpec
    for p in loc[:-1]:
        ann = getattr(model, "model_fields", {}).get(p)
        if ann is None:
            if p in ("arms",):
                model = ArmSpec
            continue
        model = ann.annotation
        if p == "arms":
            model = ArmSpec
    return list(getattr(model, "model_fields", {}))


def _did_you_mean(word: str, options: list[str]) -> str:
    import difflib
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; allowed: {', '.join(options)}" if options else ""


def _check(spec: AblationSpec, where: _Lines) -> None:
    """Everything that can be checked without touching data or training: names, args, types."""
    if spec.baseline is not None and spec.baseline not in spec.arms:
        raise where.error(f"unknown arm {spec.baseline!r}" + _did_you_mean(spec.baseline, list(spec.arms)),
                          ("baseline",))
    for name in spec.arms:
        if not re.fullmatch(NAME_RE, name):
            raise where.error("arm names may use letters, digits, '_', '.', '-'", ("arms", name))
    if len(set(spec.seeds)) != len(spec.seeds):
        raise where.error("seeds repeat", ("seeds",))
    known = {**data_mod.DEFAULT_DATASETS, **spec.data}
    for i, ds in enumerate(spec.datasets):
        if ds not in known:
            raise where.error(f"unknown dataset {ds!r}" + _did_you_mean(ds, sorted(known))
                              + " (define it under data:)", ("datasets", i))
    if len(set(spec.datasets)) != len(spec.datasets):
        raise where.error("datasets repeat", ("datasets",))
    for ds in spec.datasets:
        for arm in [None, *spec.arms]:
            try:
                dataset_spec(spec, ds, arm)
            except ConfigError as exc:
                key = _split(exc.key)
                raise where.error(exc.message, *((("arms", arm, "data") + key,) if arm else ()),
                                  ("data", ds) + key) from None
    try:
        expand(spec)
    except _RunError as exc:
        raise where.error(exc.message, *exc.candidates) from None


def _split(key: str | None) -> KeyPath:
    if not key:
        return ()
    out: list[Any] = []
    for part in key.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if m and m.group(1):
            out.append(int(m.group(1)) if m.group(1).isdigit() else m.group(1))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2) if m else "")]
    return tuple(out)


def dataset_spec(spec: AblationSpec, name: str, arm: str | None = None):
    """The DataSpec for a dataset name: built-in definition < the file's ``data.<name>`` < the arm's ``data``."""
    raw = _merge(data_mod.DEFAULT_DATASETS.get(name, {}), spec.data.get(name, {}))
    if arm is not None:
        raw = _merge(raw, spec.arms[arm].data)
    try:
        ds = data_mod.DataSpec(**raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(err["msg"] if err["type"] != "missing" else "required key is missing",
                          key=".".join(str(p) for p in err["loc"])) from None
    ds.check()
    return ds


class _RunError(Exception):
    def __init__(self, message: str, *candidates: KeyPath):
        super().__init__(message)
        self.message, self.candidates = message, candidates


def _prefixed(*prefixes: tuple) -> Callable[[tuple], tuple[tuple, ...]]:
    """key -> the same key under each prefix (the candidate places a bad value may come from)."""
    return lambda key: tuple(p + key for p in prefixes)


def expand(spec: AblationSpec) -> list[RunSpec]:
    """arms x datasets x seeds -> fully resolved RunSpecs (models and losses bound and type-checked)."""
    runs: list[RunSpec] = []
    for arm_name, arm in spec.arms.items():
        for ds_name in spec.datasets:
            ds = dataset_spec(spec, ds_name, arm_name)
            # model: dataset defaults < defaults.model < arm.model
            model_raw = _merge(_merge(ds.model, spec.defaults.model), arm.model)
            cand_model = _prefixed(("arms", arm_name, "model"), ("defaults", "model"), ("data", ds_name, "model"))
            mname = model_raw.pop("name", None)
            if mname is None:
                raise _RunError("model name is missing", ("defaults", "model", "name"))
            try:
                margs = MODELS.bind(mname, {**model_raw, "image_size": ds.resolution})
            except ConfigError as exc:
                key = () if exc.message.startswith("unknown model") else _split(exc.key)
                if not key:
                    key = ("name",)
                raise _RunError(exc.message, *cand_model(key)) from None
            # loss: defaults.loss, or the arm's list wholesale
            loss_from = ("arms", arm_name, "loss") if arm.loss is not None else ("defaults", "loss")
            try:
                losses = parse_loss(arm.loss if arm.loss is not None else spec.defaults.loss)
            except ConfigError as exc:
                raise _RunError(exc.message, loss_from + _split(exc.key)[1:]) from None
            train = _validate(TrainSpec, _merge(spec.defaults.train, arm.train),
                              _prefixed(("arms", arm_name, "train"), ("defaults", "train")))
            eval_keys = _prefixed(("arms", arm_name, "eval"), ("defaults", "eval"))
            ev = _validate(EvalSpec, _merge(spec.defaults.eval, arm.eval), eval_keys)
            if ev.pegasus is not None:
                _check_eval_classes(ev.pegasus, ds, eval_keys, key="pegasus")
            if ev.classes is not None:
                _check_eval_classes(ev.classes, ds, eval_keys)
            data = data_mod.DataSpec(**{**ds.model_dump(), **ds.source_args()})   # source args completed
            for seed in spec.seeds:
                run = RunSpec(spec.name, arm_name, ds_name, seed, {"name": mname, **margs}, losses,
                              train, ev, data, swept=dict(arm.swept))
                runs.append(run.replace(hash8=run_hash(run)))
    return runs


def _check_eval_classes(classes: list[str], ds, candidates, key: str = "classes") -> None:
    """eval.classes / eval.pegasus must name distinct classes the dataset knows (for eval.classes
    on a class-subset arm: inside its subset; the pegasus walk uses the held-out split's classes)."""
    if not classes or len(set(classes)) != len(classes):
        raise _RunError("must name distinct classes (or be omitted)", *candidates((key,)))
    try:
        if ds.source in data_mod.KNOWN_CLASSES:
            data_mod._check_classes(classes, data_mod.KNOWN_CLASSES[ds.source])
        if ds.classes is not None and key == "classes":
            data_mod._check_classes(classes, ds.classes)
    except ConfigError as exc:
        raise _RunError(exc.message, *candidates((key,))) from None


def _validate(model: type[_Strict], raw: dict, candidates) -> Any:
    try:
        return model(**raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(str(loc[-1]), list(model.model_fields))
        raise _RunError(msg, *candidates(loc)) from None


# Train settings that do not change the trained weights: where the run happens, how often it
# logs/checkpoints and which steps it keeps as snapshots.  Neither they nor ``eval`` are part of a
# run's identity, so moving a run to another device or re-scoring it with another protocol never
# retrains it.
_NOT_IDENTITY = {"device", "log_every", "ckpt_every", "val_every", "snapshots"}


# --set keys that say where things are or run, not what the experiment is
_LOCATION_KEY = re.compile(r"^(data\.[^.]+\.(root|path|download)|(defaults|arms\.[^.]+)\.train\.device)$")


def experiment_overrides(overrides: list[str]) -> list[str]:
    """The --set overrides that change the experiment (anything but data locations and the device)."""
    return [o for o in overrides if not _LOCATION_KEY.match(o.split("=", 1)[0].strip())]


def results_name(spec: AblationSpec) -> tuple[str, bool]:
    """(results folder name, as_written): overrides that change the experiment write a trial folder
    ``<name>~trial-<hash6>`` so a throwaway run never replaces the committed results."""
    changed = experiment_overrides(spec.overrides)
    if not changed:
        return spec.name, True
    digest = hashlib.sha256("\n".join(sorted(changed)).encode()).hexdigest()[:6]
    return f"{spec.name}~trial-{digest}", False


def run_hash(run: RunSpec) -> str:
    """sha256 of what changes the trained weights: model, loss, data (minus paths), train settings
    (minus ``_NOT_IDENTITY``); not the seed (it is in the directory name), not ``eval``."""
    doc = run.resolved()
    data = {k: v for k, v in doc["data"].items() if k not in _PATH_KEYS}
    train = {k: v for k, v in doc["train"].items() if k not in _NOT_IDENTITY}
    payload = {"model": doc["model"], "loss": doc["loss"], "train": train, "data": data}
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


__all__ = [
    "AblationSpec",
    "BenchError",
    "EvalSpec",
    "RunSpec",
    "TrainSpec",
    "dataset_spec",
    "expand",
    "load",
    "parse_override",
    "read_yaml",
]
