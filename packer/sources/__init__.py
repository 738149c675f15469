"""Raw adapters: a dataset's original release files -> the Step-2 manifest (and OCR) of INPUTS.md.

    python -m packer.sources DATASET RAW_DIR [--images DIR ...] -o data_manifest.jsonl

Each adapter reads the files as the dataset's authors released them, checks their shape (columns,
JSON, ids) and names the file, line and field of anything it cannot read. Label *values* are
passed on verbatim under their original names: whether a value maps is the taxonomy's business,
so an odd value becomes a failed example at packing, with its reason, never a crash here.

One module per release format (hateful_memes.py, mami.py, ...), each listing the datasets it
converts in `DATASETS`; common.py holds what they share and cli.py the command. A ninth dataset is
a new module here and a block in label_taxonomy.json: every module of this package is found and
registered below, with no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from .common import Converted, Dataset, Images, Options, SourceError

# Modules of this package that hold no adapters.
NOT_ADAPTERS = {"common", "cli", "__main__"}


def _registered() -> dict[str, Dataset]:
    found: dict[str, Dataset] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_ADAPTERS):
        for dataset in importlib.import_module(f"{__name__}.{module}").DATASETS:
            if dataset.name in found:
                raise RuntimeError(f"dataset {dataset.name!r} is registered by two adapter modules")
            found[dataset.name] = dataset
    return found


DATASETS: dict[str, Dataset] = _registered()

from .cli import convert, main  # noqa: E402  (the command uses the registry above)

__all__ = ["DATASETS", "Converted", "Dataset", "Images", "Options", "SourceError", "convert", "main"]
