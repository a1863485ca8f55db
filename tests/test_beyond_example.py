"""examples/beyond_attribution_digits.py with small settings: what it reports holds."""

from __future__ import annotations

import torch

from tests.conftest import one_thread
from tests.test_examples import example


def test_beyond_attribution_digits(tmp_path, capsys):
    with one_thread():
        result = example("beyond_attribution_digits").main(
            epochs=6, queries=3, top=3, concept_rows=40, random_sets=8, out=tmp_path)
    assert result["proponents"].shape == (3, 3)
    assert result["same_label"] >= 0.8  # the strongest proponents are mostly the same digit
    assert result["figure"] == tmp_path / "influence.png"
    assert result["figure"].stat().st_size > 1000
    tcav = result["tcav"]
    assert tcav.scores.mean() > tcav.random_scores.mean() + 0.2
    assert tcav.p_value < 0.05
    accuracy = result["accuracy"]
    assert list(accuracy) == ["original", "FGSM", "PGD"]
    assert accuracy["original"] > 0.85
    assert accuracy["PGD"] <= accuracy["FGSM"] < accuracy["original"] - 0.2
    out = capsys.readouterr().out
    assert "TracIn:" in out and "TCAV(top stroke, class 7)" in out and "PGD" in out
    assert torch.isfinite(tcav.p_value)
