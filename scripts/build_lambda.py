"""Build what `sam deploy` uploads (``make deploy-build``): the functions' code and one dependencies layer.

    python3 scripts/build_lambda.py [--out build/lambda] [--python-version 3.12] [--arch arm64]
                                    [--boto3 bundle|runtime]

Two folders, both referenced by ``backend/template.yaml``:

- ``<out>/code/backend/``: the ``backend`` package, its ``.py`` files only. Every function's zip holds this
  and nothing else (no console, tests, docs, screenshots or bench), so ``backend.handlers.<name>.handler``
  resolves as before.
- ``<out>/layer/python/``: the packages of ``backend/requirements-lambda.txt``, installed by pip for the
  template's runtime and architecture, not for the Python running this script: ``pip install --target
  --platform manylinux2014_<arch> --implementation cp --python-version <X.Y> --only-binary=:all:``. pip then
  takes only wheels built for that interpreter and machine (pydantic-core is the one compiled package), so
  Python 3.11 on x86_64 builds a correct layer for python3.12 on arm64, with no container. Lambda puts the
  layer's ``python/`` folder on ``sys.path``; the three functions share the one layer.

The runtime and architecture default to the template's (``Runtime:`` and ``Architectures:`` under
``Globals``). The layer is rebuilt only when the requirements, the target or the boto3 choice change
(``<out>/layer.key``); pip's download cache makes a rebuild cheap. Standard library only: any Python 3.11+
with pip runs it, no virtual environment needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "backend" / "template.yaml"
REQUIREMENTS = ROOT / "backend" / "requirements-lambda.txt"
DEFAULT_OUT = ROOT / "build" / "lambda"

# Lambda's architecture names and the wheel platform tags that run on them. manylinux2014 (glibc 2.17) is
# what AWS documents for Lambda; manylinux_2_28 wheels also run on the python3.12 runtime (Amazon Linux 2023,
# glibc 2.34), so a package that only publishes those is still found.
PLATFORMS = {
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
}
MACHINES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "amd64": "x86_64"}
# Left out of the layer whatever pip installs: console scripts (python-dotenv's) and bytecode compiled for
# the building interpreter, which Lambda's would not use.
DROPPED = ("bin", "__pycache__")
BOTO3_STACK = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six")


@dataclass(frozen=True)
class Target:
    python_version: str  # "3.12"
    arch: str  # "arm64" or "x86_64", as Lambda names them

    @classmethod
    def from_template(cls, template: Path = TEMPLATE) -> Target:
        """The ``Globals.Function`` runtime and architecture of the SAM template."""
        text = template.read_text(encoding="utf-8")
        runtime = re.search(r"^\s+Runtime:\s*python(\d+\.\d+)\s*$", text, re.MULTILINE)
        arch = re.search(r"^\s+Architectures:\s*\[\s*(\w+)\s*\]\s*$", text, re.MULTILINE)
        if not runtime or not arch:
            raise SystemExit(f"{template}: no 'Runtime: python3.X' and 'Architectures: [...]' found")
        return cls(runtime.group(1), arch.group(1))

    @classmethod
    def running(cls) -> Target:
        """The interpreter running this script, to import a layer here (the tests do)."""
        machine = os.uname().machine.lower()
        if machine not in MACHINES:
            raise SystemExit(f"no Lambda architecture for this machine ({machine})")
        return cls(f"{sys.version_info.major}.{sys.version_info.minor}", MACHINES[machine])


@dataclass(frozen=True)
class Artifact:
    out: Path

    @property
    def code(self) -> Path:
        """The functions' CodeUri: holds ``backend/`` only."""
        return self.out / "code"

    @property
    def layer(self) -> Path:
        """The layer's ContentUri: holds ``python/``, which Lambda puts on sys.path."""
        return self.out / "layer"

    @property
    def site(self) -> Path:
        return self.layer / "python"


