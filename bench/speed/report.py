"""``results/speed/``: the peers benchmarks' records as tables (``python -m bench speed FILE...``).

``pytest --benchmark -k peers --benchmark-json=FILE`` (tests/test_peer_benchmarks.py) keeps what each
benchmark measured in its ``extra_info``: images/s of every variant round by round, the matmul peak
of every round, the round-by-round ratios with their intervals, the step's anatomy.  The ratio
records, the MFU records and the targets are built here (:func:`ratio_info`, :func:`mfu_info`,
:data:`RATIO_TARGETS`, :data:`MFU_TARGET`, :data:`TRAIN_BATCH`), so the benchmark that writes them and
this report that reads them cannot drift apart.  :func:`write` checks that the files come from one
clean commit (a results folder never mixes commits), copies them into the folder and writes its
README.md from them alone.
"""
from __future__ import annotations

import json
import math
import shlex
import statistics
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from bench import store
from bench.config.schema import TrainSpec
from bench.errors import BenchError
from bench.metrics import cost

FOLDER = "speed"                            # results/speed/, listed in results/README.md when present
MFU_TARGET = {32: 0.55, 96: 0.60}           # the targets for the paper model on a CPU, by image size
RATIO_TARGETS = {"trainer_vs_best_plain": 1.0, "trainer_vs_pythae": 1.5}
TRAIN_BATCH = TrainSpec().batch_size   # the batch the suite trains with at paper scale (128): the MFU
                                       # target is checked there too (the issue allows the batch as a choice)
IPS, BY_ROUND = "_images_per_s", "_by_round"
TESTS = {"vs": "test_peers_trainer_vs_plain_loop_vs_pythae", "batch": "test_peers_trainer_batch_scaling",
         "anatomy": "test_peers_trainer_step_anatomy"}
LABELS = {"trainer": "trainer", "trainer_nchw": "trainer NCHW", "trainer_compile": "compiled",
          "trainer_torch_defaults": "trainer, torch defaults (before)", "plain": "plain NCHW",
          "plain_cl": "plain channels_last", "plain_cl_kept": "plain cl, kept memory", "pythae": "pythae"}
MATMULS = "matmuls"   # the anatomy's conv and linear passes as plain matmuls of their shapes (cost.matmul_passes)
STEP_WITH_MATMULS = "step_with_matmuls"     # the step with those in place of its conv and linear passes
BEFORE = "trainer_torch_defaults"          # the trainer without the suite's CPU settings


def ratio_info(name: str, a: list[float], b: list[float], target: float) -> dict:
    """``name`` (the round-by-round median of a / b), its distribution-free interval and that
    interval's confidence, whether the median meets ``target``, and whether this one run decides
    that (the interval on one side of it; never with too few rounds for an interval)."""
    r = cost.paired_ratio(a, b)
    return {name: round(r.median, 3), f"{name}_interval": [round(r.lo, 3), round(r.hi, 3)],
            f"{name}_interval_confidence": round(r.coverage, 3), f"{name}_target_met": r.median >= target,
            f"{name}_decided_by_this_run": r.lo >= target or r.hi < target}


def mfu_info(name: str, ips_by_round: Sequence[float], train_flops: float, peak: float, peaks: Sequence[float],
             target: float) -> dict:
    """``name``'s MFU round by round.  Against ``peak`` (the highest measured) in every round: the
    median ``{name}_mfu`` (the MFU of the median images/s), its interval, whether it meets ``target``
    and whether this run decides that, as :func:`ratio_info` (the interval spans the rounds' images/s,
    the peak is fixed).  Against each round's own peak (the machine's speed in that round), shown and
    never judged: ``{name}_mfu_own_peak`` and its interval; when a round's peak is too low for that
    (an MFU above 1), the reason instead."""
    done = [cost.mfu(train_flops, x, 1.0) for x in ips_by_round]       # FLOP/s the step did, by round
    info = ratio_info(f"{name}_mfu", done, [peak] * len(done), target)
    lo, hi = info[f"{name}_mfu_interval"]
    _valid({f"{name}_mfu": info[f"{name}_mfu"], "its interval's low end": lo, "its interval's high end": hi})
    if len(peaks) == len(done):
        own = [d / p for d, p in zip(done, peaks)]
        if max(own) <= 1:
            r = cost.paired_ratio(done, list(peaks))
            info.update({f"{name}_mfu_own_peak": round(r.median, 3),
                         f"{name}_mfu_own_peak_interval": [round(r.lo, 3), round(r.hi, 3)]})
        else:
            r = own.index(max(own))
            info[f"{name}_mfu_own_peak"] = (f"not shown: round {r + 1}'s peak ({peaks[r] / 1e9:.0f} GFLOP/s) "
                                            "gives an MFU above 1")
    return info


