"""Imports stay light: ``import nas`` loads no torch, ray or onnxruntime."""

import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_nas_is_lean() -> None:
    loaded = _modules_after("import nas, nas.cli")
    assert not {"torch", "ray", "onnxruntime"} & loaded


def _submodules(package: str) -> list[str]:
    import importlib
    import pkgutil

    root = importlib.import_module(package)
    return [package] + [info.name for info in pkgutil.walk_packages(root.__path__, f"{package}.")]


def test_latency_models_never_imports_torch() -> None:
    # every submodule, not only the lazy package: the agent runs where torch is absent
    names = _submodules("latency_models")
    assert "latency_models.features._features" in names and "latency_models.agent" in names
    loaded = _modules_after("import " + ", ".join(names))
    assert "torch" not in loaded


def test_the_check_sees_a_heavy_import() -> None:
    assert "torch" in _modules_after("import search_spaces._space")


@pytest.mark.parametrize("package", ["nas", "latency_models", "search_spaces"])
def test_all_names_exist(package: str) -> None:
    module = __import__(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
