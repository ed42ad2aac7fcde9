"""Tasks: a trained model plus the data and metric to judge it.

Bundled tasks train on first use and cache their weights under
``home_dir()/models/<task>-<recipe hash>.pt`` (with a JSON sidecar holding the file's
sha256), so the second use only loads them. A user task is any callable that returns a
:class:`Task`, named ``package.module:function`` or ``path/to/file.py:function``.

This module imports torch only inside functions: ``hwnas tasks`` lists tasks without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latency_models._home import home_dir
from latency_models._registry import Registry
from nas._errors import TaskError, UnknownNameError
from nas.tasks._task import Task

if TYPE_CHECKING:
    from torch import nn

    from nas.tasks._data import Split
    from nas.tasks._train import TrainConfig

_logger = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "Task",
    "TaskFactory",
    "get_task",
    "list_tasks",
    "load_task",
    "register_task",
    "task_cache_path",
]

#: Bump when training code changes in a way that changes the weights it produces.
_RECIPE_VERSION = 2

_SPEC_FORMS = "'package.module:function' or 'path/to/file.py:function'"


@dataclass(frozen=True)
class TaskFactory:
    """A registered task: its name, a one-line description, and how to build it.

    Calling the factory builds (trains or loads) the task; reading ``description`` does not.
    """

    name: str
    description: str
    build: Callable[[], Task] = field(repr=False)

    def __call__(self) -> Task:
        return self.build()


#: Registered tasks by name. Add your own with :func:`register_task` or ``TASKS.add``.
TASKS: Registry[TaskFactory] = Registry("task")


def register_task(name: str, description: str = "") -> Callable[[Callable[[], Task]], TaskFactory]:
    """Decorator: register a no-argument function returning a :class:`Task` under ``name``."""

    def _decorator(func: Callable[[], Task]) -> TaskFactory:
        doc = (func.__doc__ or "").strip().splitlines()
        return TASKS.add(name, TaskFactory(name, description or (doc[0] if doc else ""), func))

    return _decorator


def list_tasks(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered tasks, optionally filtered by a wildcard (``"mnist-*"``)."""
    return TASKS.names(pattern)


def get_task(name: str) -> Task:
    """The registered task ``name``; a bundled one is trained on first use, then cached.

    Raises:
        UnknownNameError: listing the registered tasks and the closest name.
    """
    return TASKS.get(name)()


# ---------------------------------------------------------------------------------------
# bundled tasks: recipes, training and the weights cache


@dataclass(frozen=True)
class _Recipe:
    """Everything that determines a bundled task's weights (hashed into the cache key)."""

    dataset: str
    family: str
    model_kwargs: Mapping[str, Any]
    train: TrainConfig
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "family": self.family,
            "model_kwargs": {k: _jsonable(v) for k, v in sorted(self.model_kwargs.items())},
            "train": self.train.to_dict(),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _recipes() -> dict[str, _Recipe]:
    from nas.tasks._train import TrainConfig

    return {
        "mnist-resnet": _Recipe(
            "mnist-5k",
            "resnet",
            {"widths": (16, 32, 64), "blocks": 2},
            TrainConfig(epochs=10, batch_size=128, lr=0.1, weight_decay=5e-4, max_shift=2),
        ),
        "mnist-mobilenetv2": _Recipe(
            "mnist-5k",
            "mobilenetv2",
            {},
            TrainConfig(epochs=10, batch_size=128, lr=0.1, weight_decay=1e-4, max_shift=2),
        ),
        "mnist64-resnet18": _Recipe(
            "mnist-5k-64",
            "resnet",
            {"widths": (24, 48, 96, 192), "blocks": 2},
            TrainConfig(epochs=4, batch_size=128, lr=0.1, weight_decay=5e-4, max_shift=4),
            threads=2,
        ),
        "digits-resnet": _Recipe(
            "digits",
            "resnet",
            {"widths": (16, 32), "blocks": 1},
            TrainConfig(epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4, max_shift=0),
        ),
        "digits-mobilenetv2": _Recipe(
            "digits",
            "mobilenetv2",
            {
                "stem": 16,
                "settings": ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 1, 1)),
                "head": 64,
            },
            TrainConfig(epochs=15, batch_size=64, lr=0.05, weight_decay=1e-4, max_shift=1),
        ),
    }