def _valid(mfu: dict) -> dict:
    """``mfu`` unchanged; an MFU outside (0, 1] is a bug in the measurement, never a result."""
    bad = {k: v for k, v in mfu.items() if not 0 < v <= 1}
    if bad:
        raise ValueError(f"an MFU outside (0, 1] is a bug: {bad}")
    return mfu


def _flops(train_flops: float) -> dict:
    """What MFU counted: a training step's FLOPs per image, and how they were counted."""
    return {"train_flops_per_image": int(train_flops), "train_flops_method": cost.TRAIN_FLOPS_METHOD}


def _peaks(peak: float, peaks: list[float]) -> dict:
    return {"matmul_peak_gflops": round(peak / 1e9, 1),
            "matmul_peak_gflops_by_round": [round(p / 1e9, 1) for p in peaks]}


def versus_info(got: dict[str, list[float]], plain: Sequence[str], train_flops: float, peak: float,
                peaks: list[float], image_size: int) -> dict:
    """The trainer-vs-peers record: each variant's images/s (median over rounds, and every round),
    the fastest plain loop of ``plain`` by its median, the round-by-round ratios against it and
    against pythae (when measured) with their targets, MFU of ``train_flops`` per image
    (``cost.training_flops_per_image``) against ``peak`` (FLOP/s; the highest of ``peaks`` and the
    session's), and whether the trainer's MFU meets :data:`MFU_TARGET`."""
    ips = {k: statistics.median(v) for k, v in got.items()}
    best_plain = max(plain, key=ips.get)
    info = {f"{k}{IPS}": round(v, 1) for k, v in ips.items()}
    info.update({f"{k}{IPS}{BY_ROUND}": [round(x, 1) for x in v] for k, v in got.items()})
    info.update(best_plain=best_plain, rounds=len(got["trainer"]))
    others = {"trainer_vs_best_plain": best_plain, "trainer_vs_pythae": "pythae"}
    for name, other in others.items():
        if other in got:
            info.update(ratio_info(name, got["trainer"], got[other], RATIO_TARGETS[name]))
    mfu = _valid({k: cost.mfu(train_flops, v, peak) for k, v in ips.items()})
    info.update({f"{k}_mfu": round(v, 3) for k, v in mfu.items()})
    info.update(mfu_info("trainer", got["trainer"], train_flops, peak, peaks, MFU_TARGET[image_size]))
    info.update(_peaks(peak, peaks) | _flops(train_flops))
    info["mfu_target"] = MFU_TARGET[image_size]
    return info


def batch_info(got: dict[int, list[float]], train_flops: float, peak: float, peaks: list[float],
               image_size: int) -> dict:
    """The batch-scaling record: the trainer's images/s (median over rounds) and MFU by batch size,
    each MFU round by round (:func:`mfu_info`) against :data:`MFU_TARGET`, which is checked at
    :data:`TRAIN_BATCH`."""
    ips = {b: statistics.median(v) for b, v in got.items()}
    info = {f"batch{b}{IPS}": round(v, 1) for b, v in ips.items()}
    info.update({f"batch{b}{IPS}{BY_ROUND}": [round(x, 1) for x in v] for b, v in got.items()})
    for b, v in got.items():
        info.update(mfu_info(f"batch{b}", v, train_flops, peak, peaks, MFU_TARGET[image_size]))
    info.update(mfu_target=MFU_TARGET[image_size], train_batch=TRAIN_BATCH)
    return info | _peaks(peak, peaks) | _flops(train_flops) | {"rounds": len(next(iter(got.values())))}


