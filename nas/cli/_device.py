"""``hwnas device ...``: list, add, show, remove, measure, check, import, export and fit."""

from __future__ import annotations

import argparse
import json
import os
import sys

from nas._errors import UsageError
from nas.cli._base import BaseCommand
from nas.cli._device_profile import DEVICE_SUBCOMMANDS


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 32,8, got {text!r}"
        ) from None


def _add_measure_flags(parser: argparse.ArgumentParser, default_seconds: float) -> None:
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=default_seconds,
        help=f"cap on each timed loop in seconds (default {default_seconds:g})",
    )
    parser.add_argument(
        "--target-rse",
        type=_positive_float,
        default=0.01,
        help="stop once the median's relative standard error is below this (default 0.01)",
    )
    parser.add_argument(
        "--pin-cpus",
        type=_int_list,
        default=None,
        metavar="0,1",
        help="pin the measurement to these CPUs (Linux; on the measuring host)",
    )


class DeviceListCommand(BaseCommand):
    """List devices."""

    name = "list"
    help = "List the devices: built-ins and those saved under the hwnas home."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the output format."""
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Print one line per device."""
        from latency_models import get_device, list_devices

        specs = [get_device(n) for n in list_devices()]
        if args.json:
            print(json.dumps([_public(s.to_dict()) for s in specs], indent=2))
            return 0
        rows = [("NAME", "LOCATION", "THREADS", "BATCH", "PRECISIONS", "METER", "DESCRIPTION")]
        for s in specs:
            precisions = ",".join(map(str, s.precisions))
            rows.append(
                (s.name, s.location, str(s.threads), str(s.batch_size), precisions,
                 s.energy_meter, s.description)
            )  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
        return 0


def _public(d: dict[str, object]) -> dict[str, object]:
    return {k: ("***" if k == "token" and v else v) for k, v in d.items()}


