"""The import rules of DESIGN.md: UI -> services -> ports -> adapters, never the other way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: Path) -> list[tuple[Path, str]]:
    found = []
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.module))
    return found


def _offenders(folder: Path, banned: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path, name in _imports(folder)
        if name.split(".")[0] in banned
    ]


def test_backend_never_imports_the_ui() -> None:
    assert _offenders(ROOT / "backend", ("textual", "pik_console", "rich")) == []


def test_services_talk_to_ports_not_to_stores() -> None:
    assert _offenders(ROOT / "backend" / "services", ("boto3", "botocore", "sqlite3")) == []
    assert _offenders(ROOT / "backend" / "services", ("backend.adapters",)) == []
    services = [name for _, name in _imports(ROOT / "backend" / "services")]
    assert not [n for n in services if n.startswith("backend.adapters")]


def test_the_scan_sees_imports_at_all() -> None:
    # Guard against a scan that silently finds nothing (wrong folder, parse change).
    names = {name for _, name in _imports(ROOT / "backend" / "services")}
    assert "backend.ports" in names


def test_importing_the_backend_does_not_load_the_ui() -> None:
    # What a Lambda function imports (the composition root and the handlers) must not need the console.
    code = (
        "import sys, backend.model, backend.services.ingest, backend.adapters.local.store, backend.kit,"
        " backend.handlers.ingest, backend.handlers.replay, backend.handlers.processor;"
        "bad = [m for m in ('textual', 'pik_console', 'rich') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