def anatomy_info(by_round: dict[str, list[float]], parts: Sequence[str], by_pass: dict[str, list],
                 train_flops: float, batch: int, peak: float, peaks: list[float], image_size: int) -> dict:
    """The step-anatomy record from seconds per call round by round (``by_round``: the whole
    ``step`` and each of ``parts``) and each pass alone (``by_pass``: part -> [[name, seconds]]):
    ms per step of each, the rest (loss, optimiser, glue: a difference of medians, so it can come out
    below 0), each part's round-by-round share of the step, the step's MFU, and the MFU ceiling, the
    MFU of a step that did nothing but its ``parts[0]`` passes (the conv and linear layers).  Where
    ``by_round`` has :data:`MATMULS` (those passes' arithmetic as plain matmuls of their shapes, not
    a part of the step), their MFU alone, and the step with them in place of ``parts[0]``: what the
    step would take if its conv and linear passes ran as fast as the BLAS does their products."""
    ms = {k: 1e3 * statistics.median(v) for k, v in by_round.items()}
    ms["other"] = ms["step"] - sum(ms[p] for p in parts)
    if MATMULS in ms:
        ms[STEP_WITH_MATMULS] = ms["step"] - ms[parts[0]] + ms[MATMULS]
    mfu = _valid({k: cost.mfu(train_flops, batch / (ms[t] / 1e3), peak)
                  for k, t in [("step", "step"), ("ceiling", parts[0]), (MATMULS, MATMULS),
                               (STEP_WITH_MATMULS, STEP_WITH_MATMULS)] if t in ms})
    info = {f"{k}_ms": round(v, 1) for k, v in ms.items()} | {"rounds": len(by_round["step"])}
    info.update({f"{k}_ms{BY_ROUND}": [round(1e3 * x, 1) for x in v] for k, v in by_round.items()})
    for part in parts:
        r = cost.paired_ratio(by_round[part], by_round["step"])
        info.update({f"{part}_share": round(r.median, 3), f"{part}_share_interval": [round(r.lo, 3), round(r.hi, 3)]})
    info.update({"step_mfu": round(mfu["step"], 3), "mfu_ceiling": round(mfu["ceiling"], 3),
                 f"{parts[0]}_gflops": round(mfu["ceiling"] * peak / 1e9, 1),     # the step's FLOPs in their time
                 "mfu_target": MFU_TARGET[image_size],
                 "mfu_target_within_ceiling": mfu["ceiling"] >= MFU_TARGET[image_size]} | _peaks(peak, peaks)
                | _flops(train_flops))
    if MATMULS in mfu:
        info.update({f"mfu_{MATMULS}": round(mfu[MATMULS], 3), f"{MATMULS}_gflops": round(mfu[MATMULS] * peak / 1e9, 1),
                     f"mfu_{STEP_WITH_MATMULS}": round(mfu[STEP_WITH_MATMULS], 3),
                     f"mfu_target_within_{STEP_WITH_MATMULS}": mfu[STEP_WITH_MATMULS] >= MFU_TARGET[image_size]})
    info.update({f"{part}_ms_by_pass": {n: round(1e3 * t, 2) for n, t in ps} for part, ps in by_pass.items()})
    return info


class Bench(NamedTuple):
    file: str                   # the record it came from
    test: str                   # its test function, e.g. TESTS["vs"]
    size: int                   # image size (px)
    batch: int | None           # None for the batch-scaling benchmark
    info: dict[str, Any]        # its extra_info


class Record(NamedTuple):
    commit: str
    files: list[Path]
    raw: list[bytes]            # each file as read
    saved: list[str]            # each file's own timestamp (when pytest-benchmark wrote it)
    machine: str                # CPU and core count, as pytest-benchmark recorded them
    benches: list[Bench]


