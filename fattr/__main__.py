"""`python -m fattr <command>` (also installed as `fattr`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fattr", description="Functional feature attribution.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a digits CNN, attribute it, write a PNG")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--examples", type=int, default=6, help="test digits to explain")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from fattr.run.demo import demo as run_demo

        run_demo(args.out, args.examples, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
