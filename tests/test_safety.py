"""packer touches only its own files: ownership, no overlap with inputs, no link followed, one writer
per folder, nothing blocks, malformed input never a traceback, input text inert everywhere it shows."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import CORPUS_CLIPS, CORPUS_POSTS, MAMI, N_IMAGES, Workspace, command, make_jpeg

ESCAPES = ("\x1b]0;PWNED\x07", "\x1b]52;c;cHduZWQ=\x07", "\x1b[2K\x1b[1A", "\x9b31m", "\x7f")
HOSTILE = (
    "".join(ESCAPES) + "<img src=https://evil.example/x.png onerror=alert(1)>|x|\n# heading\n[a](javascript:alert(1))"
)


def controls(text: str) -> list[str]:
    """The C0 (but newline), DEL and C1 characters of a text."""
    return [c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F]


def tree(root: Path) -> dict[str, str]:
    """Every path under `root` (links as links) with its bytes' SHA-256: what must not change."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link -> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def pack(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m packer` as a user runs it, with one worker (the parent runs the tasks, as
    conftest's Workspace.run does): what these tests check (which files a run touches, what it
    refuses, what it prints) is the parent's doing; the pool's part is tested where --workers is
    given (the corpus runs below, tests/test_cli.py, test_resume.py)."""
    workers = () if "--workers" in args else ("--workers", "1")
    return subprocess.run([sys.executable, "-m", "packer", *args, *workers], cwd=cwd, capture_output=True,
                          timeout=timeout)  # fmt: skip


def one_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8")
    assert text.count("\n") == 1 and text.startswith("error: ") and "Traceback" not in text, text
    return text


@pytest.fixture
def dataset(tmp_path: Path) -> Workspace:
    """A dataset folder laid out as releases are, images in train/ and test/, with its manifest."""
    ws = Workspace(tmp_path)
    data = tmp_path / "hm"
    for split in ("train", "test"):
        for i in range(3):
            path = make_jpeg(data / split / f"{i}.jpg", colour=(40 * i, 90, 200))
            ws.add(f"mami_{split}_{i}", "mami", split, MAMI, image=path, text=f"caption {split} {i}")
    ws.write()
    return ws


# -- 1. ownership ----------------------------------------------------------------------------------
def test_output_dir_over_a_dataset_folder_changes_nothing(dataset: Workspace, tmp_path: Path):
    data = tmp_path / "hm"
    before = tree(tmp_path)
    run = pack(dataset.args()[:4] + ["--output-dir", str(data), *dataset.args()[6:]], tmp_path)
    assert run.returncode == 2
    line = one_line(run.stderr)
    assert f"{data / 'test'}: was not written by packer" in line and "choose another --output-dir" in line
    assert tree(tmp_path) == before


def test_foreign_file_in_a_packer_folder_is_refused_and_the_users_files_beside_stats_stay(dataset, tmp_path):
    (dataset.out).mkdir(parents=True)
    keep = {dataset.out / ".gitkeep": b"", dataset.out / "train.sh": b"#!/bin/sh\necho mine\n"}
    for path, data in keep.items():
        path.write_bytes(data)
    assert pack(dataset.args(), tmp_path).returncode == 0
    assert pack(dataset.args(), tmp_path).returncode == 0  # packer's own outputs are replaced
    assert all(path.read_bytes() == data for path, data in keep.items())
    assert (dataset.out / "shards" / ".packer").is_file()
    stray = dataset.out / "shards" / "train" / "notes.txt"
    stray.write_text("my notes")
    before = tree(tmp_path)
    run = pack(dataset.args(), tmp_path)
    assert run.returncode == 2 and f"{stray}: was not written by packer" in one_line(run.stderr)
    assert tree(tmp_path) == before


def test_what_energon_prepare_adds_to_nv_meta_is_replaced_and_a_stranger_there_is_refused(dataset, tmp_path):
    """`energon prepare` (which the README gives for other energon versions) adds its sample index
    to .nv-meta/: a re-pack accepts it and removes it with packer's own metadata, then writes that
    anew. Any other file there is the user's: the run exits 2 and changes nothing."""
    assert pack(dataset.args(), tmp_path).returncode == 0
    meta = dataset.out / "shards" / ".nv-meta"
    written = {p.name: p.read_bytes() for p in meta.iterdir()}
    assert set(written) >= {".info.json", "split.yaml", "dataset.yaml"}
    for name in ("index.sqlite", "index.uuid"):
        (meta / name).write_bytes(b"energon's")
    assert pack(dataset.args(), tmp_path).returncode == 0
    assert {p.name: p.read_bytes() for p in meta.iterdir()} == written
    stray = meta / "my_notes.txt"
    stray.write_text("mine")
    before = tree(tmp_path)
    run = pack(dataset.args(), tmp_path)
    assert run.returncode == 2 and f"{stray}: was not written by packer" in one_line(run.stderr)
    assert tree(tmp_path) == before