def _read(path: Path) -> tuple[dict, bytes]:
    """A record's document and its bytes (read once: the copy in the folder is what was rendered)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise BenchError(f"{path}: not a pytest-benchmark record (no 'benchmarks' list); "
                         "write one with pytest --benchmark -k peers --benchmark-json=FILE")
    return doc, raw


def _benches(path: Path, doc: dict) -> list[Bench]:
    out = []
    for i, b in enumerate(doc["benchmarks"]):
        test = str(b.get("name", "")).partition("[")[0]
        if test not in TESTS.values():
            continue
        params, info = b.get("params") or {}, b.get("extra_info") or {}
        if "image_size" not in params or ("rounds" not in info):
            raise BenchError(f"{path}: benchmarks[{i}] ({b.get('name')}): no image_size parameter or no "
                             "'rounds' in extra_info (an unfinished or older benchmark)")
        out.append(Bench(str(path.name), test, int(params["image_size"]), params.get("batch"), info))
    if not out:
        raise BenchError(f"{path}: no peers benchmark in it; write one with "
                         "pytest --benchmark -k peers --benchmark-json=FILE")
    return out


def load(paths: Sequence[Path]) -> Record:
    """The peers benchmarks of ``paths``, which must all come from one commit with no uncommitted changes."""
    commit, raw, saved, benches, seen, machine = None, [], [], [], {}, ""
    for path in map(Path, paths):
        doc, data = _read(path)
        raw.append(data)
        cpu = (doc.get("machine_info") or {}).get("cpu") or {}
        machine = machine or f"{cpu.get('brand_raw', 'unknown CPU')}, {cpu.get('count', '?')} cores"
        ci = doc.get("commit_info") or {}
        if not ci.get("id") or ci["id"] == "unversioned" or "error" in ci:
            raise BenchError(f"{path}: no commit recorded (commit_info.id); record it from a git checkout")
        if ci.get("dirty"):
            raise BenchError(f"{path}: recorded at {ci['id'][:7]} with uncommitted changes; "
                             "a results folder comes from one clean commit")
        if commit and ci["id"] != commit[0]:
            raise BenchError(f"{path}: commit {ci['id'][:7]}, but {commit[1]} is {commit[0][:7]}; "
                             "a results folder comes from one clean commit")
        commit = commit or (ci["id"], path.name)
        for b in _benches(path, doc):
            key = (b.test, b.size, b.batch)
            if key in seen:
                raise BenchError(f"{path}: {b.test}[{b.size}] is also in {seen[key]}; give each benchmark once")
            seen[key] = path.name
            benches.append(b)
        saved.append(str(doc.get("datetime", "")))
    return Record(commit[0], [Path(p) for p in paths], raw, saved, machine, benches)


def _ips(v: float) -> str:
    """Images/s as the tables print them."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "--:" for i in range(len(head))]
    return [_row(head), _row(align), *map(_row, rows)]


def _where(b: Bench) -> str:
    return f"{b.size} px" + (f", batch {b.batch}" if b.batch else "")


def _variants(benches: list[Bench]) -> list[str]:
    """Every variant measured or skipped, in the benchmark's order."""
    found = [k[:-len(IPS)] for b in benches for k in b.info if k.endswith(IPS)]
    found += [k for b in benches for k, v in b.info.items() if isinstance(v, str) and v.startswith("skipped:")]
    return list(dict.fromkeys(found))


def _verdict(info: dict, name: str) -> str:
    met, decided = info[f"{name}_target_met"], info[f"{name}_decided_by_this_run"]
    word = "met" if met else "missed"
    return word if decided else f"{word} by the median, undecided"


def _ratio_cell(info: dict, name: str) -> str:
    if name not in info:
        return "not measured"
    lo, hi = info[f"{name}_interval"]
    return f"{info[name]:.3f} ({lo:.3f}-{hi:.3f}, {info[name + '_interval_confidence']:.1%}): {_verdict(info, name)}"