def requirements(boto3: str) -> list[str]:
    """The requirement lines of requirements-lambda.txt; without boto3 when the runtime's copy is used."""
    lines = [line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()]
    wanted = [line for line in lines if line]
    if boto3 == "runtime":
        wanted = [line for line in wanted if re.split(r"[<>=!~ \[;]", line, maxsplit=1)[0] != "boto3"]
    return wanted


def build_code(artifact: Artifact) -> None:
    """Copy the ``backend`` package's Python files (fresh each time: it is small and changes often)."""
    shutil.rmtree(artifact.code, ignore_errors=True)
    source = ROOT / "backend"
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        target = artifact.code / "backend" / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def build_layer(artifact: Artifact, target: Target, boto3: str, *, quiet: bool = False) -> bool:
    """Install the requirements for ``target`` into the layer; False when the existing one still fits."""
    wanted = requirements(boto3)
    key = hashlib.sha256(json.dumps([wanted, target.python_version, target.arch]).encode()).hexdigest()
    stamp = artifact.out / "layer.key"
    if artifact.site.is_dir() and stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == key:
        return False
    staging = artifact.out / "layer.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--target", str(staging / "python")]
    for platform in PLATFORMS[target.arch]:
        command += ["--platform", platform]
    command += [
        "--implementation",
        "cp",
        "--python-version",
        target.python_version,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-warn-conflicts",
        *(["--quiet"] if quiet else []),
        *wanted,
    ]
    subprocess.run(command, check=True)
    for name in DROPPED:
        for path in sorted((staging / "python").rglob(name), reverse=True):
            if path.is_dir():
                shutil.rmtree(path)
    shutil.rmtree(artifact.layer, ignore_errors=True)
    staging.rename(artifact.layer)
    stamp.write_text(key + "\n", encoding="utf-8")
    return True


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sizes(artifact: Artifact) -> dict[str, int]:
    """Unzipped bytes: the code, the layer, the layer's boto3 stack, and one function (code + layer)."""
    boto3_stack = sum(
        tree_size(p) if p.is_dir() else p.stat().st_size
        for p in artifact.site.iterdir()
        if re.split(r"[-.]", p.name, maxsplit=1)[0] in BOTO3_STACK or p.name.startswith("python_dateutil")
    )
    code, layer = tree_size(artifact.code), tree_size(artifact.layer)
    return {
        "code": code,
        "layer": layer,
        "layer_boto3": boto3_stack,
        "function": code + layer,
        "function_without_boto3": code + layer - boto3_stack,
    }


def installed(artifact: Artifact) -> list[str]:
    """``name==version`` of every distribution in the layer."""
    found = []
    for info in sorted(artifact.site.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        found.append(f"{name}=={version}")
    return found


def build(out: Path, target: Target, boto3: str = "bundle", *, quiet: bool = False) -> Artifact:
    artifact = Artifact(out)
    out.mkdir(parents=True, exist_ok=True)
    build_code(artifact)
    build_layer(artifact, target, boto3, quiet=quiet)
    return artifact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    template = Target.from_template()
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: build/lambda")
    parser.add_argument("--python-version", default=template.python_version, help="default: the template's")
    parser.add_argument(
        "--arch", choices=sorted(PLATFORMS), default=template.arch, help="default: the template's"
    )
    parser.add_argument(
        "--boto3",
        choices=["bundle", "runtime"],
        default="bundle",
        help="bundle boto3 in the layer (default) or use the copy inside the Lambda runtime",
    )
    args = parser.parse_args(argv)
    target = Target(args.python_version, args.arch)
    artifact = build(args.out.resolve(), target, args.boto3)
    mb = {name: f"{size / 1e6:.1f} MB" for name, size in sizes(artifact).items()}
    print(f"built for python{target.python_version} on {target.arch} (boto3: {args.boto3}):")
    print(f"  code   {artifact.code}  {mb['code']}")
    print(f"  layer  {artifact.layer}  {mb['layer']} (boto3 and its dependencies: {mb['layer_boto3']})")
    print(f"  each function, unzipped: {mb['function']} ({mb['function_without_boto3']} without boto3)")
    print("  layer: " + " ".join(installed(artifact)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
