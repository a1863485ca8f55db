"""Image folders and a command runner for the command-line and runner tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = "tests/run/models.py"


def write_images(folder: Path, count: int, broken: tuple[str, ...] = (),
                 seed: int = 0) -> list[str]:
    """`count` random RGB PNGs of assorted sizes in nested folders (and `broken` files that
    are not images but carry an image suffix); returns the good ones' relative paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = f"{'abc'[i % 3]}/{'deep/' if i % 4 == 0 else ''}img{i:02d}.png"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (18 + i % 5, 16 + i % 3)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        names.append(name)
    for name in broken:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"this is not an image")
    (folder / "notes.txt").write_text("not an image suffix: ignored")
    return sorted(names)


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, list[str]]:
    folder = tmp_path / "images"
    return folder, write_images(folder, 11, broken=("b/broken.png",))


def command(*args: str, ranks: int = 1) -> list[str]:
    """`python -m fattr ...`, or under torchrun with `ranks` processes (a free port each)."""
    if ranks == 1:
        return [sys.executable, "-m", "fattr", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={ranks}", "-m", "fattr", *args]


def environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def run(*args: str, ranks: int = 1, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, ranks=ranks), cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=timeout)