_DESCRIPTIONS = {
    "mnist-resnet": "ResNet (3 stages x 2 basic blocks, 16/32/64 ch) on the bundled MNIST "
    "5k subset, 28x28; the demo task",
    "mnist-mobilenetv2": "MobileNetV2 (inverted residuals, depthwise convs) on the bundled "
    "MNIST 5k subset, 28x28",
    "mnist64-resnet18": "ResNet-18 layout (4 stages x 2 basic blocks, 24-192 ch) on the "
    "bundled MNIST 5k subset upsampled to 64x64: an edge-size, compute-bound model",
    "digits-resnet": "tiny ResNet (16/32 ch) on scikit-learn's 8x8 digits; trains in seconds",
    "digits-mobilenetv2": "tiny MobileNetV2 on scikit-learn's 8x8 digits; trains in seconds",
}


def _load_split(dataset: str) -> Split:
    from nas.tasks._data import DATASETS

    return DATASETS[dataset]()


def _recipe_hash(name: str, recipe: _Recipe, split: Split) -> str:
    import torch

    payload = {
        "task": name,
        "recipe": recipe.to_dict(),
        "data": split.fingerprint(),
        "torch_major": torch.__version__.split(".")[0],
        "recipe_version": _RECIPE_VERSION,
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def task_cache_path(name: str) -> Path:
    """Where the bundled task ``name`` keeps its weights (``.pt``; the sidecar is ``.json``)."""
    recipe = _recipes()[TASKS.get(name).name]
    split = _load_split(recipe.dataset)
    return home_dir() / "models" / f"{name}-{_recipe_hash(name, recipe, split)}.pt"


def _build_model(recipe: _Recipe, split: Split) -> nn.Module:
    import torch

    from nas.tasks._models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        return build_model(
            recipe.family,
            in_channels=int(split.train[0].shape[1]),
            num_classes=split.num_classes,
            **recipe.model_kwargs,
        )


def _train_recipe(recipe: _Recipe, split: Split) -> nn.Module:
    """Build and train the recipe's model from scratch (deterministic for a thread count)."""
    from nas.tasks._train import num_threads, train

    model = _build_model(recipe, split)
    with num_threads(min(recipe.threads, os.cpu_count() or 1)):
        return train(model, *split.train, recipe.train)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so parallel workers train a task once (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, writes are still atomic
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _try_load(model: nn.Module, weights: Path, sidecar: Path) -> str | None:
    """Load cached weights into ``model``; return None, or why the cache is unusable."""
    import torch

    try:
        meta = json.loads(sidecar.read_text())
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"sidecar {sidecar.name} unreadable ({exc})"
    actual = _sha256(weights)
    if actual != expected:
        return f"sha256 mismatch (file {actual[:12]}..., sidecar {str(expected)[:12]}...)"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        return f"could not load state dict ({type(exc).__name__}: {exc})"
    return None


def _bundled_task(name: str) -> Task:
    import torch

    recipe = _recipes()[name]
    split = _load_split(recipe.dataset)
    recipe_hash = _recipe_hash(name, recipe, split)
    folder = home_dir() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}-{recipe_hash}.pt"
    sidecar = weights.with_suffix(".json")
    with _file_lock(folder / f".{name}-{recipe_hash}.lock"):
        model = _build_model(recipe, split)
        problem = _try_load(model, weights, sidecar) if weights.exists() else "not cached"
        if problem is None:
            _logger.debug("loaded %s from %s", name, weights)
        else:
            if weights.exists():
                _logger.warning(
                    "cached weights %s are unusable: %s; retraining %s.", weights, problem, name
                )
            _logger.info("training %s (first use; cached in %s afterwards)", name, folder)
            start = time.perf_counter()
            model = _train_recipe(recipe, split)
            seconds = time.perf_counter() - start
            from nas.tasks._train import evaluate

            top1 = evaluate(model, *split.val)
            _atomic_write(weights, lambda p: torch.save(model.state_dict(), p))
            meta = {
                "task": name,
                "sha256": _sha256(weights),
                "recipe": recipe.to_dict(),
                "recipe_hash": recipe_hash,
                "torch_version": torch.__version__,
                "train_seconds": round(seconds, 2),
                "val_top1": round(top1, 3),
            }
            _atomic_write(sidecar, lambda p: p.write_text(json.dumps(meta, indent=2)))
            _logger.info("trained %s in %.1f s: val top1 %.2f%%", name, seconds, top1)
    X_val = split.val[0]
    return Task(
        name=name,
        model=model.eval(),
        train=split.train,
        val=split.val,
        example_input=X_val[:1].clone(),
        metric="top1",
        num_classes=split.num_classes,
        description=_DESCRIPTIONS[name],
    )


def _register_bundled() -> None:
    for name, description in _DESCRIPTIONS.items():

        def _build(name: str = name) -> Task:
            return _bundled_task(name)

        TASKS.add(name, TaskFactory(name, description, _build))


_register_bundled()


# ---------------------------------------------------------------------------------------
# user tasks: "package.module:function" or "path/to/file.py:function"


def load_task(spec: str) -> Task:
    """A task from a bundled name, ``package.module:function`` or ``path/to/file.py:function``.

    The function is called with no arguments and must return a :class:`Task`.

    Raises:
        UnknownNameError: ``spec`` looks like a task name but is not registered.
        TaskError: the spec is malformed, does not import, names no such function, the
            function raises, or it returns something other than a :class:`Task`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TaskError(f"a task spec must be a non-empty string, got {spec!r}.")
    spec = spec.strip()
    if spec in TASKS:
        return get_task(spec)
    target, sep, func_name = spec.rpartition(":")
    if not sep:
        if spec.endswith(".py") or "/" in spec or os.sep in spec or "." in spec:
            raise TaskError(
                f"task spec {spec!r} names no function; give {_SPEC_FORMS}, e.g. "
                f"'{spec}:make_task'."
            )
        raise UnknownNameError(
            f"{TASKS.unknown_message(spec)} A task of your own is named {_SPEC_FORMS}."
        )
    if not target or not func_name.isidentifier():
        raise TaskError(
            f"malformed task spec {spec!r}: expected {_SPEC_FORMS} (a module or .py file, a "
            "colon, then a function name)."
        )
    if target.endswith(".py") or "/" in target or os.sep in target:
        module = _import_file(Path(target), spec)
    else:
        module = _import_module(target, spec)
    func = getattr(module, func_name, None)
    if func is None:
        defined = sorted(
            n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
        )
        raise TaskError(
            f"{target} has no function {func_name!r} (task spec {spec!r}); it defines: {defined}."
        )
    if not callable(func):
        raise TaskError(f"{spec}: {func_name!r} is a {type(func).__name__}, not a function.")
    try:
        result = func()
    except Exception as exc:
        raise TaskError(f"task function {spec} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Task):
        raise TaskError(
            f"task function {spec} returned {type(result).__name__}, expected a nas.Task "
            "(from nas import Task; return Task(name=..., model=..., train=(X, y), "
            "val=(X, y), example_input=X[:1]))."
        )
    return result


def _import_module(target: str, spec: str) -> Any:
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise TaskError(
            f"cannot import module {target!r} of task spec {spec!r}: {exc}. Check that it is "
            f"on sys.path (installed or in the current folder), or name a file instead: "
            f"'path/to/file.py:function'."
        ) from exc
    except Exception as exc:
        raise TaskError(
            f"importing module {target!r} of task spec {spec!r} raised {type(exc).__name__}: {exc}"
        ) from exc


def _import_file(path: Path, spec: str) -> Any:
    path = path.expanduser()
    if not path.is_file():
        raise TaskError(
            f"task file {str(path)!r} of task spec {spec!r} does not exist (cwd: {Path.cwd()})."
        )
    resolved = path.resolve()
    module_name = "_hwnas_user_task_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise TaskError(f"cannot load {str(path)!r} as a Python file (task spec {spec!r}).")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise TaskError(
            f"importing task file {str(path)!r} (task spec {spec!r}) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return module
