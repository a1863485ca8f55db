"""`python -m fattr <command>` (also installed as `fattr`): see `fattr.run.cli`."""

from fattr.run.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
