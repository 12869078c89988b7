"""`ollafleet bundle -o DIR`: ollafleet and every dependency as wheels, for a PC with no package index.

    ollafleet bundle -o DIR [--platform linux --platform windows] [--python 3.11 --python 3.12]
    # on the offline PC:  pip install --no-index --find-links DIR ollafleet

Run from a source checkout with internet (or a package mirror pip is configured for). For each
platform and Python version it fetches wheels only (`pip download --only-binary=:all:`), one
package at a time, and follows each wheel's own requirements with the markers of the *target*
(pip itself would judge `sys_platform` by the PC it runs on, and so miss, for example, tzdata,
which tzlocal needs on Windows only).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

PLATFORMS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    # first tag preferred: manylinux 2.17 wheels run on any Linux of the last ten years
    "linux": (("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"),
              {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64"}),
    "windows": (("win_amd64",),
                {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64"}),
}
PYTHONS = ("3.11", "3.12")
SOURCES = ("pyproject.toml", "README.md", "reconciler", "balancer", "simulator")
_SAVED = re.compile(r"(?:Saved|File was already downloaded)\s+(\S+\.whl)")


class BundleError(Exception):
    pass


def source_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BundleError(f"{root} is not an ollafleet source checkout (no pyproject.toml): "
                          "run bundle from a clone of the repository")
    return root


def _pip(*args: str) -> str:
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise BundleError(f"pip {' '.join(args[:1])} failed:\n{tail}")
    return done.stdout


def own_wheel(out: Path) -> Path:
    """Build ollafleet's wheel from a copy of the sources (the checkout stays clean)."""
    root = source_root()
    with tempfile.TemporaryDirectory(prefix="ollafleet-src-") as tmp:
        for name in SOURCES:
            src = root / name
            if src.is_dir():
                shutil.copytree(src, Path(tmp) / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, Path(tmp) / name)
        text = _pip("wheel", "--no-deps", "--wheel-dir", str(out), tmp)
    found = _SAVED.findall(text) or sorted(str(p) for p in out.glob("ollafleet-*.whl"))
    if not found:
        raise BundleError("pip wheel wrote no ollafleet wheel")
    return Path(found[-1]) if Path(found[-1]).is_absolute() else out / Path(found[-1]).name


def requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return [Requirement(r) for r in Parser().parsestr(text).get_all("Requires-Dist") or []]


@dataclass
class Target:
    platform: str
    python: str
    wanted: dict[str, SpecifierSet] = field(default_factory=dict)
    extras: dict[str, set[str]] = field(default_factory=dict)
    got: dict[str, Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**PLATFORMS[self.platform][1], "python_version": self.python, "python_full_version": f"{self.python}.0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "platform_release": "", "platform_version": "", "implementation_version": f"{self.python}.0"}

    def add(self, reqs: list[Requirement], extras: set[str]) -> set[str]:
        """Take the requirements that apply to this target; the names whose wish grew."""
        changed: set[str] = set()
        for req in reqs:
            if req.marker is not None and not any(req.marker.evaluate({**self.env, "extra": e}) for e in extras):
                continue
            name = canonicalize_name(req.name)
            spec = self.wanted.get(name, SpecifierSet()) & req.specifier
            if name not in self.wanted or str(spec) != str(self.wanted[name]) or \
                    not set(req.extras) <= self.extras.get(name, set()):
                changed.add(name)
            self.wanted[name] = spec
            self.extras.setdefault(name, set()).update(req.extras)
        return changed

    def satisfied(self, name: str) -> bool:
        return name in self.got and self.wanted[name].contains(parse_wheel_filename(self.got[name].name)[1], True)

    def fetch(self, names: set[str], out: Path) -> list[str]:
        tags, _ = PLATFORMS[self.platform]
        abi = "cp" + self.python.replace(".", "")
        args = ["download", "--no-deps", "--only-binary=:all:", "--dest", str(out), "--python-version", self.python,
                "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
        for tag in tags:
            args += ["--platform", tag]
        args += [f"{n}{self.wanted[n]}" for n in sorted(names)]
        fetched: list[str] = []
        for path in _SAVED.findall(_pip(*args)):
            wheel = Path(path) if Path(path).is_absolute() else out / Path(path).name
            name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
            self.got[name] = out / wheel.name
            fetched.append(name)
        return fetched


def collect(target: Target, root_reqs: list[Requirement], out: Path) -> None:
    """Fetch the closure of `root_reqs` for one platform and Python version."""
    pending = target.add(root_reqs, {""})
    for _ in range(50):
        if not pending:
            return
        missing = {n for n in pending if not target.satisfied(n)}
        fetched = target.fetch(missing, out) if missing else []
        pending_next: set[str] = set()
        for name in set(fetched) | (pending - missing):       # new wheels, and ones asked with more extras
            pending_next |= target.add(requires(target.got[name]), target.extras.get(name, set()) | {""})
        pending = pending_next
    raise BundleError(f"{target.platform} / Python {target.python}: the requirements do not settle")


INSTALL = """ollafleet {version}, offline bundle: wheels for {targets}.

On the offline PC (Python {pythons}, 64-bit):

  python -m venv ollafleet-venv
  ollafleet-venv/bin/pip install --no-index --find-links {dirname} ollafleet        (Linux)
  ollafleet-venv\\Scripts\\pip install --no-index --find-links {dirname} ollafleet    (Windows)

then `ollafleet validate desired_state.toml` checks the file, and `ollafleet daemon` runs the
service (examples/service/ in the repository has a systemd unit and notes for Windows).
Nothing here needs a network: --no-index makes pip read this folder only.
"""


def bundle(out: Path, platforms: list[str], pythons: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    own = own_wheel(out)
    for platform in platforms:
        for python in pythons:
            print(f"bundle: {platform} / Python {python}", file=sys.stderr)
            collect(Target(platform, python), requires(own), out)
    version = parse_wheel_filename(own.name)[1]
    (out / "INSTALL.txt").write_text(INSTALL.format(
        version=version, targets=", ".join(f"{p} x86_64" for p in platforms), pythons=" or ".join(pythons),
        dirname=out.name))
    return sorted(out.glob("*.whl"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write the wheels into")
    p.add_argument("--platform", action="append", choices=sorted(PLATFORMS), default=None,
                   help="a target platform (repeatable; default: linux and windows, x86_64)")
    p.add_argument("--python", action="append", choices=PYTHONS, default=None,
                   help="a target Python version (repeatable; default: 3.11 and 3.12)")


def cmd_bundle(args: argparse.Namespace) -> int:
    try:
        wheels = bundle(Path(args.output), args.platform or list(PLATFORMS), args.python or list(PYTHONS))
    except BundleError as exc:
        print(f"ollafleet bundle: {exc}", file=sys.stderr)
        return 1
    print(f"ollafleet bundle: wrote {len(wheels)} wheels and INSTALL.txt to {args.output}", file=sys.stderr)
    return 0
