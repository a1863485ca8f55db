"""The scripts in examples/: each `main(...)` runs with small settings and what it reports holds."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str):
    """Import examples/<name>.py as a module (examples/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_test_and_a_runnable_docstring():
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    tests = Path(__file__).parent
    defined = {line.split("(")[0][len("def test_"):] for path in tests.rglob("test_*.py")
               for line in path.read_text().splitlines() if line.startswith("def test_")}
    assert scripts and set(scripts) <= defined, f"untested examples: {set(scripts) - defined}"
    for name in scripts:
        source = (EXAMPLES / f"{name}.py").read_text()
        assert f"Run: .venv/bin/python examples/{name}.py" in source
        assert 40 <= len(source.splitlines()) <= 90, name


def test_quickstart(tmp_path, capsys):
    result = example("quickstart").main(epochs=3, examples=4, samples=4, out=tmp_path)
    maps, gap, rise = result["maps"], result["gap"], result["rise"]
    for a in maps.values():
        assert a.shape == (4, 1, 8, 8) and torch.isfinite(a).all()
    assert (maps["saliency"] >= 0).all()
    assert torch.allclose(gap, maps["integrated gradients"].sum((1, 2, 3)) - rise, atol=1e-5)
    assert (gap.abs() < 0.02 * rise.abs() + 1e-3).all(), (gap, rise)  # 64 Gauss-Legendre points
    assert not torch.allclose(maps["SmoothGrad(IG)"], maps["integrated gradients"])
    assert result["figure"] == tmp_path / "quickstart.png"
    assert result["figure"].stat().st_size > 1000
    assert capsys.readouterr().out.count(" gap ") == 4


def test_attribution_in_the_loss():
    result = example("attribution_in_the_loss").main(pretrain_epochs=4, epochs=4)
    before, after = result["before"], result["after"]
    assert after["penalty"] < 0.1 * before["penalty"], result
    assert after["outside share"] < before["outside share"] - 0.05, result
    assert after["accuracy"] > 0.8, result


def test_vmap_targets_and_examples():
    result = example("vmap_targets_and_examples").main(examples=4, classes=3, steps=8)
    assert set(result) == {"vmap over targets vs K calls", "vmap over per_example vs batched",
                           "SmoothGrad(IG) batch_size=24 vs None", "completeness gap"}
    gap = result.pop("completeness gap")
    assert all(value <= 1e-12 for value in result.values()), result
    assert 0.0 < gap < 0.1  # 8 Gauss-Legendre points on a ReLU network: small, not zero


def test_compare_methods_resnet(tmp_path):
    result = example("compare_methods_resnet").main(out=tmp_path)
    maps = result["maps"]
    assert len(maps) == 6 and all(torch.isfinite(a).all() and a.abs().sum() > 0
                                  for a in maps.values())
    for name in ("Grad-CAM layer4", "LayerCAM layer3"):
        assert maps[name].shape == (1, 1, 64, 64) and (maps[name] >= 0).all()
    for name in ("guided backprop", "DeepLIFT", "LRP eps+flat", "occlusion 16/8"):
        assert maps[name].shape == (1, 3, 64, 64)
    assert result["deeplift gap"] < 1e-4 * max(1.0, abs(result["rise"]))  # float32 rounding
    assert all(s > 0 for s in result["seconds"].values())
    assert result["figure"].stat().st_size > 1000


def test_vit_transformer(tmp_path):
    result = example("vit_transformer").main(batch=2, out=tmp_path)
    logit, sums = result["logit"], result["sums"]
    torch.testing.assert_close(sums["CP-LRP"], logit, rtol=1e-9, atol=1e-12)  # conservation
    assert ((sums["AttnLRP"] - logit).abs() > 1e-3 * logit.abs()).all()  # softmax rule: not
    cam = result["maps"]["Grad-CAM tokens"]
    assert cam.shape == (2, 1, 32, 32) and (cam >= 0).all() and cam.sum() > 0


def test_vit_transformer_runs_as_a_script(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLES / "vit_transformer.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "CP-LRP sum" in run.stdout and (tmp_path / "out/examples/vit.png").stat().st_size > 0


def test_evaluate_faithfulness():
    scores = example("evaluate_faithfulness").main(epochs=3, examples=16, steps=8)
    ig, control = scores["integrated gradients"], scores["random"]
    assert ig["deletion (lower)"] < control["deletion (lower)"] - 1.0, scores
    assert ig["insertion (higher)"] > control["insertion (higher)"] + 1.0, scores
    assert ig["sparseness"] > control["sparseness"], scores


def test_decoy_digits(tmp_path, capsys):
    """A smoke run (one epoch); the accuracies the example promises: tests/test_decoy.py."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs: a 16x16 CNN trains fastest on one thread
    try:
        results = example("decoy_digits").main(epochs=1, figure=tmp_path / "decoy.png")
    finally:
        torch.set_num_threads(threads)
    assert list(results) == ["saliency", "integrated_gradients", "gradcam", "lrp"]
    assert all(0.0 <= v <= 1.0 for r in results.values() for v in r.values())
    assert (tmp_path / "decoy.png").stat().st_size > 1000
    assert capsys.readouterr().out.count("rrr_swapped_acc") == 4
