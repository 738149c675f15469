"""What keeps packer from harming what is not its own.

- **Ownership.** The shards folder carries a marker (`.packer`); packer writes into a folder only
  when it is new, empty, or marked and holding nothing but packer's own names. The files packer
  writes beside stats.json (stats, card, report, failures, the incomplete note) are replaced only
  when their content shows packer wrote them. Checked before anything changes (exit 2).
- **No overlap.** No output is, or contains, an input (manifest, OCR file, an image the plan reads),
  and no two outputs are the same file.
- **No link followed out.** Files are created exclusively (`O_EXCL | O_NOFOLLOW`), never through an
  existing link; a symlink at any name packer writes inside its tree is refused.
- **One writer.** An OS lock (`flock`) on `<output dir>/.lock`, held for the run: it dies with the
  process, so a run killed with `kill -9` never blocks its own resume.
- **Inert text.** `inert()` shows control characters escaped, for every input-derived string that
  reaches a terminal.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

from .config import DIAGNOSTICS, SPLITS, InputError, OutputError

MARKER = ".packer"
MARKER_TEXT = "written by packer: this folder's contents are packer's own and are replaced by its next run\n"
LOCK = ".lock"
WORK_DIRS = (".run", ".chunks")  # the run state and the loky workers' chunk files
SPLIT_DIRS = (*SPLITS, DIAGNOSTICS)
# Names packer writes in a split folder, and in its work folders (temporary names included).
SPLIT_FILE = re.compile(
    r"(shard|text|video)-\d{5}\.tar(\.tmp|\.idx|\.idx\.tmp)?|index(\.images|\.text|\.video)?\.json(\.tmp)?"
)
WORK_FILE = re.compile(r"(state|pins)\.json(\.tmp)?|journal\.jsonl|[A-Za-z0-9_-]+\.part")
# Top-level names in the shards folder besides the split and work folders.
ROOT_FILE = re.compile(r"\.packer|\.lock|(samples|\.sources)\.parquet(\.tmp)?")
ROOT_DIRS = (".nv-meta",)
# During a re-pack: the earlier pack's shards, catalog, stat cache and failures log, read for reuse and the
# comparison, removed when the run completes.
PREVIOUS = ".previous"
PREVIOUS_FILE = re.compile(r"samples\.parquet|\.sources\.parquet|failures\.jsonl(\.tmp)?")
# .nv-meta/: packer's energon metadata, and what `energon prepare` adds there (its sample index).
META_FILE = re.compile(
    r"[A-Za-z0-9_.-]+\.(yaml|json)(\.tmp)?|index\.(sqlite|uuid)(-journal|-wal|-shm)?|join_index\.bin"
)

# C0, DEL, C1, and the Unicode line separators and bidirectional overrides that rearrange a terminal line.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def inert(text: object) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\u202e`): safe to print."""

    def escape(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return CONTROL.sub(escape, str(text))


def error_exit(exc: InputError | OutputError) -> int:
    """Print an input or output error as packer's one line (inert); its exit code: 2 input, 3 output."""
    print(f"error: {inert(exc)}", file=sys.stderr)
    return 2 if isinstance(exc, InputError) else 3


def _refuse(path: Path, why: str, todo: str) -> InputError:
    return InputError(f"{path}: {why}; {todo}")


def _foreign(path: Path, folder: Path) -> InputError:
    return _refuse(
        path,
        "was not written by packer",
        f"packer replaces the contents of its output folder {folder}, so it writes only into a new, empty or "
        "packer-made folder: move that file away or choose another --output-dir",
    )


def _check_tree(folder: Path, names: re.Pattern[str], owner: Path) -> None:
    """Every entry of a folder packer writes into is a regular file with one of packer's names."""
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            check_no_link(entry)
        if not (entry.is_file() and names.fullmatch(entry.name)):
            raise _foreign(entry, owner)


def check_shard_folder(root: Path) -> None:
    """The shards folder (`--output-dir`): new, empty, or packer's own holding only its names.

    packer's own: it carries the marker, or (a pack made before the marker existed) every entry
    bears packer's names and a split folder holds packer's index.json."""
    if not os.path.lexists(root):
        return
    if not root.is_dir():
        raise _refuse(root, "exists and is not a folder", "choose another --output-dir")
    entries = sorted(root.iterdir())
    if not entries:
        return
    marker = root / MARKER
    if marker.is_symlink() or (os.path.lexists(marker) and not marker.is_file()):
        raise _foreign(marker, root)
    if not marker.is_file():
        indexed = any((root / split / "index.json").is_file() for split in SPLIT_DIRS)
        if not indexed:
            raise _foreign(entries[0], root)
    for entry in entries:
        if entry.name == PREVIOUS:
            check_previous(entry, root)
            continue
        if entry.name in (*SPLIT_DIRS, *WORK_DIRS, *ROOT_DIRS):
            if entry.is_symlink() or not entry.is_dir():
                raise _refuse(entry, "is a link or not a folder", "packer writes a folder of its own there: remove it")
            pattern = SPLIT_FILE if entry.name in SPLIT_DIRS else META_FILE if entry.name in ROOT_DIRS else WORK_FILE
            _check_tree(entry, pattern, root)
        elif entry.is_symlink():
            check_no_link(entry)
        elif not (entry.is_file() and ROOT_FILE.fullmatch(entry.name)):
            raise _foreign(entry, root)


def check_previous(folder: Path, root: Path) -> None:
    """`.previous/`: a folder (no link) of packer's split folders, catalog and failures log."""
    if folder.is_symlink() or not folder.is_dir():
        raise _refuse(folder, "is a link or not a folder", "packer writes a folder of its own there: remove it")
    for entry in sorted(folder.iterdir()):
        if entry.name in SPLIT_DIRS and entry.is_dir() and not entry.is_symlink():
            _check_tree(entry, SPLIT_FILE, root)
        elif entry.is_symlink() or not (entry.is_file() and PREVIOUS_FILE.fullmatch(entry.name)):
            raise _foreign(entry, root)


def remove_previous(root: Path) -> None:
    """Remove `.previous/` (packer's names only) once a re-pack is complete."""
    folder = root / PREVIOUS
    for split in SPLIT_DIRS:
        remove_owned(folder / split, SPLIT_FILE)
    remove_owned(folder, PREVIOUS_FILE)


def _is_packer_file(path: Path, kind: str) -> bool:
    """Whether a file beside stats.json holds what packer writes there (read, never trusted further)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(-1 if kind == "stats" else 1 << 16)  # stats.json is parsed whole
    except OSError:
        return False
    if kind == "stats":
        try:
            doc = json.loads(head)
        except (ValueError, RecursionError):
            return False
        return isinstance(doc, dict) and STATS_KEYS <= set(doc)
    if kind == "report":  # the marker, or the title of a report made before the marker existed
        return REPORT_MARKER.encode() in head or b"<title>packer report: " in head
    if kind == "failures":
        first = head.split(b"\n", 1)[0]
        if not first.strip():
            return not head.strip()
        try:
            doc = json.loads(first)
        except (ValueError, RecursionError):
            return False
        return isinstance(doc, dict) and {"id", "status", "stage", "reason"} <= set(doc)
    if kind == "incomplete":
        return head.startswith(INCOMPLETE_TEXT.encode())
    return CARD_MARKER.encode() in head


STATS_KEYS = {"total_examples", "packed_examples", "checks", "config", "versions"}
REPORT_MARKER = "<!-- written by packer: report.html -->"
# The card's first body line: a README.md without it is somebody else's and is never overwritten.
CARD_MARKER = "<!-- written by packer: a Hugging Face dataset card for WebDataset shards -->"
INCOMPLETE = "RUN_INCOMPLETE"
INCOMPLETE_TEXT = (
    "packer is writing this folder, or a run writing it was interrupted: nothing here is a complete\n"
    "pack until stats.json exists. Rerun the same command to resume (--fresh starts over).\n"
)


def check_no_link(path: Path) -> None:
    if path.is_symlink():
        raise _refuse(path, "is a symbolic link", "packer never writes through a link: remove it")


def check_owned_file(path: Path, kind: str, flag: str) -> None:
    """A file packer is about to replace (and its temporary name) must be absent or packer's own."""
    for candidate in (path, path.with_name(path.name + ".tmp")):
        check_no_link(candidate)
    if os.path.lexists(path) and not (path.is_file() and _is_packer_file(path, kind)):
        raise _refuse(
            path,
            f"exists and is not a packer {OWNED_KINDS[kind]}",
            f"packer writes its {OWNED_KINDS[kind]} there: move that file or choose another {flag}",
        )


OWNED_KINDS = {
    "stats": "stats.json",
    "card": "dataset card",
    "report": "report",
    "failures": "failures log",
    "incomplete": "RUN_INCOMPLETE note",
}


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_no_overlap(outputs: dict[str, Path], inputs: dict[str, Path]) -> None:
    """No output is, or contains, an input, and no two outputs are one file (paths resolved)."""
    outs = {name: _resolved(p) for name, p in outputs.items()}
    ins = {name: _resolved(p) for name, p in inputs.items()}
    for oname, opath in outs.items():
        for iname, ipath in ins.items():
            if _contains(opath, ipath):
                raise InputError(
                    f"{outputs[oname]}: the {oname} would overwrite the {iname} {inputs[iname]}: "
                    "choose an output path apart from the inputs"
                )
    seen: dict[Path, str] = {}
    for oname, opath in outs.items():
        if opath in seen:
            raise InputError(f"{outputs[oname]}: given as both the {seen[opath]} and the {oname}: choose two paths")
        seen[opath] = oname
    folder = outs.get("output folder")
    for oname, opath in outs.items():
        if folder is not None and oname != "output folder" and folder in opath.parents:
            raise InputError(
                f"{outputs[oname]}: the {oname} would lie inside the output folder {outputs['output folder']}, "
                "whose contents packer replaces: put it beside that folder (the default layout does)"
            )


def check_images_outside(outputs: dict[str, Path], images: Iterable[str]) -> None:
    """No image the plan reads lies in, or is, an output. The images are grouped by folder; each
    folder is resolved once and compared with the outputs (a million images: about a second)."""
    outs = {name: os.path.realpath(p) for name, p in outputs.items()}
    by_folder: dict[str, dict[str, str]] = {}  # folder as written -> {file name: image as written}
    for image in images:
        folder, name = os.path.split(image)
        by_folder.setdefault(folder, {}).setdefault(name, image)
    for folder, names in by_folder.items():
        real = os.path.realpath(folder or ".")
        for oname, out in outs.items():
            if real == out or real.startswith(out.rstrip(os.sep) + os.sep):
                image = next(iter(names.values()))
            elif os.path.dirname(out) == real and os.path.basename(out) in names:
                image = names[os.path.basename(out)]
            else:
                continue
            raise InputError(
                f"{outputs[oname]}: the {oname} holds the image {image}, which this run reads: "
                "choose an output path apart from the inputs"
            )


def create_exclusive(path: Path) -> int:
    """Open a new file for writing at `path`, never through a link: a leftover regular file at a
    name that is packer's own (a temporary of a killed run) is removed first; a link raises."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o644)
    except FileExistsError:
        if path.is_symlink() or not path.is_file():
            raise OSError(errno.EEXIST, "a link or a non-file stands at packer's temporary name", str(path)) from None
        path.unlink()
        return os.open(path, flags, 0o644)


class OutputLock:
    """One writer per output folder: `flock` on `<folder>/.lock`, which the OS releases when the
    process dies. Creating the folder, its marker and the lock are the run's first changes; on an
    input error they are undone (what this run created, nothing else)."""

    def __init__(self, root: Path):
        self.root = root
        self.fd: int | None = None
        self.created: list[Path] = []  # folders and files this run made, to undo on an input error

    def acquire(self) -> None:
        missing = []
        folder = self.root
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
                self.created.append(folder)
            except FileExistsError:
                pass  # another run made it meanwhile
            except OSError as exc:
                raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
        lock = self.root / LOCK
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                fd = os.open(lock, flags, 0o644)
            except OSError as exc:
                raise InputError(f"{lock}: cannot open the lock file: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                os.close(fd)
                pid, host = (holder + ["?", "?"])[:2]
                raise InputError(
                    f"{self.root}: another packer run (pid {pid} on {host}) is writing this folder: wait for "
                    "it, or choose another --output-dir"
                ) from None
            try:
                same = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed it as it finished: lock the file that is there now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        marker = self.root / MARKER
        if not marker.is_file():
            handle = create_exclusive(marker)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(MARKER_TEXT)
            self.created.append(marker)

    def undo(self) -> None:
        """An input error stopped the run: remove what acquire() created, then release."""
        if self.fd is None:
            return  # the lock was not ours: nothing of this run's to remove
        self.release()
        for path in reversed(self.created):
            try:
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
            except OSError:
                pass
        self.created = []

    def release(self) -> None:
        """The run ended: the lock file goes (while still held, so no other run holds it), then the lock."""
        if self.fd is not None:
            try:
                (self.root / LOCK).unlink()
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def remove_owned(folder: Path, names: re.Pattern[str], keep: Iterable[str] = ()) -> None:
    """Remove the files of `folder` that bear one of packer's `names` (never a link's target, never
    another file), except `keep`; then the folder itself if that left it empty."""
    if folder.is_symlink() or not folder.is_dir():
        return
    kept = set(keep)
    for entry in folder.iterdir():
        if entry.name not in kept and names.fullmatch(entry.name) and not entry.is_symlink() and entry.is_file():
            entry.unlink()
    try:
        folder.rmdir()
    except OSError:  # not empty: kept shards, or something that is not packer's
        pass
