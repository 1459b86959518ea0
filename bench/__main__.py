"""Command line: ``python -m bench {run,plan,status,table,score,compare,interpolate,pegasus,speed,list,weights,data}``.

Known user errors (BenchError) become one line on stderr and exit code 2; nothing is written
before an ablation file has been fully validated.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench.errors import BenchError, WeightsError
from bench.weights import catalogue


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="ablation YAML, e.g. ablations/quick.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key after loading (repeatable), e.g. --set defaults.train.steps=300 "
                        "--set data.cifar10.root=/path/to/cifar10-jpeg")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs live (default: runs/)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="where tables go (default: results/)")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return x


def _device_list(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in devices if not (d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()))]
    if not devices or bad:
        raise argparse.ArgumentTypeError(f"expected a list like cuda:0,cuda:1 (got {text!r})")
    return devices


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="train and score every unfinished run, then write the tables")
    _add_common(p)
    p.add_argument("--dry-run", action="store_true", help="same as `plan`: validate and list runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--require", default="", metavar="fid,lpips",
                   help="fail before training unless these weight-dependent metrics can be computed")
    p.add_argument("--runner", choices=["local", "ray", "slurm"], default="local",
                   help="local: worker processes on this machine (default); ray: one Ray task per run; "
                        "slurm: one SLURM job (job-array task) per run, through submitit")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="local runner: runs at once (default 1), N worker processes (CUDA: round-robin over the "
                        "GPUs; CPU: the threads are split)")
    p.add_argument("--devices", type=_device_list, default=None, metavar="cuda:0,cuda:1",
                   help="local runner: the devices the jobs use, round-robin (default: every visible GPU)")
    _add_ray(p)
    _add_slurm(p)


def _nonnegative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return n


def _gpu_share(text: str) -> float:
    try:
        g = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= g <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a run trains on one GPU): {text}")
    return g


def _add_ray(p: argparse.ArgumentParser) -> None:
    """Options of --runner ray: the cluster, the resources of each task (one run), how the code gets there."""
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="ray runner: the cluster to join (default: start a local Ray on this machine)")
    p.add_argument("--cpus-per-run", type=_positive_int, default=1, metavar="N",
                   help="ray runner: CPUs of each run's task; the run trains with that many threads (default 1)")
    p.add_argument("--gpus-per-run", type=_gpu_share, default=1.0, metavar="G",
                   help="ray runner: GPUs of the task of each run on CUDA (train.device cuda, or auto on a cluster "
                        "with GPUs; default 1); 0.25 packs four small runs on one GPU; 0: every run on CPUs")
    p.add_argument("--ray-code", choices=["ship", "installed"], default="ship",
                   help="ray runner: ship this checkout's bench/models/losses to the workers (default), or use the "
                        "project installed at the same path on every node (checked to be this code)")


def _add_slurm(p: argparse.ArgumentParser) -> None:
    """Options of --runner slurm: the resources of each job (one run) and where the jobs go."""
    p.add_argument("--slurm-partition", default=None, metavar="NAME", help="slurm runner: the partition "
                   "(default: the cluster's default)")
    p.add_argument("--slurm-time", type=_positive_int, default=60, metavar="MIN",
                   help="slurm runner: time limit of each job in minutes (default 60); a job that reaches it "
                        "is requeued (up to 3 times) and resumes from its checkpoint")
    p.add_argument("--slurm-gpus-per-run", type=_nonnegative_int, default=0, metavar="N",
                   help="slurm runner: GPUs of each job (default 0: the runs train on the CPU)")
    p.add_argument("--slurm-cpus-per-run", type=_positive_int, default=1, metavar="N",
                   help="slurm runner: CPUs of each job; the run trains with that many threads (default 1)")
    p.add_argument("--slurm-cluster", choices=["slurm", "local"], default="slurm",
                   help="slurm runner: submit to SLURM (default), or run the same jobs as local processes "
                        "with submitit's local executor (to try a sweep without a cluster)")


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="every run of a file: done / running (who) / failed / pending, step, "
                                      "images/s, ETA, key metric; works while a sweep runs")
    _add_common(p)
    p.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    p.add_argument("--interval", type=_positive_float, default=5.0, metavar="S",
                   help="seconds between refreshes of --watch (default 5)")
    p.add_argument("--json", action="store_true", help="a JSON list, one object per run (run, arm, dataset, "
                   "seed, state, step, total_steps, metric, holder, job, images_per_s, eta_s, detail); "
                   "with --watch one list per line per refresh")


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="two results folders (or one at two commits, --at REV): per arm and "
                                       "metric, B - A with its 95%% Welch interval over seeds")
    p.add_argument("a", type=Path, metavar="A", help="a results folder, e.g. results/loss_cpu")
    p.add_argument("b", type=Path, nargs="?", default=None, metavar="B",
                   help="the other results folder (or give --at)")
    p.add_argument("--at", default=None, metavar="REV", help="compare A as committed at REV (A) with A as it "
                   "is now (B), e.g. --at HEAD~3")
    p.add_argument("--metrics", default="", metavar="recon_ssim,fid_samples", help="only these metrics")
    p.add_argument("--out", type=Path, default=None, metavar="out.md", help="also write the table as markdown")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_run(sub)
    p = sub.add_parser("plan", help="validate, list the expanded runs, build every model and objective")
    _add_common(p)
    p.add_argument("--require", default="", metavar="fid,lpips",
                   help="fail unless these weight-dependent metrics can be computed")
    p.add_argument("--peak-tflops", type=float, default=None, metavar="T",
                   help="estimate wall time on a device with this dense peak (e.g. 312 for an A100's bf16)")
    p.add_argument("--mfu", type=float, default=0.3, help="assumed model-FLOPs utilisation (default 0.3)")
    p.add_argument("--devices-count", type=_positive_int, default=1, metavar="N",
                   help="spread the estimate over N devices (default 1)")
    p = sub.add_parser("table", help="(re)write results/<ablation>/ tables from finished runs")
    _add_common(p)
    p = sub.add_parser("score", help="re-score finished runs from their checkpoints (no retraining), "
                                     "then rewrite the tables")
    _add_common(p)
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    _add_status(sub)
    _add_compare(sub)
    sub.add_parser("list", help="list registered models, losses and data sources")
    p = sub.add_parser("interpolate", help="walk a finished run's latent space between two classes (C11): "
                                           "sheets, cross-fade baseline, ranked gallery, metrics.json")
    p.add_argument("run_dir", type=Path, help="a finished run, runs/<ablation>/<arm>/<dataset>/s<seed>-<hash8>")
    p.add_argument("--from", dest="from_cls", required=True, help="class of the first endpoint, e.g. horse")
    p.add_argument("--to", dest="to_cls", required=True, help="class of the second endpoint, e.g. bird")
    p.add_argument("--pairs", type=int, default=16, help="held-out pairs (default 16)")
    p.add_argument("--steps", type=int, default=9, help="frames per path incl. both ends (default 9)")
    p.add_argument("--seed", type=int, default=0, help="pair seed; the same for every run (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-kid", action="store_true", help="skip KID of the midpoints (Inception)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p = sub.add_parser("pegasus", help="results/pegasus/: rank the arms of STL-10 files by their latent "
                                       "interpolation (C11) and draw the best run's sheets")
    p.add_argument("files", nargs="+", type=Path, help="ablation YAMLs whose runs scored eval.pegasus")
    p.add_argument("--from", dest="from_cls", default="horse", help="first class (default horse)")
    p.add_argument("--to", dest="to_cls", default="bird", help="second class (default bird)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every file, e.g. data.stl10.root=PATH")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs live (default: runs/)")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    catalogue.add_parser(sub)
    p = sub.add_parser("speed", help="results/speed/: the peers benchmarks' records (pytest --benchmark -k peers "
                                     "--benchmark-json=FILE) as tables, from one clean commit")
    p.add_argument("records", nargs="+", type=Path, metavar="FILE", help="pytest-benchmark JSON records")
    p.add_argument("--out", type=Path, default=None, help="the folder (default: results/speed)")
    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    f = dsub.add_parser("fetch", help="download a dataset with torchvision (needs network)")
    f.add_argument("name", choices=["cifar10", "stl10"])
    f.add_argument("--root", help="target folder (default: data/<name>)")
    return ap


def cmd_plan(args) -> int:
    from bench import store
    from bench.config import schema as config
    spec = config.load(args.file, args.overrides)
    runs = config.expand(spec)
    _require(args)
    built = _build_all(spec, runs)
    print(f"{spec.name}: {len(runs)} runs = {len(spec.arms)} arms x {len(spec.datasets)} datasets x "
          f"{len(spec.seeds)} seeds  ({spec.question})")
    for run in runs:
        state = "done" if store.is_finished(args.runs_dir / run.rel_dir) else \
            ("partial" if (args.runs_dir / run.rel_dir / store.CKPT).exists() else "todo")
        params = built[(str(run.model), str(run.loss))]
        losses = " + ".join(f"{t.weight:g}*{t.name}" for t in run.loss)
        print(f"  {run.rel_dir!s:<50} {state:<7} {run.model['name']} {params / 1e6:.2f}M params, "
              f"{losses}, {run.train.steps} steps x {run.train.batch_size}")
    if args.cmd == "plan":
        from bench.run import plan as estimate
        if not (getattr(args, "peak_tflops", None) is None or args.peak_tflops > 0) or not 0 < args.mfu <= 1:
            raise BenchError("--peak-tflops must be > 0 and --mfu in (0, 1]")
        print(estimate.describe(runs, args.peak_tflops, args.mfu, args.devices_count))
    return 0


def _build_all(spec, runs) -> dict:
    """Build every distinct model and objective once on the CPU, so every mistake shows before training.
    Returns {(model, loss): parameter count}."""
    from bench.errors import ConfigError
    from bench.train.runtime import build_model
    from losses import Objective

    built = {}
    for run in runs:
        key = (str(run.model), str(run.loss))
        if key not in built:
            try:
                model = build_model(run, _cpu())
            except ConfigError as exc:
                where = "defaults.model" if not spec.arms[run.arm].model else f"arms.{run.arm}.model"
                raise ConfigError(f"{spec.source}: {where}.{exc.key or 'name'} ({run.dataset}): "
                                  f"{exc.message}") from None
            try:
                Objective.from_config(run.loss)
            except WeightsError as exc:
                raise WeightsError(f"{spec.source}: arms.{run.arm}.loss: {exc}") from None
            built[key] = sum(p.numel() for p in model.parameters())
    return built


def _require(args) -> None:
    names = [n.strip() for n in getattr(args, "require", "").split(",") if n.strip()]
    if names:
        from bench.weights import files as weights
        weights.require(names)


def _cpu():
    import torch
    return torch.device("cpu")


def cmd_run(args) -> int:
    from bench.config import schema as config
    from bench.data import sources as data
    from bench.run import local as runners
    from bench.train.runtime import check_devices

    if args.dry_run:
        return cmd_plan(args)
    spec = config.load(args.file, args.overrides)
    runs = config.expand(spec)
    slurm = _slurm_settings(args, runs)
    ray = _ray_settings(args, runs)
    if args.runner == "local":             # cluster runners get their devices on the nodes
        check_devices(runs, args.devices)  # cuda:9 on a 2-GPU box: one line, before anything is built
    _require(args)
    _build_all(spec, runs)
    # fail before any training if a dataset is missing (decoded once, then cached)
    checked = set()
    for run in runs:
        key = str(sorted(run.data.model_dump().items()))
        if key not in checked:
            checked.add(key)
            for role in ("train", "test"):
                data.load(run.data, role)
    summary = runners.run_sweep(runs, args.runs_dir, runner=args.runner, jobs=args.jobs, devices=args.devices,
                                progress=not args.no_progress, ray=ray, slurm=slurm)
    path = _write_tables(spec, runs, args)
    runners.say(f"{len(summary.trained)} trained, {len(summary.skipped)} skipped, "
                f"{len(summary.diverged)} diverged, {len(summary.failed)} failed -> {path}")
    return 1 if summary.failed else 0


def _ray_settings(args, runs):
    """--runner ray: its settings, checked before anything is built (one line); None for the other runners."""
    if args.runner != "ray":
        return None
    from bench.run import ray_cluster

    if args.jobs != 1 or args.devices:
        raise BenchError("--jobs and --devices are the local runner's: with --runner ray each run asks for "
                         "--cpus-per-run CPUs or --gpus-per-run of a GPU, and Ray runs as many at once as the "
                         "cluster holds")
    settings = ray_cluster.RaySettings(address=args.address, cpus_per_run=args.cpus_per_run,
                                       gpus_per_run=args.gpus_per_run, code=args.ray_code)
    ray_cluster.check(settings, runs)
    return settings


def _slurm_settings(args, runs):
    """--runner slurm: its settings, checked before anything is built (submitit missing, no SLURM here,
    CUDA runs without GPUs: one line); None for the other runners."""
    if args.runner != "slurm":
        return None
    from bench.run import slurm

    settings = slurm.SlurmSettings(partition=args.slurm_partition, time_min=args.slurm_time,
                                   gpus_per_run=args.slurm_gpus_per_run, cpus_per_run=args.slurm_cpus_per_run,
                                   cluster=args.slurm_cluster)
    slurm.check(settings, runs)
    return settings


def _write_tables(spec, runs, args) -> Path:
    """Tables under results/<name>/, or results/<name>~trial-<hash>/ when --set changed the experiment."""
    from bench.config import schema as config
    from bench.report import results as report
    from bench.run import local as runners

    name, as_written = config.results_name(spec)
    if not as_written:
        runners.say(f"note: --set {' '.join(config.experiment_overrides(spec.overrides))} changes the "
                    f"experiment: results go to {args.results_dir / name} (a trial; CLAIMS.md ignores it)")
    return report.write(spec, runs, args.runs_dir, args.results_dir, results_name=name, as_written=as_written)


def cmd_table(args) -> int:
    from bench.config import schema as config

    spec = config.load(args.file, args.overrides)
    print(_write_tables(spec, config.expand(spec), args))
    return 0


def cmd_score(args) -> int:
    from bench.config import schema as config
    from bench.run import local as runners

    spec = config.load(args.file, args.overrides)
    runs = config.expand(spec)
    summary = runners.rescore(runs, args.runs_dir, progress=not args.no_progress)
    path = _write_tables(spec, runs, args)
    runners.say(f"{len(summary.trained)} re-scored, {len(summary.skipped)} not finished -> {path}")
    return 0


def cmd_interpolate(args) -> int:
    from bench.pegasus import outputs as pegasus

    out, ev = pegasus.interpolate(args.run_dir, args.from_cls, args.to_cls, pairs=args.pairs, steps=args.steps,
                                  seed=args.seed, device=args.device, kid=not args.no_kid,
                                  progress=not args.no_progress)
    print(pegasus.summary(ev))
    print(out)
    return 0


def cmd_pegasus(args) -> int:
    from bench.config import schema as config
    from bench.pegasus import report as pegasus_report

    specs = [config.load(f, args.overrides) for f in args.files]
    print(pegasus_report.write_report(specs, args.runs_dir, args.results_dir, args.from_cls, args.to_cls,
                                      device=args.device, progress=not args.no_progress))
    return 0


def cmd_status(args) -> int:
    from bench.config import schema as config
    from bench.run import status

    spec = config.load(args.file, args.overrides)
    runs = config.expand(spec)

    def render() -> str:
        if args.json:
            return json.dumps(status.as_json(runs, args.runs_dir), indent=None if args.watch else 2)
        text = status.report(spec.name, runs, args.runs_dir)
        if args.watch:
            text = f"{time.strftime('%H:%M:%S')}  every {args.interval:g} s, Ctrl-C to stop\n{text}"
        return text

    if args.watch:
        return status.watch(render, args.interval, clear=False if args.json else None)
    print(render())
    return 0


def cmd_compare(args) -> int:
    from bench import store
    from bench.report import compare

    if (args.b is None) == (args.at is None):
        raise BenchError("compare: give two results folders (A B), or one and --at REV")
    a = compare.read_at(args.a, args.at) if args.at else compare.read_folder(args.a)
    b = compare.read_folder(args.a if args.at else args.b)
    result = compare.compare(a, b, [m.strip() for m in args.metrics.split(",") if m.strip()])
    print(compare.render_text(result))
    if args.out:
        store.write_text(args.out, compare.render_markdown(result))
        print(f"-> {args.out}", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from bench.data.sources import SOURCES
    from losses import LOSSES
    from models import MODELS

    for title, reg in (("models", MODELS), ("losses", LOSSES), ("data sources", SOURCES)):
        print(f"{title}:")
        for name in reg.names():
            print(f"  {name:<16} {reg.doc(name)}")
    return 0


def cmd_data(args) -> int:
    from bench.data import sources as data

    root = args.root or f"data/{args.name}"
    data.fetch(args.name, root)
    print(f"{args.name} ready in {root}")
    return 0


def cmd_speed(args) -> int:
    from bench.speed import report as speed_report

    print(speed_report.write(args.records, args.out or Path("results") / speed_report.FOLDER))
    return 0


def _weights_cli(args) -> int:
    from bench.weights import files as weights
    return weights.run_cli(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "no_progress", False):
        from bench.data import sources as data
        data.PROGRESS = False
    try:
        return {"run": cmd_run, "plan": cmd_plan, "status": cmd_status, "table": cmd_table, "score": cmd_score,
                "list": cmd_list, "data": cmd_data, "weights": _weights_cli, "interpolate": cmd_interpolate,
                "pegasus": cmd_pegasus, "speed": cmd_speed, "compare": cmd_compare}[args.cmd](args)
    except BenchError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:             # `python -m bench status FILE | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
