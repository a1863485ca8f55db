"""The command line: `fattr demo`, `fattr explain`, `fattr attribute` (also `python -m fattr`).

Bad input (an unknown method, a model that does not import, weights that do not fit, missing
inputs, malformed JSON) prints one line, `fattr <command>: error: ...`, and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fattr.errors import FattrError

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="fattr", description="Functional feature attribution for PyTorch.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser("demo", help="train a digits CNN and run every method on it")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--examples", type=int, default=6, help="test digits to explain (6)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true",
                      help="fewer epochs, steps and samples (a smoke run in seconds)")

    explain = commands.add_parser("explain", help="overlay PNGs for a few image files")
    _model_options(explain)
    explain.add_argument("--inputs", nargs="+", required=True, metavar="FILE",
                         help="image files")
    explain.add_argument("--out", required=True, help="output folder for the overlay PNGs")

    attribute = commands.add_parser(
        "attribute", help="a folder of images to safetensors shards (torchrun for many ranks)")
    _model_options(attribute)
    attribute.add_argument("--inputs", required=True, metavar="DIR",
                           help="folder of images, searched recursively")
    attribute.add_argument("--out", required=True, help="output folder (shards + index.json)")
    attribute.add_argument("--batch-size", type=int, default=32, help="images per batch (32)")
    attribute.add_argument("--metrics", default="", help="comma-separated: deletion,insertion")
    attribute.add_argument("--seed", type=int, default=0, help="seed of stochastic methods")
    attribute.add_argument("--resume", action="store_true",
                           help="finish an interrupted run in --out (same options)")
    attribute.add_argument("--no-progress", action="store_true", help="no progress bar")
    return top


def _model_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", required=True, metavar="MODULE:CALLABLE",
                         help="e.g. torchvision.models:resnet18 or path/to/file.py:make_model")
    command.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments, a JSON object")
    command.add_argument("--weights", metavar="FILE",
                         help="state dict, read with torch.load(weights_only=True)")
    command.add_argument("--method", default="gradcam",
                         help="a name from fattr.registry.METHODS (default gradcam)")
    command.add_argument("--method-kwargs", metavar="JSON",
                         help="options of the method and its call, a JSON object")
    command.add_argument("--layer", help="layer for CAMs and layer methods (default: the last "
                                         "convolutional or attention block)")
    command.add_argument("--target", default="predicted", type=_target,
                         help="'predicted' (default) or a class index")
    command.add_argument("--size", type=int, default=224, help="images are resized to N x N")
    command.add_argument("--normalize", default="imagenet", choices=("imagenet", "none"),
                         help="input normalization (default imagenet mean and std)")


def _target(text: str) -> str | int:
    if text == "predicted":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'predicted' or a class index, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except FattrError as error:
        message = " ".join(str(error).split())
        print(f"fattr {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


def _require(command: str, *packages: tuple[str, str]) -> None:
    """One line naming the extra when an optional dependency is missing (an unreadable image
    must mean a bad file, never a missing Pillow)."""
    import importlib.util

    missing = [name for module, name in packages if importlib.util.find_spec(module) is None]
    if missing:
        raise FattrError(f"fattr {command} needs {', '.join(missing)}: pip install "
                         f"'fattr[{'demo' if command == 'demo' else 'cli'}]'.")


def _demo(args: argparse.Namespace) -> int:
    _require("demo", ("sklearn", "scikit-learn"), ("skimage", "scikit-image"),
             ("matplotlib", "matplotlib"), ("tqdm", "tqdm"))
    from fattr.run.demo import demo

    demo(args.out, args.examples, args.seed, quick=args.quick)
    return 0


def _explain(args: argparse.Namespace) -> int:
    import torch

    from fattr.explain import explain, method_info
    from fattr.run.images import normalized, read_image, write_overlay
    from fattr.run.model import load_model, parse_json

    _require("explain", ("PIL", "Pillow"), ("matplotlib", "matplotlib"))
    method_info(args.method, "--method")
    model = load_model(args.model, parse_json(args.model_kwargs, "--model-kwargs"), args.weights)
    method_kwargs = parse_json(args.method_kwargs, "--method-kwargs")
    images = torch.stack([_read(path, args.size, read_image) for path in args.inputs])
    target = None if args.target == "predicted" else args.target
    maps = explain(model, normalized(images, args.normalize), args.method, target,
                   layer=args.layer, **method_kwargs)
    out = Path(args.out)
    stems = [Path(p).stem for p in args.inputs]
    for i, (path, a, image) in enumerate(zip(args.inputs, maps, images)):
        name = stems[i] if stems.count(stems[i]) == 1 else f"{stems[i]}-{i}"
        written = write_overlay(a, image, out / f"{name}.{args.method}.png")
        print(f"{path} -> {written}")
    return 0


def _read(path: str, size: int, read_image: Any) -> Any:
    if not Path(path).is_file():
        raise FattrError(f"--inputs: no such file {path!r}.")
    try:
        return read_image(path, size)
    except Exception as error:
        raise FattrError(f"--inputs: cannot read {path!r} as an image: {error}") from None


def _attribute(args: argparse.Namespace) -> int:
    _require("attribute", ("PIL", "Pillow"), ("safetensors", "safetensors"), ("tqdm", "tqdm"))
    from fattr.run.attribute import Options, attribute
    from fattr.run.model import parse_json

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    attribute(Options(
        model=args.model, inputs=args.inputs, out=args.out, method=args.method,
        model_kwargs=parse_json(args.model_kwargs, "--model-kwargs"), weights=args.weights,
        method_kwargs=parse_json(args.method_kwargs, "--method-kwargs"), layer=args.layer,
        target=args.target, size=args.size, normalize=args.normalize,
        batch_size=args.batch_size, metrics=metrics, seed=args.seed, resume=args.resume,
        progress=not args.no_progress))
    return 0


_COMMANDS = {"demo": _demo, "explain": _explain, "attribute": _attribute}