def test_a_stats_file_packer_did_not_write_is_never_replaced(dataset, tmp_path):
    dataset.out.mkdir(parents=True)
    mine = dataset.out / "stats.json"
    mine.write_text('{"my": "experiment log"}')
    run = pack(dataset.args(), tmp_path)
    assert run.returncode == 2 and "stats.json: exists and is not a packer stats.json" in one_line(run.stderr)
    assert mine.read_text() == '{"my": "experiment log"}' and not (dataset.out / "shards").exists()


# -- 2. outputs never overlap inputs ---------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--stats", "--splits", "--label-taxonomy"])
def test_an_output_given_the_manifests_path_is_refused(dataset, tmp_path, flag):
    before = tree(tmp_path)
    args = [a for a in dataset.args()]
    if flag in args:
        args[args.index(flag) + 1] = str(dataset.manifest)
    else:
        args += [flag, str(dataset.manifest)]
    run = pack(args, tmp_path)
    assert run.returncode == 2
    line = one_line(run.stderr)
    assert "would overwrite the manifest" in line and str(dataset.manifest) in line
    assert tree(tmp_path) == before


def test_an_image_inside_the_output_folder_is_refused(tmp_path):
    ws = Workspace(tmp_path)
    image = make_jpeg(ws.out / "shards" / "x.jpg")
    ws.add("mami_train_0", "mami", "train", MAMI, image=image)
    ws.write()
    (ws.out / "shards" / ".packer").write_text("planted marker")  # even a folder that claims to be packer's
    before = tree(tmp_path)
    run = pack(ws.args(), tmp_path)
    assert run.returncode == 2 and "x.jpg" in one_line(run.stderr)
    assert tree(tmp_path) == before


# -- 3. links are never followed out ---------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "stats.json.tmp",
        "splits.json.tmp",
        "README.md.tmp",
        "report.html.tmp",
        "failures.jsonl.tmp",
        "RUN_INCOMPLETE",
        "label_taxonomy.json.tmp",
    ],
)
def test_a_link_at_a_temporary_or_marker_name_is_refused(dataset, tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("irreplaceable")
    dataset.out.mkdir(parents=True)
    (dataset.out / name).symlink_to(victim)
    run = pack(dataset.args(), tmp_path)
    assert run.returncode == 2 and "is a symbolic link" in one_line(run.stderr)
    assert victim.read_text() == "irreplaceable"


def test_a_dangling_taxonomy_link_never_creates_its_target(dataset, tmp_path):
    target = tmp_path / "elsewhere" / "taxonomy.json"
    target.parent.mkdir()
    dataset.out.mkdir(parents=True)
    (dataset.out / "label_taxonomy.json").symlink_to(target)
    assert pack(dataset.args(), tmp_path).returncode == 0
    assert not target.exists() and not (dataset.out / "label_taxonomy.json").is_symlink()


@pytest.mark.parametrize("where", ["train", ".run", "train/shard-00001.tar.tmp"])
def test_a_link_inside_the_shards_folder_is_refused(dataset, tmp_path, where):
    assert pack(dataset.args(), tmp_path).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "unrelated.bin").write_bytes(b"not packer's")
    link = dataset.out / "shards" / where
    if link.is_dir():
        for f in link.iterdir():
            f.unlink()
        link.rmdir()
    link.symlink_to(other, target_is_directory=True)
    run = pack(dataset.args(), tmp_path)
    assert run.returncode == 2 and "is a" in one_line(run.stderr) and "link" in run.stderr.decode()
    assert tree(other) == {"unrelated.bin": hashlib.sha256(b"not packer's").hexdigest()}


def test_an_output_folder_that_is_itself_a_link_keeps_working(dataset, tmp_path):
    real = tmp_path / "disk" / "shards"
    real.mkdir(parents=True)
    dataset.out.mkdir(parents=True)
    (dataset.out / "shards").symlink_to(real, target_is_directory=True)
    assert pack(dataset.args(), tmp_path).returncode == 0
    assert sorted(p.name for p in (real / "train").glob("*.tar")) == [f"shard-0000{i}.tar" for i in range(3)]


# -- 4. one writer per folder ----------------------------------------------------------------------
def journal_has_shard(out: Path) -> bool:
    journal = out / "shards" / ".run" / "journal.jsonl"
    return journal.is_file() and '"shard"' in journal.read_text()


