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


def test_latency_models_never_imports_torch() -> None:
    loaded = _modules_after("import latency_models")
    assert "torch" not in loaded


@pytest.mark.parametrize("package", ["nas", "latency_models", "search_spaces"])
def test_all_names_exist(package: str) -> None:
    module = __import__(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