def _own_peak(info: dict, name: str, digits: int) -> str:
    """``name``'s MFU against each round's own peak with its interval, or why it is not shown."""
    own = info.get(f"{name}_mfu_own_peak", "not recorded")
    if not isinstance(own, float):
        return own
    lo, hi = info[f"{name}_mfu_own_peak_interval"]
    return f"{own:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _mfu_cell(info: dict, name: str) -> str:
    """An MFU against the highest peak with its verdict, and against each round's own peak (no verdict);
    a record made before MFU had an interval shows the median and a plain verdict."""
    if f"{name}_mfu_interval" not in info:
        return f"{info[name + '_mfu']:.3f}: {'met' if info[name + '_mfu_target_met'] else 'missed'}"
    return f"{_ratio_cell(info, name + '_mfu')}; against each round's own peak {_own_peak(info, name, 3)}, no verdict"


def _versus(benches: list[Bench], batches: Sequence[Bench] = ()) -> list[str]:
    """Images/s (MFU) of every variant, then the targets, for the trainer-vs-peers benchmarks (and the
    MFU target at :data:`TRAIN_BATCH` from the batch-size benchmarks ``batches``, when given)."""
    names = _variants(benches)
    rows = [[_where(b)] + [f"{_ips(b.info[v + IPS])} ({b.info[v + '_mfu']:.2f})" if v + IPS in b.info
                           else "skipped" for v in names] for b in benches]
    out = ["## Images/s (MFU) of one training step", "",
           *_table(["images/s (MFU)", *(LABELS.get(v, v) for v in names)], rows), ""]
    out += [f"- {_where(b)}: {b.info['rounds']} rounds; matmul peak {b.info['matmul_peak_gflops']:.1f} GFLOP/s "
            f"(by round: {', '.join(f'{p:.0f}' for p in b.info['matmul_peak_gflops_by_round'])})" for b in benches]
    out += [f"- {v}: {b.info[v]}" for b in benches for v in names if v + IPS not in b.info and v in b.info]
    head = ["target (round by round: median, interval, confidence)", *(_where(b) for b in benches)]
    rows = [["trainer / best plain loop >= 1.0",
             *(f"{_ratio_cell(b.info, 'trainer_vs_best_plain')} (against {LABELS.get(b.info['best_plain'])})"
               for b in benches)],
            ["trainer / pythae >= 1.5", *(_ratio_cell(b.info, "trainer_vs_pythae") for b in benches)],
            ["trainer MFU >= " + " / ".join(f"{b.info.get('mfu_target', MFU_TARGET.get(b.size, math.nan)):.2f}"
                                            for b in benches) + " (at each column's batch)",
             *(_mfu_cell(b.info, "trainer") for b in benches)]]
    if batches:
        by_size = {b.size: b.info for b in batches}
        rows.append([f"trainer MFU at the suite's training batch ({TRAIN_BATCH}), batch-size benchmark",
                     *(_mfu_cell(by_size[b.size], f"batch{TRAIN_BATCH}")
                       if f"batch{TRAIN_BATCH}_mfu_target_met" in by_size.get(b.size, {}) else "not measured"
                       for b in benches)])
    before = [cost.paired_ratio(b.info["trainer" + IPS + BY_ROUND], b.info[BEFORE + IPS + BY_ROUND])
              if BEFORE + IPS in b.info else None for b in benches]
    rows.append(["after / before: trainer / trainer with torch defaults (no target)",
                 *(f"{r.median:.3f} ({r.lo:.3f}-{r.hi:.3f})" if r else "not measured" for r in before)])
    return out + ["", "## Targets", "", *_table(head, rows, right_from=len(head)), ""]


def _against_target(i: dict, key: str, within: str) -> str:
    return f"{i[key]:.2f} (target {i['mfu_target']:.2f}{' within' if i[within] else ' beyond'} it)"


