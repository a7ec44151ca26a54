"""The engine and the runtime know nothing of HTTP; the service never imports torch or transformers."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
WEB = ("fastapi", "starlette", "uvicorn", "httpx")
HEAVY = ("torch", "transformers", "optimum")


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    "module", ["engine.py", "runtime.py", "store.py", "registry.py", "service.py", "cache.py"]
)
def test_core_modules_import_no_web_framework(module: str) -> None:
    assert not _imported_roots(APP / module) & set(WEB)


def test_no_app_module_imports_torch_or_transformers() -> None:
    for path in APP.rglob("*.py"):
        assert not _imported_roots(path) & set(HEAVY), path


def test_importing_engine_and_runtime_loads_no_web_framework() -> None:
    code = (
        "import json, sys; import app.engine, app.runtime, app.registry, app.service; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=APP.parent
    )
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(WEB + HEAVY), loaded & set(WEB + HEAVY)
