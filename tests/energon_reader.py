"""Run by tests/test_energon.py in the energon venv (megatron-energon, torch, PyPI Pillow): load the
given split parts of a packer shards folder as a training job does, and print what each rank got.

    python energon_reader.py ROOT SPLIT_CONFIG DATASET_CONFIG WORLD_SIZE PART [PART ...]
    python energon_reader.py --jobs JSON    # a list of [ROOT, SPLIT_CONFIG, DATASET_CONFIG, WORLD_SIZE, [PART, ...]]

Prints one JSON object: {part: {rank: [[key, value], ...]}}, where value is the sample's id (a
crude sample cooked by the test's cooker), its text or its label; with --jobs, one JSON list of
them, in the jobs' order (one interpreter and one torch import for them all). Any sample that
fails raises (energon's default handler would log it and skip it silently).

With --jobs, each (job, part, rank) is loaded in its own process forked from this one (torch
imported once), 6 at a time: a load spends most of its second waiting for its DataLoader workers
to start and stop, so loads side by side cost little more than one.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

from megatron.energon import (
    Cooker,
    DefaultTaskEncoder,
    TextSample,
    WorkerConfig,
    basic_sample_keys,
    get_loader,
    get_val_dataset,
    stateless,
)
from megatron.energon.errors import reraise_exception


@stateless
def cook(crude: dict) -> TextSample:
    """A crude sample (decoded members) as a TextSample carrying its id from the .json member."""
    return TextSample(**basic_sample_keys(crude), text=crude["json"]["id"])


class CrudeEncoder(DefaultTaskEncoder):
    cookers = [Cooker(cook)]


def value(sample) -> object:
    if hasattr(sample, "label"):
        shape = list(sample.image.shape)
        return [sample.label, shape]
    return sample.text


def main() -> None:
    if sys.argv[1] == "--jobs":
        jobs = json.loads(sys.argv[2])
        loads = [
            (root, split, dataset, int(world), part, rank)
            for root, split, dataset, world, parts in jobs
            for part in parts
            for rank in range(int(world))
        ]
        with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("fork")) as pool:
            got = dict(zip(loads, pool.map(load_rank, *zip(*loads))))
        print(
            json.dumps(
                [
                    read(root, split, dataset, int(world), parts, lambda *load: got[load])
                    for root, split, dataset, world, parts in jobs
                ]
            )
        )
        return
    root, split_config, dataset_config, world, *parts = sys.argv[1:]
    print(json.dumps(read(root, split_config, dataset_config, int(world), parts)))


def read(root: str, split_config: str, dataset_config: str, world: int, parts: list[str], load=None) -> dict:
    """{part: {rank: what the rank got}}, each rank's part loaded by `load` (default: load_rank)."""
    load = load or load_rank
    return {part: {rank: load(root, split_config, dataset_config, world, part, rank) for rank in range(world)}
            for part in parts}  # fmt: skip


def load_rank(root: str, split_config: str, dataset_config: str, world: int, part: str, rank: int) -> list:
    """What rank `rank` of `world` gets of the split part, with 2 DataLoader workers."""
    encoder = CrudeEncoder() if dataset_config == "dataset.yaml" else DefaultTaskEncoder()
    config = WorkerConfig(rank=rank, world_size=world, num_workers=2, global_error_handler=reraise_exception)
    dataset = get_val_dataset(
        root,
        split_part=part,
        worker_config=config,
        batch_size=None,
        split_config=split_config,
        dataset_config=dataset_config,
        task_encoder=encoder,
    )
    return [[s.__key__, value(s)] for s in get_loader(dataset)]


if __name__ == "__main__":
    main()