def _anatomy(benches: list[Bench]) -> list[str]:
    def as_matmuls(i: dict) -> list[str]:
        if f"mfu_{MATMULS}" not in i:
            return ["not measured", "not measured"]
        return [f"{i[MATMULS + '_ms']:.1f} ({i[MATMULS + '_gflops']:.0f} GFLOP/s, MFU {i['mfu_' + MATMULS]:.2f})",
                f"{i[STEP_WITH_MATMULS + '_ms']:.1f}, MFU "
                + _against_target(i, f"mfu_{STEP_WITH_MATMULS}", f"mfu_target_within_{STEP_WITH_MATMULS}")]
    rows = [[_where(b), f"{i['step_ms']:.1f}", f"{i['conv_linear_ms']:.1f} ({i['conv_linear_gflops']:.0f} GFLOP/s)",
             f"{i['bn_leakyrelu_ms']:.1f}", f"{i['other_ms']:.1f}",
             f"{i['conv_linear_share']:.2f} ({i['conv_linear_share_interval'][0]:.2f}-"
             f"{i['conv_linear_share_interval'][1]:.2f})", f"{i['step_mfu']:.2f}",
             _against_target(i, "mfu_ceiling", "mfu_target_within_ceiling"), *as_matmuls(i),
             f"{i['matmul_peak_gflops']:.0f}"]
            for b in benches for i in [b.info]]
    head = ["ms per step", "whole step", "conv + linear passes", "BN + LeakyReLU", "rest",
            "share of conv + linear", "MFU", "MFU ceiling", "conv + linear as plain matmuls",
            "step with those instead", "matmul peak (GFLOP/s)"]
    out = ["## Where a step goes", "", *_table(head, rows), "",
           "MFU ceiling: the MFU of a step that did nothing but its conv and linear passes, each at the speed "
           "it runs alone. Conv + linear as plain matmuls: the same passes' arithmetic as one matmul per "
           "product, each of the shape the pass multiplies and in its fastest operand layout, on this device's "
           "BLAS, with no im2col, col2im or copies (`bench.metrics.cost.matmul_passes`), timed in the same "
           "rounds; the step with those instead is the whole step less the passes plus the matmuls (a sum of "
           "medians). It is not a bound: a direct convolution kernel can beat the matmul of its im2col shape.", "",
           "Slowest passes, each alone (ms, forward + backward):", ""]
    for b in benches:
        passes = {**b.info.get("conv_linear_ms_by_pass", {}), **b.info.get("bn_leakyrelu_ms_by_pass", {})}
        top = sorted(passes.items(), key=lambda kv: -kv[1])[:6]
        out.append(f"- {_where(b)}: " + ", ".join(f"{n} {t:.1f}" for n, t in top))
    return out + [""]


def _batches(benches: list[Bench]) -> list[str]:
    def interval(i: dict, key: str) -> str:
        return f"{i[key][0]:.2f}-{i[key][1]:.2f}" if key in i else "not recorded"

    rows = [[f"{b.size} px", n[len("batch"):], _ips(v), f"{b.info[n + '_mfu']:.2f}",
             interval(b.info, f"{n}_mfu_interval"), _own_peak(b.info, n, 2), f"{b.info['matmul_peak_gflops']:.0f}"]
            for b in benches for k, v in b.info.items() if k.startswith("batch") and k.endswith(IPS)
            for n in [k[:-len(IPS)]]]
    head = ["size", "batch", "images/s", "MFU", "its interval (round by round)", "MFU against each round's own peak",
            "matmul peak (GFLOP/s)"]
    return ["## Trainer by batch size", "", *_table(head, rows, right_from=1), "",
            f"The MFU target is checked at the peers benchmark's batch and at the suite's training batch "
            f"({TRAIN_BATCH}, `train.batch_size`'s default); the other batches are shown. "
            + _highest(benches), ""]


def _highest(benches: list[Bench]) -> str:
    """The batch with the highest median MFU at each size: picked after the rounds, so it is shown, not judged
    (the largest of several noisy medians leans high)."""
    best = []
    for b in benches:
        mfu = {int(k[len("batch"):-len("_mfu")]): v for k, v in b.info.items()
               if k.startswith("batch") and k.endswith("_mfu")}
        top = max(mfu, key=mfu.get)
        best.append(f"{b.size} px {mfu[top]:.2f} at batch {top} (target {MFU_TARGET[b.size]:.2f}; "
                    f"batches {min(mfu)}-{max(mfu)})")
    return ("Highest median MFU by size, picked after the rounds and so no verdict (the largest of several "
            "noisy medians leans high): " + "; ".join(best) + ".")


