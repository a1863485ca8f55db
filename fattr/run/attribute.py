"""`fattr attribute`: one method over a folder of images, sharded over torch.distributed ranks.

The sorted list of images is cut into batches of `batch_size`; batch b is a fixed set of files
whatever the number of processes, and its maps go to its own shard (`fattr.run.store`). Under
`torchrun --nproc-per-node N` (gloo on CPU, nccl on GPU) the batches still to do are dealt
round-robin to the ranks; every rank writes its own shards and rank 0 shows a progress bar and
writes the index at the end. Because batches and their random seeds do not depend on the
number of ranks, one process and N ranks write the same maps, and `--resume` after SIGTERM or a
crash runs exactly the batches whose shard is missing.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fattr import metrics
from fattr.errors import FattrError
from fattr.explain import build, method_info, predicted
from fattr.registry import METHODS
from fattr.run import store
from fattr.run.images import NORMALIZATIONS, find_images, normalized, pixel_map, read_image
from fattr.run.model import load_model

METRICS = ("deletion", "insertion")


@dataclass(frozen=True)
class Options:
    """A run of `fattr attribute` (the command line's options)."""

    model: str
    inputs: str
    out: str
    method: str = "gradcam"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None
    target: str | int = "predicted"
    size: int = 224
    normalize: str = "imagenet"
    batch_size: int = 32
    metrics: tuple[str, ...] = ()
    seed: int = 0
    resume: bool = False
    progress: bool = True

    def config(self) -> dict[str, Any]:
        """What defines the output: a resumed run must have the same."""
        chosen = asdict(self)
        for key in ("out", "resume", "progress"):
            chosen.pop(key)
        chosen["weights"] = None if self.weights is None else str(Path(self.weights).resolve())
        chosen["inputs"] = str(Path(self.inputs).resolve())
        return _json_form(chosen)


def attribute(options: Options) -> dict[str, Any] | None:
    """Run (or resume) `options`; rank 0 returns the index it wrote, the other ranks None."""
    _check(options)
    files = find_images(options.inputs)
    model = load_model(options.model, options.model_kwargs, options.weights)
    rank, world, device = _start_distributed()
    try:
        return _run(options, files, model.to(device), rank, world, device)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _run(options: Options, files: list[str], model: torch.nn.Module, rank: int, world: int,
         device: torch.device) -> dict[str, Any] | None:
    out = Path(options.out)
    batches = [files[i:i + options.batch_size] for i in range(0, len(files), options.batch_size)]
    config = {**options.config(), "files": len(files)}
    _check_output(out, config, options.resume)
    _barrier(world)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / store.SHARDS).mkdir(exist_ok=True)
        store.remove_partial(out)
        (out / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    _barrier(world)
    todo = [b for b in range(len(batches)) if b not in store.finished_batches(out)]
    mine = todo[rank::world]
    bar = _bar(options, batches, out) if rank == 0 else None
    runner = _Runner(options, model, device)
    for b in mine:
        runner.batch(out, b, batches[b])
        if bar is not None:
            done = store.finished_batches(out)
            bar.update(sum(len(batches[d]) for d in done) - bar.n)
    _barrier(world)
    if rank != 0:
        return None
    if bar is not None:
        bar.update(len(files) - bar.n)
        bar.close()
    index = store.write_index(out, config)
    print(f"fattr attribute: {len(index['files'])} maps of {len(files)} inputs "
          f"({len(index['skipped'])} skipped) in {out}", file=sys.stderr)
    return index


class _Runner:
    """The model, the attribution function (built on the first batch: default layer, window)
    and what one batch needs."""

    def __init__(self, options: Options, model: torch.nn.Module, device: torch.device):
        from fattr.core.model import functional

        self.options, self.device = options, device
        self.f, self.params = functional(model)
        self.attr: Any = None
        self.call: dict[str, Any] = {}

    def batch(self, out: Path, number: int, names: list[str]) -> None:
        root, options = Path(self.options.inputs), self.options
        images, kept, skipped = [], [], {}
        for name in names:
            try:
                images.append(read_image(root / name, options.size))
                kept.append(name)
            except Exception as error:  # an unreadable input is reported and skipped
                skipped[name] = f"{type(error).__name__}: {' '.join(str(error).split())}"
                print(f"fattr attribute: skipped {name}: {skipped[name]}", file=sys.stderr)
        record: dict[str, Any] = {"paths": kept, "targets": [], "shapes": [],
                                  "metrics": {m: [] for m in options.metrics},
                                  "skipped": skipped}
        maps = {}
        if kept:
            x = normalized(torch.stack(images).to(self.device), options.normalize)
            a, target = self.attribute(x, number)
            maps = dict(zip(kept, a.float().unbind()))
            record["targets"] = target.tolist()
            record["shapes"] = [list(m.shape) for m in maps.values()]
            for metric in options.metrics:
                scores = getattr(metrics, metric)(self.f, self.params, x, pixel_map(a, x),
                                                  target)
                record["metrics"][metric] = scores.tolist()
        store.write_shard(out, number, maps, record)

    def attribute(self, x: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        options = self.options
        if self.attr is None:
            self.attr, self.call = build(self.f, self.params, x, options.method,
                                         layer=options.layer, **options.method_kwargs)
        output = options.method_kwargs.get("output")
        target = (predicted(self.f, self.params, x, output) if options.target == "predicted"
                  else torch.full((len(x),), int(options.target), device=x.device))
        call = dict(self.call)
        if METHODS[options.method].stochastic and "generator" not in call:
            # one seed per batch: the same draws whatever the number of ranks, also on resume
            call["generator"] = torch.Generator(x.device).manual_seed(
                options.seed * 1_000_003 + number)
        return self.attr(self.params, x, target, **call).detach(), target


def _check(options: Options) -> None:
    method_info(options.method, "--method")  # an unknown name raises with the close ones
    if options.normalize not in NORMALIZATIONS:
        raise FattrError(f"--normalize: choose from {', '.join(NORMALIZATIONS)}, got "
                         f"{options.normalize!r}.")
    for value, option in ((options.size, "--size"), (options.batch_size, "--batch-size")):
        if value < 1:
            raise FattrError(f"{option}: must be a positive integer, got {value}.")
    unknown = [m for m in options.metrics if m not in METRICS]
    if unknown:
        raise FattrError(f"--metrics: unknown metric {unknown[0]!r}; choose from "
                         f"{', '.join(METRICS)}.")


def _check_output(out: Path, config: dict[str, Any], resume: bool) -> None:
    previous = out / "config.json"
    if not previous.is_file():
        return
    if not resume:
        raise FattrError(f"--out: {str(out)!r} holds an earlier run; pass --resume to finish "
                         "it, or choose another --out.")
    before = json.loads(previous.read_text())
    changed = sorted(k for k in set(before) | set(config) if before.get(k) != config.get(k))
    if changed:
        raise FattrError(f"--resume: the run in {str(out)!r} had other options "
                         f"({', '.join(changed)}); resume with the same options or choose "
                         "another --out.")


def _start_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); a process group only under a launcher with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if world == 1:
        return 0, 1, device
    if cuda:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _bar(options: Options, batches: list[list[str]], out: Path) -> Any:
    if not options.progress:
        return None
    from tqdm import tqdm

    done = sum(len(batches[b]) for b in store.finished_batches(out))
    return tqdm(total=sum(map(len, batches)), initial=done, desc=options.method, unit="image")


def _json_form(value: Any) -> Any:
    """Tuples as lists and other values as JSON sees them, so configs compare after a reload."""
    return json.loads(json.dumps(value, default=repr))
