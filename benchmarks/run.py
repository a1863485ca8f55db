"""Run every benchmark in this folder, one after another (they must not share the CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    status = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"## {script.stem}\n", flush=True)
        status |= subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(flush=True)
    raise SystemExit(status)