def _counted(benches: list[Bench]) -> str:
    """What the records' MFU counts as a step's FLOPs, by image size."""
    flops = {b.size: b.info.get("train_flops_per_image") for b in benches}
    if None in flops.values():
        return ("MFU counts 3 x the forward FLOPs per image (these records predate the counted training "
                "FLOPs: that convention also counts the first layer's input gradient, which no step "
                "computes, 1.5% of a step at 32 px and 0.7% at 96 px for the paper model).")
    return ("MFU counts a training step's FLOPs per image, forward and backward as counted on the model: "
            + ", ".join(f"{f / 1e9:.4f} GFLOP at {s} px" for s, f in sorted(flops.items())) + ".")


def _minutes(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def render(rec: Record) -> str:
    """results/speed/README.md from the records alone."""
    by = {k: [b for b in rec.benches if b.test == t] for k, t in TESTS.items()}
    files = ", ".join(f"[{p.name}]({p.name})" for p in rec.files)
    out = ["# Training speed: the trainer beside a plain loop and pythae", "",
           f"Generated by `python -m bench speed` from the pytest-benchmark records {files}; do not edit. "
           f"Commit `{rec.commit[:12]}` (no uncommitted changes); {rec.machine}. How the benchmarks measure "
           "(interleaved rounds, one process per variant, the matmul peak, the round-by-round ratios and "
           "their sign-test intervals) is in the project README, *Training speed beside a plain loop and "
           "pythae*. One run decides a target only when its interval (of the ratio, or of the MFU round by "
           "round) lies on one side of it. MFU is against the highest matmul peak measured in the run; "
           "against each round's own peak it is shown beside it, without a verdict. " + _counted(rec.benches), ""]
    out += _versus(by["vs"], by["batch"]) if by["vs"] else []
    out += _anatomy(by["anatomy"]) if by["anatomy"] else []
    out += _batches(by["batch"]) if by["batch"] else []
    torch_v = sorted({str(b.info["torch"]) for b in rec.benches if "torch" in b.info}) or ["not recorded"]
    rows = [[b.file, f"{b.test.removeprefix('test_peers_')}[{_where(b)}]", b.info["rounds"],
             _minutes(b.info.get("wall_s")), f"`{shlex.join(b.info['pytest_args'])}`" if "pytest_args" in b.info
             else "not recorded"] for b in rec.benches]
    out += ["## Runs", "", *_table(["record", "benchmark", "rounds", "wall time", "pytest arguments"], rows, 5), "",
            f"Wall time in all: {_minutes(sum(b.info.get('wall_s', 0.0) for b in rec.benches))}; "
            f"torch {', '.join(torch_v)}; records written " + ", ".join(
                f"{p.name} {_when(t)}" for p, t in zip(rec.files, rec.saved)) + "."]
    return "\n".join(out) + "\n"


def _when(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return "at an unrecorded time"


def write(paths: Sequence[Path], out: Path) -> Path:
    """Check ``paths`` (one clean commit), copy them into ``out`` and write ``out``/README.md.
    Nothing is written when a check fails; a record already in ``out`` and not among ``paths`` is
    never dropped (that would mix or lose results): it is an error instead."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out}: not a folder")
    rec = load(paths)
    names = {p.name for p in rec.files}
    if len(names) < len(rec.files):
        raise BenchError("two records share a file name; rename one")
    stale = sorted(p.name for p in out.glob("*.json") if p.name not in names) if out.is_dir() else []
    if stale:
        raise BenchError(f"{out / stale[0]}: a record not among the files given; pass it too or move it away "
                         "(a results folder comes from one clean commit)")
    text = render(rec)
    for p, data in zip(rec.files, rec.raw):
        if p.resolve() != (out / p.name).resolve():
            store.write_bytes(out / p.name, data)
    store.write_text(out / "README.md", text)
    return out / "README.md"
