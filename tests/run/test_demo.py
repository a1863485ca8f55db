"""`fattr demo --quick` end to end: every registered method in the table and the figure."""

from __future__ import annotations

import math

from PIL import Image

import fattr.run.demo
from fattr.registry import METHODS
from fattr.run.cli import main
from fattr.run.demo import Row, demo


def test_demo_runs_every_method_and_writes_a_png(tmp_path, capsys, monkeypatch):
    rows: list[Row] = []

    def recorded(*args, **kwargs):  # the CLI's demo, keeping the rows it returns
        rows.extend(demo(*args, **kwargs))
        return rows

    monkeypatch.setattr(fattr.run.demo, "demo", recorded)
    assert main(["demo", "--quick", "--examples", "2", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"{len(METHODS)}/{len(METHODS)}" in captured.err  # the tqdm bar finished
    assert [r.method for r in rows] == list(METHODS)
    for r in rows:
        assert r.seconds_per_example > 0 and math.isfinite(r.deletion), r
        assert (r.gap is not None) == METHODS[r.method].complete
        assert f"{r.method:<28} {r.family:<13}" in captured.out
    gaps = {r.method: r.gap for r in rows if r.gap is not None}
    for exact in ("deeplift", "layer_deeplift", "shapley_values", "shapley_value_sampling",
                  "kernel_shap"):
        assert gaps[exact] < 1e-3, gaps  # float32 rounding; IG's gap is quadrature error
    path = tmp_path / "digits_attributions.png"
    assert f"wrote {path}" in captured.out
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 600
