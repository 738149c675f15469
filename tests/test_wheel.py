"""`pip install .` (a wheel, not editable) into a venv of its own gives a packer that packs the
sample and rebuilds its report; building the wheel prints no packaging warnings.

The venv (.cache/wheel-venv) holds what the wheel requires for `packer[pillow]`, read from the
wheel's own METADATA: it is built once (scripts/side_venv.py, keyed by those requirement lines) and
re-used until they change; each run installs the new wheel into it (--force-reinstall: the last
run's packer is uninstalled first, file by file) and `pip check` proves every requirement met."""

from __future__ import annotations

import email
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from side_venv import ensure

pytestmark = pytest.mark.heavy  # a venv of its own

# What setuptools prints when the package configuration misses part of the tree.
PACKAGING_WARNINGS = ("SetuptoolsDeprecationWarning", "is absent from the `packages` configuration", "!!")
WHEEL_VENV = ROOT / ".cache" / "wheel-venv"


def requirements(wheel: Path, extra: str) -> list[str]:
    """The requirement lines the wheel's METADATA declares for `packer[extra]` on this machine."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
    wanted = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
            requirement.marker = None
            wanted.append(str(requirement))
    return wanted


def test_wheel_installs_into_its_own_venv_and_packs(tmp_path: Path):
    # Built from a copy of what the wheel is made of: pip builds in the source tree, which stays clean.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "packer", source / "packer", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    log = build.stdout + build.stderr
    assert [w for w in PACKAGING_WARNINGS if w in log] == []
    (wheel,) = dist.glob("packer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "packer/report/html.py",
        "packer/report/card.py",
        "packer/data/label_taxonomy.json",
        "packer/templates/report.html.j2",
        "packer/templates/dataset_card.md.j2",
    ):
        assert needed in names

    wanted = requirements(wheel, "pillow")
    assert any(r.startswith("polars") for r in wanted) and any(r.startswith("Pillow") for r in wanted)
    env = WHEEL_VENV
    ensure(env, wanted)
    python = env / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    location = subprocess.run(
        [str(python), "-c", "import packer; print(packer.__file__)"], capture_output=True, text=True, cwd=tmp_path
    )
    assert str(env) in location.stdout  # the wheel's packer, not the checkout's

    step2, out = tmp_path / "Step_2", tmp_path / "Step_3"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/make_sample_data.py"), "--out", str(step2), "--per-dataset", "12"],
        check=True,
        capture_output=True,
    )
    pack = subprocess.run(
        [
            str(env / "bin" / "pack-examples"),
            "--manifest", str(step2 / "data_manifest.jsonl"),
            "--ocr", str(step2 / "ocr.jsonl"),
            "--output-dir", str(out / "shards"),
            "--label-taxonomy", str(out / "label_taxonomy.json"),
            "--splits", str(out / "splits.json"),
            "--include-diagnostics",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )  # fmt: skip
    assert pack.returncode in (0, 1), pack.stderr  # 1: the sample's broken images fail the 0.5% check
    assert "packed " in pack.stdout and (out / "stats.json").is_file()
    assert sorted(p.name for p in (out / "shards" / "train").glob("index*.json")) == [
        "index.images.json",
        "index.json",
        "index.text.json",
        "index.video.json",  # the sample's clips
    ]
    report = out / "report.html"
    first = hashlib.sha256(report.read_bytes()).hexdigest()
    report.unlink()
    rebuild = [str(python), "-m", "packer.report", str(out)]
    rebuilt = subprocess.run(rebuild, capture_output=True, text=True, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert hashlib.sha256(report.read_bytes()).hexdigest() == first
