"""examples/llm_attribution.py runs with small settings and what it reports holds."""

from __future__ import annotations

from tests.test_examples import example


def test_llm_attribution(tmp_path, capsys):
    result = example("llm_attribution").main(max_new_tokens=4, out=tmp_path)
    ig, ablation = result["ig"], result["ablation"]
    assert ig.token_attr.shape == (4, 9) and ablation.token_attr.shape == (4, 9)
    assert ablation.input_tokens == "the cat sat on the mat and the dog".split()
    assert (result["gap"].abs() < 1e-5).all(), result["gap"]  # IG completeness, 256 steps
    assert result["rise"].abs().max() > 1e-2  # the prompt matters: the gap is not trivial
    assert result["figure"].stat().st_size > 1000
    assert result["html"].read_text().count("<table") == 2
    assert "most important input" in capsys.readouterr().out
