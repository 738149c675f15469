"""A venv of its own beside packer's, for tools that must not share packer's environment (energon
needs PyPI's Pillow; the naive baseline runs as a user has it; the wheel test installs packer's
wheel), built once and re-used until what it installs changes.

    python scripts/side_venv.py FOLDER [--extra NAME] [--requirement REQ ...] [--warm MODULE ...]

The venv is keyed by what it installs: the Python it runs on, the requirement lines (an extra of
pyproject.toml, or the lines given) and the modules warmed. FOLDER/.installed holds the key of the
finished install; a run with the same key does nothing, another key (or a half-built folder)
removes FOLDER and builds it again. Two runs at once take turns (a lock beside FOLDER).

Where the modules its users import are known (WARM, --warm), pip installs without compiling every
module to bytecode (most of torch is never imported: about 20 s instead of 40 s for the energon
venv) and those modules are imported once with bytecode written, so that every later process
starts as fast as from a compiled install. The tests build the venvs they need through `ensure`
(tests/test_energon.py, test_wheel.py); `make energon` and `make profile` through this script.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MARKER = ".installed"
# What each extra's users import: warmed after the install (see the module's docstring).
WARM = {
    "energon": ["megatron.energon", "megatron.energon.cli.main", "torch.utils.data"],
    "naive-baseline": ["webdataset", "PIL.Image"],
}


def extra(name: str) -> list[str]:
    """The requirement lines of one optional-dependency list of pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return list(tomllib.load(handle)["project"]["optional-dependencies"][name])


def key(requirements: list[str], warm: list[str]) -> str:
    """What the venv is made of: its Python (this one: path and version), the requirement lines and
    the modules warmed."""
    spec = {"python": [str(Path(sys.executable).resolve()), sys.version], "requirements": sorted(requirements),
            "warm": sorted(warm)}  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def ensure(folder: Path, requirements: list[str], warm: list[str] = ()) -> bool:
    """Make `folder` a venv with `requirements` installed unless it already is one for this key;
    returns whether it was built now. Raises CalledProcessError when pip fails (the folder is then
    left without its marker, so the next run starts over)."""
    wanted = key(requirements, list(warm))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = folder / MARKER
        if marker.is_file() and marker.read_text().strip() == wanted:
            return False
        if folder.is_symlink() or folder.is_file():
            raise SystemExit(f"{folder}: not a folder this script made; remove it or choose another")
        if folder.exists():
            if not (folder / "pyvenv.cfg").is_file():
                raise SystemExit(f"{folder}: not a venv; remove it or choose another")
            shutil.rmtree(folder)
        run([sys.executable, "-m", "venv", *([] if requirements else ["--without-pip"]), str(folder)])
        python = str(folder / "bin" / "python")
        if requirements:
            # With modules to warm, only those get bytecode; else pip compiles everything, as by default.
            run([python, "-m", "pip", "install", "-q", *(["--no-compile"] if warm else []), *requirements])
        if warm:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            run([python, "-c", "".join(f"import {module}\n" for module in warm)], env=env)
        marker.write_text(wanted + "\n")
        return True


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run a build step quietly; a failing one raises with the end of what it printed."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr[-3000:])


def ensure_extra(folder: Path, name: str) -> bool:
    """`ensure` for one optional-dependency list of pyproject.toml, warming what its users import."""
    return ensure(folder, extra(name), WARM.get(name, []))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--extra", help="install this optional-dependency list of pyproject.toml")
    p.add_argument("--requirement", action="append", default=[], help="install this requirement line")
    p.add_argument("--warm", action="append", default=[], help="import this module once, writing its bytecode")
    args = p.parse_args()
    requirements = (extra(args.extra) if args.extra else []) + args.requirement
    warm = (WARM.get(args.extra, []) if args.extra else []) + args.warm
    try:
        built = ensure(args.folder, requirements, warm)
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(exc.stderr or "")
        raise SystemExit(f"{args.folder}: {' '.join(exc.cmd[:4])} ... failed (exit {exc.returncode})") from None
    print(f"{args.folder}: {'built' if built else 'up to date'} ({', '.join(requirements) or 'nothing installed'})")


if __name__ == "__main__":
    main()
