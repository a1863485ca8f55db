"""What `fattr attribute` writes, readable without fattr: safetensors shards and a JSON index.

    OUT/config.json                     the options of the run (a resume must match them)
    OUT/shards/batch-000042.safetensors one shard per batch: a tensor per input, keyed by its
                                        path relative to --inputs; the metadata entry "fattr"
                                        (JSON) lists the paths, targets, metric scores and the
                                        inputs that could not be read
    OUT/index.json                      written when every batch is done: for each input its
                                        shard, target, shape and scores; the skipped inputs

A shard is written to a temporary name and renamed, so a batch is either complete on disk or
absent: an interrupted run loses at most the batches in flight, and `--resume` runs exactly the
batches whose shard is missing.

>>> from safetensors.torch import load_file
>>> maps = load_file("out/shards/batch-000000.safetensors")      # {relative path: Tensor}
>>> index = json.load(open("out/index.json"))["files"]
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from torch import Tensor

from fattr.errors import FattrError

FORMAT = "fattr.attribute/1"
SHARDS = "shards"


def shard_path(out: Path, batch: int) -> Path:
    return out / SHARDS / f"batch-{batch:06d}.safetensors"


def finished_batches(out: Path) -> set[int]:
    """The batch numbers whose shard is on disk."""
    folder = out / SHARDS
    if not folder.is_dir():
        return set()
    return {int(p.stem.removeprefix("batch-")) for p in folder.glob("batch-*.safetensors")}


def remove_partial(out: Path) -> None:
    """Delete the temporary files of shards that were being written when a run stopped."""
    for partial in (out / SHARDS).glob("*.tmp"):
        partial.unlink(missing_ok=True)


def write_shard(out: Path, batch: int, maps: dict[str, Tensor], record: dict[str, Any]) -> Path:
    """One batch's maps (contiguous CPU tensors) and its record, atomically."""
    from safetensors.torch import save_file

    path = shard_path(out, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tensors = {key: value.detach().cpu().contiguous() for key, value in maps.items()}
    save_file(tensors, str(partial), metadata={"fattr": json.dumps(record)})
    os.replace(partial, path)
    return path


def shard_record(path: Path) -> dict[str, Any]:
    """The "fattr" metadata of a shard (read from its header, not its tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as shard:
        return json.loads(shard.metadata()["fattr"])


def write_index(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Gather every shard's record into OUT/index.json; returns the index."""
    files: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for batch in sorted(finished_batches(out)):
        path = shard_path(out, batch)
        record = shard_record(path)
        for i, name in enumerate(record["paths"]):
            entry = {"shard": path.relative_to(out).as_posix(), "target": record["targets"][i],
                     "shape": record["shapes"][i]}
            entry.update({m: scores[i] for m, scores in record["metrics"].items()})
            files[name] = entry
        skipped.update(record["skipped"])
    index = {"format": FORMAT, "config": config, "files": files, "skipped": skipped}
    partial = out / "index.json.tmp"
    partial.write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(partial, out / "index.json")
    return index


def load(out_dir: str | Path, metric: str | None = None) -> dict[str, Tensor]:
    """The maps `fattr attribute` wrote to `out_dir`, keyed by input path relative to
    `--inputs` (POSIX separators); with `metric` ("deletion", "insertion"), that score of each
    input as a 0-d tensor instead.

    >>> maps = fattr.run.load("out/attributions")
    >>> maps["cats/001.jpg"].shape            # the method's shape for one input, e.g. (1, 224, 224)
    """
    import torch
    from safetensors.torch import load_file

    out = Path(out_dir)
    index_path = out / "index.json"
    if not index_path.is_file():
        state = ("the run has not finished: run it again with --resume"
                 if (out / "config.json").is_file() else "no fattr attribute output there")
        raise FattrError(f"load: {str(index_path)!r} does not exist ({state}).")
    index = json.loads(index_path.read_text())
    if index.get("format") != FORMAT:
        raise FattrError(f"load: {str(index_path)!r} is not a {FORMAT} index.")
    files = index["files"]
    if metric is not None:
        known = sorted({k for e in files.values() for k in e} - {"shard", "target", "shape"})
        if metric not in known:
            raise FattrError(f"load: no {metric!r} scores in {str(out)!r}; it has "
                             f"{', '.join(known) or 'none (run with --metrics)'}.")
        return {name: torch.tensor(entry[metric]) for name, entry in files.items()}
    by_shard: dict[str, list[str]] = defaultdict(list)
    for name, entry in files.items():
        by_shard[entry["shard"]].append(name)
    maps: dict[str, Tensor] = {}
    for shard, names in by_shard.items():
        tensors = load_file(str(out / shard))
        maps.update({name: tensors[name] for name in names})
    return dict(sorted(maps.items()))