class DeviceAddCommand(BaseCommand):
    """Add (save) a device."""

    name = "add"
    help = (
        "Add a device and save it under the hwnas home. Examples: `hwnas device add laptop-4t "
        "--threads 4`; `hwnas device add pi4 --location http://10.0.0.7:8765 --token TOKEN`; "
        "`hwnas device add bench-node --location ray:bench`."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the spec's fields as flags."""
        parser.add_argument("name", metavar="NAME", help="device name, e.g. pi4-cpu")
        parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
        parser.add_argument("--batch-size", type=int, default=1, help="batch size (default 1)")
        parser.add_argument(
            "--location",
            default="local",
            help="local (default), http://HOST:PORT of an agent, or ray:RESOURCE",
        )
        token = parser.add_mutually_exclusive_group()
        token.add_argument(
            "--token-file",
            metavar="FILE",
            default=None,
            help="read the agent's token from FILE (HTTP devices; keeps it out of the process "
            "list)",
        )
        token.add_argument(
            "--token", default=None, help="the agent's token (HTTP devices; prefer --token-file)"
        )
        parser.add_argument(
            "--providers",
            default="CPUExecutionProvider",
            help="comma-separated onnxruntime providers (default CPUExecutionProvider)",
        )
        parser.add_argument(
            "--precisions",
            type=_int_list,
            default=None,
            help="bit-widths run (default: what the runtime executes natively, 32,8 or 32)",
        )
        parser.add_argument(
            "--runtime",
            default="onnxruntime",
            help="onnxruntime (default), openvino, ncnn, mnn or tvm",
        )
        parser.add_argument("--align", type=int, default=8, help="channel alignment (default 8)")
        parser.add_argument(
            "--energy-meter", choices=("none", "rapl", "nvml"), default="none", help="energy meter"
        )
        parser.add_argument("--description", default="", help="free text")
        parser.add_argument("--replace", action="store_true", help="overwrite a saved device")

    def run(self, args: argparse.Namespace) -> int:
        """Validate, save and print the device."""
        from latency_models import DeviceSpec, add_device
        from latency_models.agent import read_token_file
        from latency_models.devices import device_file

        try:
            if args.token_file:
                args.token = read_token_file(args.token_file)
            spec = DeviceSpec(
                name=args.name,
                providers=tuple(p for p in args.providers.split(",") if p),
                threads=args.threads,
                batch_size=args.batch_size,
                location=args.location,
                token=args.token,
                precisions=args.precisions,
                align=args.align,
                energy_meter=args.energy_meter,
                description=args.description,
                runtime=args.runtime,
            )
            add_device(spec, replace=args.replace)
        except ValueError as exc:
            raise UsageError(str(exc), args._parser) from exc
        print(f"added device {spec.name!r} ({device_file(spec.name)})")
        return 0


class DeviceShowCommand(BaseCommand):
    """Show one device and its stored measurements."""

    name = "show"
    help = "Show a device's settings and how many measurements its store holds."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device name."""
        parser.add_argument("name", metavar="NAME", help="device name")

    def run(self, args: argparse.Namespace) -> int:
        """Print the spec as JSON plus the store summary."""
        from latency_models import get_device
        from latency_models.measurement._store import MeasurementStore, default_store_path

        spec = get_device(args.name)
        info = _public(spec.to_dict())
        path = default_store_path(spec.name)
        info["store"] = str(path)
        info["measurements"] = len(MeasurementStore(spec.name)) if path.exists() else 0
        print(json.dumps(info, indent=2))
        return 0


class DeviceRemoveCommand(BaseCommand):
    """Remove a saved device."""

    name = "remove"
    help = (
        "Remove a saved device and its folder (measurements and predictors), so that a device "
        "added later under the same name starts empty."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device name."""
        parser.add_argument("name", metavar="NAME", help="device name")
        parser.add_argument(
            "--keep-measurements",
            action="store_true",
            help="keep the device's folder (its measurement store and predictors)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Delete the device file and, unless asked to keep it, its folder."""
        from latency_models import remove_device

        try:
            folder = remove_device(args.name, keep_measurements=args.keep_measurements)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if folder is None:
            print(f"removed device {args.name!r}")
        elif args.keep_measurements:
            print(f"removed device {args.name!r}; kept its measurements in {folder}")
        else:
            print(f"removed device {args.name!r} and its measurements ({folder})")
        return 0


class DeviceRecordsCommand(BaseCommand):
    """List or remove the records of a device's measurement store."""

    name = "records"
    help = (
        "List the records of a device's measurement store, with any that cannot be read (a "
        "damaged record, a graph that is not ONNX); --remove drops records by id."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device, the ids to remove and the output format."""
        parser.add_argument("name", metavar="DEVICE", help="device name")
        parser.add_argument(
            "--remove", type=_int_list, default=None, metavar="ID,...", help="record ids to drop"
        )
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Print one line per record, or remove the given ones."""
        from latency_models import MeasurementStore, get_device

        store = MeasurementStore(get_device(args.name).name)
        if args.remove:
            try:
                n = store.remove(args.remove)
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
            print(f"removed {n} record(s) from {store.path} ({len(store)} left)")
            return 0
        rows = store.check(graphs=True)
        if args.json:
            print(json.dumps([{"id": i, "graph_hash": h, "problem": p} for i, h, p in rows]))
            return 0
        for rec_id, digest, problem in rows:
            print(f"{rec_id:>6}  {digest[:16]}  {problem or 'ok'}")
        bad = [str(i) for i, _, p in rows if p]
        print(f"{len(rows)} record(s) in {store.path}, {len(bad)} unreadable", file=sys.stderr)
        if bad:
            print(
                f"remove them with: hwnas device records {args.name} --remove {','.join(bad)}",
                file=sys.stderr,
            )
        return 0


class DeviceMeasureCommand(BaseCommand):
    """Measure one ONNX file on a device."""

    name = "measure"
    help = "Measure an ONNX file on a device and keep the result in the device's store."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device, the file and the measurement flags."""
        parser.add_argument("name", metavar="DEVICE", help="device name")
        parser.add_argument("onnx", metavar="MODEL.onnx", help="ONNX file")
        _add_measure_flags(parser, 3.0)
        parser.add_argument("--remeasure", action="store_true", help="ignore a stored result")
        parser.add_argument("--json", action="store_true", help="print the measurement as JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Measure (or reuse) and print."""
        from latency_models import measure_cached

        m = measure_cached(
            args.onnx,
            args.name,
            remeasure=args.remeasure,
            max_seconds=args.max_seconds,
            target_rse=args.target_rse,
            pin_cpus=args.pin_cpus,
        )
        if args.json:
            print(json.dumps(m.to_dict(), indent=2))
            return 0
        energy = f"{m.energy_mj:.3f} mJ" if m.energy_mj is not None else m.energy_source
        memory = f"{m.peak_memory_bytes / 2**20:.2f} MiB" if m.peak_memory_bytes else "n/a"
        print(
            f"{args.onnx} on {m.device}: {m.latency_ms:.4f} ms median "
            f"(p10 {m.p10_ms:.4f}, p90 {m.p90_ms:.4f}, cv {m.cv:.3f}, {m.n_runs} runs); "
            f"energy {energy}; peak memory {memory}; weights "
            f"{(m.weight_bytes or 0) / 2**20:.2f} MiB"
        )
        return 0


class DeviceCheckCommand(BaseCommand):
    """Measure the noise floor of a device."""

    name = "check"
    help = (
        "Measure fixed reference graphs (compute-bound ones of about 0.1, 1 and 30 ms on one "
        "x86 core, and a memory-bound one of about 20 ms) twice each in fresh sessions and "
        "report the run-to-run spread: the noise floor that predictor errors must be read "
        "against."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device, repeats and measurement flags."""
        parser.add_argument("name", metavar="NAME", help="device name")
        parser.add_argument("--repeats", type=int, default=2, help="measurements per graph (>=2)")
        _add_measure_flags(parser, 3.0)
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Measure and print one line per reference graph."""
        from latency_models import check_device

        if args.repeats < 2:
            raise UsageError(f"--repeats must be >= 2, got {args.repeats}", args._parser)
        results = check_device(
            args.name,
            repeats=args.repeats,
            max_seconds=args.max_seconds,
            target_rse=args.target_rse,
            pin_cpus=args.pin_cpus,
        )
        if args.json:
            print(json.dumps([r.to_dict() for r in results], indent=2))
            return 0
        print(f"noise floor of {args.name} ({args.repeats} fresh sessions per graph)")
        from latency_models import get_device

        if get_device(args.name).kind == "local" and hasattr(os, "getloadavg"):
            load, cpus = os.getloadavg()[0], os.cpu_count() or 1
            if load > 0.5 * cpus:
                print(
                    f"  note: load average {load:.1f} on {cpus} CPUs: other work is running here, "
                    "so medians are inflated and spreads wider than the device's own."
                )
        for r in results:
            medians = ", ".join(f"{m:.4f}" for m in r.medians_ms)
            print(
                f"  {r.graph:<11} medians [{medians}] ms  spread {r.spread_pct:.1f}%  "
                f"(within-run cv up to {r.cv:.3f})"
            )
        return 0


class DeviceImportCommand(BaseCommand):
    """Import measurements from JSON Lines."""

    name = "import"
    help = (
        "Import measurements taken elsewhere: each JSON line names an ONNX file (relative to the "
        "JSONL) and its latency_ms, optionally energy_mj and peak_memory_bytes."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device and file."""
        parser.add_argument("name", metavar="DEVICE", help="device name")
        parser.add_argument("file", metavar="RECORDS.jsonl", help="JSON Lines file")
        parser.add_argument(
            "--fit",
            action="store_true",
            help="then fit the device's predictors (hwnas device fit)",
        )

    def run(self, args: argparse.Namespace) -> int:
        """Import and say how many records were new; fit with ``--fit``."""
        from latency_models import MeasurementStore, get_device

        spec = get_device(args.name)
        store = MeasurementStore(spec.name)
        try:
            added = store.import_jsonl(args.file)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from exc  # about the file, not the flags: no usage
        print(f"imported {added} new measurement(s) into {store.path} ({len(store)} in all)")
        return _fit_and_print(spec.name, "all", 0) if args.fit else 0


class DeviceFitCommand(BaseCommand):
    """Fit a device's predictors from its stored measurements, without measuring."""

    name = "fit"
    help = (
        "Fit a device's latency (and energy) predictors from its stored or imported "
        "measurements: bad labels are refused naming the record, wildly inconsistent ones "
        "named and left out, every kind and both baselines scored out of fold on held-out "
        "families, and the best one saved with all scores."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device, target and seed."""
        parser.add_argument("name", metavar="DEVICE", help="device name")
        parser.add_argument(
            "--target",
            default="all",
            choices=("all", "latency_ms", "energy_mj"),
            help="what to fit (default all: energy where enough was measured)",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the split and folds")

    def run(self, args: argparse.Namespace) -> int:
        """Fit, save and print every kind's scores."""
        return _fit_and_print(args.name, args.target, args.seed)


def _fit_and_print(device: str, target: str, seed: int) -> int:
    import warnings

    from latency_models import ProfileError
    from latency_models.profiling._fit import describe_choice, fit_device

    targets = ("latency_ms", "energy_mj") if target == "all" else (target,)
    for t in targets:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                predictor, path = fit_device(device, target=t, seed=seed)
            except ProfileError as exc:
                if target == "all" and t == "energy_mj":
                    print(f"{t}: not fitted ({exc})")
                    continue
                raise UsageError(str(exc)) from exc
            except ValueError as exc:  # a stored label that is no label
                raise UsageError(str(exc)) from exc
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        print(f"{t}: " + "\n  ".join(describe_choice(predictor)))
        print(f"  saved to {path}")
    return 0


class DeviceExportCommand(BaseCommand):
    """Export measurements to JSON Lines."""

    name = "export"
    help = (
        "Export a device's measurements as JSON Lines, with the ONNX files in graphs/ beside it."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the device and file."""
        parser.add_argument("name", metavar="DEVICE", help="device name")
        parser.add_argument("file", metavar="RECORDS.jsonl", help="JSON Lines file to write")

    def run(self, args: argparse.Namespace) -> int:
        """Export and say how many records were written."""
        from latency_models import MeasurementStore, get_device

        spec = get_device(args.name)
        n = MeasurementStore(spec.name).export_jsonl(args.file)
        print(f"exported {n} measurement(s) to {args.file}", file=sys.stderr)
        return 0


class DeviceCommand(BaseCommand):
    """``hwnas device``: the device group."""

    name = "device"
    help = "Manage target devices and their measurements."
    subcommands = (
        DeviceListCommand,
        DeviceAddCommand,
        DeviceShowCommand,
        DeviceRemoveCommand,
        DeviceRecordsCommand,
        DeviceMeasureCommand,
        DeviceCheckCommand,
        DeviceImportCommand,
        DeviceExportCommand,
        DeviceFitCommand,
        *DEVICE_SUBCOMMANDS,
    )


COMMANDS = (DeviceCommand,)