def start_until_a_shard(corpus: Path, out: Path, **popen) -> subprocess.Popen:
    """A pack of the corpus into `out`, started and running until it has finished its first shard."""
    run = subprocess.Popen(command(corpus, out), cwd=out.parent, **popen)
    deadline = time.monotonic() + 120
    while not journal_has_shard(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert journal_has_shard(out) and run.poll() is None
    return run


@pytest.mark.slow  # whole runs of the corpus, raced or killed
def test_a_second_run_on_the_same_folder_exits_2_naming_the_holder(corpus, tmp_path):
    out = tmp_path / "Step_3"
    first = start_until_a_shard(corpus, out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True)
    assert second.returncode == 2
    line = one_line(second.stderr)
    assert f"another packer run (pid {first.pid} on {socket.gethostname()})" in line
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert (out / "stats.json").is_file() and not (out / "shards" / ".lock").exists()


@pytest.mark.slow  # whole runs of the corpus, raced or killed
def test_two_runs_started_together_one_packs_one_exits_2(corpus, tmp_path):
    out = tmp_path / "Step_3"
    runs = [subprocess.Popen(command(corpus, out), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    runs.append(subprocess.Popen(command(corpus, out), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = [(r.wait(timeout=240), r.stderr.read()) for r in runs]
    assert sorted(code for code, _ in done) == [0, 2], done
    loser = next(err for code, err in done if code == 2)
    assert "another packer run (pid " in one_line(loser)
    assert json.loads((out / "stats.json").read_text())["packed_examples"] == N_IMAGES + CORPUS_POSTS + CORPUS_CLIPS


@pytest.mark.slow  # whole runs of the corpus, raced or killed
def test_a_run_killed_with_sigkill_never_blocks_its_resume(corpus, tmp_path):
    out = tmp_path / "Step_3"
    run = start_until_a_shard(corpus, out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert (out / "shards" / ".lock").read_text().split()[0] == str(run.pid)  # left behind, and stale
    rerun = subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stdout


# -- 5. nothing blocks -----------------------------------------------------------------------------
def test_paths_that_are_not_regular_files_fail_their_example_and_never_block(tmp_path):
    ws = Workspace(tmp_path)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.jpg"))
    weird = {"fifo": str(fifo), "dir": str(folder), "socket": str(tmp_path / "s.jpg"), "device": "/dev/zero"}
    for name, path in weird.items():
        ws.add(f"mami_train_{name}", "mami", "train", MAMI, image=path)
        ws.add(f"mami_train_{name}2", "mami", "train", MAMI, image=path)  # shared size: hashed when regular
    ws.add("mami_train_ok", "mami", "train", MAMI, image=ws.image("ok.jpg"))
    ws.write()
    run = pack(ws.args(), tmp_path, timeout=120)
    sock.close()
    assert run.returncode == 1, run.stderr  # 8 of 9 failed: the failure-rate check fails
    failures = ws.failures()
    assert sorted(f["id"] for f in failures) == sorted(f"mami_train_{n}{s}" for n in weird for s in ("", "2"))
    assert {f["reason"] for f in failures} == {"image_not_a_file"}
    details = " ".join(f["detail"] for f in failures)
    for kind in ("a named pipe", "a folder", "a socket", "a device"):
        assert kind in details
    assert ws.stats["packed_examples"] == 1


# -- 6. malformed input, however deep or large -----------------------------------------------------
@pytest.mark.parametrize("where", ["ignored_field", "labels_raw"])
def test_json_nested_2000_deep_is_an_input_error_naming_the_line(tmp_path, where):
    ws = Workspace(tmp_path)
    ws.add("mami_train_0", "mami", "train", MAMI, text="fine")
    ws.write()
    deep = "[" * 2000 + "]" * 2000
    row = json.dumps({"id": "mami_train_1", "dataset": "mami", "split": "train", "text_raw": "x", "labels_raw": MAMI})
    if where == "labels_raw":
        row = row.replace('"misogynous": 1', f'"misogynous": {deep}')
    else:
        row = row[:-1] + f', "junk": {deep}}}'
    with open(ws.manifest, "a") as handle:
        handle.write(row + "\n")
    run = pack(ws.args(), tmp_path)
    assert run.returncode == 2
    assert f"{ws.manifest}: line 2: " in one_line(run.stderr)
    assert not ws.out.exists()


# -- 7. inert text ---------------------------------------------------------------------------------
def test_control_characters_never_reach_the_terminal(tmp_path):
    ws = Workspace(tmp_path)
    ws.add("mami_train_0", "mami", "train" + HOSTILE, MAMI, text="a")
    ws.add("mami_train_1", "mami", "train", MAMI, text="b")
    ws.write()
    run = pack(ws.args(), tmp_path)
    assert run.returncode == 1  # 1 of 2 failed
    assert "\\x1b]0;PWNED\\x07" in run.stdout.decode()
    dupes = Workspace(tmp_path / "dupes")
    for text in ("first", "second"):  # two different rows with one id (identical lines would be dropped)
        dupes.add("mami_train_" + HOSTILE, "mami", "train", MAMI, text=text)
    dupes.write()
    again = pack(dupes.args(), tmp_path)
    assert again.returncode == 2 and "appear more than once" in one_line(again.stderr)
    for stream in (run.stdout, run.stderr, again.stdout, again.stderr):
        assert controls(stream.decode("utf-8")) == []


def test_the_card_keeps_every_input_string_inert(tmp_path):
    from markdown_it import MarkdownIt

    ws = Workspace(tmp_path)
    ws.add("mami_train_0", "mami", "train" + HOSTILE, MAMI, text="a")
    for i in range(1, 4):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI, text=f"b{i}")
    ws.add("mami_train_9", "mami", "train", {"misogynous": "<script>x</script>|" + HOSTILE}, text="c")
    ws.write()
    assert pack(ws.args(), tmp_path).returncode == 1
    card = (ws.out / "README.md").read_text(encoding="utf-8")
    front, body = card.split("---\n", 2)[1:]
    assert [c["config_name"] for c in yaml.safe_load(front)["configs"]] == ["text"]
    assert controls(body) == []
    html = MarkdownIt("gfm-like").render(body)
    # No element made from input: no image, link, script or heading (the text shows escaped, in code).
    for bad in ("<img", "<a ", "href=", "<script", "<h1>heading"):
        assert bad not in html, bad
    assert "&lt;img src=https://evil.example/x.png onerror=alert(1)&gt;" in html
    assert "<h1>" not in html.split("</h1>", 1)[1]  # one title; no heading injected
    assert html.count("<h2>") == card.count("\n## ")
    # Every table row has as many cells as its header.
    for table in html.split("<table>")[1:]:
        table = table.split("</table>")[0]
        widths = {row.count("<td") + row.count("<th") for row in table.split("<tr>")[1:]}
        assert len(widths) == 1, table
    assert "PWNED" in html  # shown, inert, in a code span


# -- 8. a bounded report ---------------------------------------------------------------------------
def test_report_texts_are_cut_and_the_shard_keeps_them_whole(tmp_path):
    ws = Workspace(tmp_path)
    long_text = "hateful " * 250_000  # 2,000,000 characters
    for i in range(3):
        ws.add(
            f"mami_train_{i}",
            "mami",
            "train",
            MAMI,
            image=ws.image(f"{i}.jpg", colour=(i * 60, 0, 0)),
            text=long_text + str(i),
        )
    ws.write()
    assert pack(ws.args(), tmp_path).returncode == 0
    report = (ws.out / "report.html").read_text(encoding="utf-8")
    assert len(report.encode()) < 1_500_000
    assert report.count("more characters]") >= 3
    texts = []
    for shard in sorted((ws.out / "shards" / "train").glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            texts += [tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".txt")]
    assert len(texts) == 3 and all(len(t) > 2_000_000 for t in texts)


def test_rebuilding_the_report_never_replaces_a_report_packer_did_not_write(tmp_path):
    (tmp_path / "stats.json").write_text("{}")
    (tmp_path / "report.html").write_text("<html>my own page</html>")
    run = subprocess.run([sys.executable, "-m", "packer.report", str(tmp_path)], capture_output=True)
    assert run.returncode == 2 and "is not a packer report" in one_line(run.stderr)
    assert (tmp_path / "report.html").read_text() == "<html>my own page</html>"


def test_an_output_inside_the_shards_folder_is_refused_up_front(dataset, tmp_path):
    args = dataset.args()
    args[args.index("--splits") + 1] = str(dataset.out / "shards" / "splits.json")
    run = pack(args, tmp_path)
    assert run.returncode == 2 and "would lie inside the output folder" in one_line(run.stderr)
    assert not dataset.out.exists()


@pytest.mark.parametrize("flag", ["--splits", "--label-taxonomy"])
def test_a_pipe_given_as_splits_or_taxonomy_is_refused_and_kept(dataset, tmp_path, flag):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    args = dataset.args()
    args[args.index(flag) + 1] = str(fifo)
    run = pack(args, tmp_path, timeout=60)
    assert run.returncode == 2 and "is not a regular file" in one_line(run.stderr)
    assert fifo.is_fifo()


def test_a_pack_made_before_the_marker_is_recognised_by_its_layout(dataset, tmp_path):
    assert pack(dataset.args(), tmp_path).returncode == 0
    (dataset.out / "shards" / ".packer").unlink()  # as an older packer left it
    assert pack(dataset.args(), tmp_path).returncode == 0
    assert (dataset.out / "shards" / ".packer").is_file()
    (dataset.out / "shards" / ".packer").unlink()
    for index in (dataset.out / "shards").glob("*/index*.json"):
        index.unlink()  # shard names alone do not make a folder packer's
    before = tree(tmp_path)
    run = pack(dataset.args(), tmp_path)
    assert run.returncode == 2 and "was not written by packer" in one_line(run.stderr)
    assert tree(tmp_path) == before
