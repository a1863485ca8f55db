"""`fattr explain` and the command line's errors: one line on stderr and exit code 2."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from fattr.registry import METHODS
from fattr.run.cli import main
from tests.run.conftest import MODELS, run, write_images
from tests.run.models import small_cnn


@pytest.fixture
def files(tmp_path):
    names = write_images(tmp_path / "in", 3)
    return [str(tmp_path / "in" / n) for n in names]


def test_explain_writes_one_overlay_per_input(files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", "--model", f"{MODELS}:small_cnn", "--model-kwargs", '{"classes": 3}',
                 "--inputs", *files, "--method", "integrated_gradients", "--method-kwargs",
                 '{"steps": 4}', "--size", "16", "--target", "1", "--out", str(out)])
    assert code == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == sorted(
        f"img{i:02d}.integrated_gradients.png" for i in range(3))
    with Image.open(written[0]) as image:
        assert image.size[0] > 100 and image.mode in ("RGB", "RGBA")
    assert capsys.readouterr().out.count(" -> ") == 3


def test_weights_load_with_weights_only(files, tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(small_cnn(classes=5, seed=3).state_dict(), weights)
    assert main(["explain", "--model", f"{MODELS}:small_cnn", "--weights", str(weights),
                 "--inputs", files[0], "--size", "16", "--out", str(tmp_path / "o")]) == 0


def _weights(tmp_path, classes):
    path = tmp_path / "w.pt"
    torch.save(small_cnn(classes=classes).state_dict(), path)
    return str(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"--method": "gradcamm"}, "unknown method 'gradcamm'. Did you mean 'gradcam'"),
    ({"--model": "no_such_package.models:net"},
     "--model: cannot import 'no_such_package.models': ModuleNotFoundError"),
    ({"--model": f"{MODELS}:no_such_factory"}, "has no callable 'no_such_factory'"),
    ({"--model": "torchvision.models"}, "--model: expected MODULE:CALLABLE"),
    ({"--model-kwargs": '{"classes": 3'}, "--model-kwargs: not valid JSON"),
    ({"--model-kwargs": '{"colours": 3}'}, "--model-kwargs: "),
    ({"--method-kwargs": "[1, 2]"}, "--method-kwargs: expected a JSON object"),
    ({"--weights": "missing.pt"}, "--weights: no such file 'missing.pt'"),
    ({"--weights": "three_classes"}, "does not fit tests/run/models.py:small_cnn: Error(s) in "
                                     "loading state_dict for SmallCNN: size mismatch"),
    ({"--inputs": "nowhere.png"}, "--inputs: no such file 'nowhere.png'"),
    ({"--inputs": "notes.txt"}, "--inputs: cannot read"),
    ({"--method": "neuron_conductance"}, "neuron_conductance needs neuron="),
    ({"--layer": "featurez"}, "has no layer named 'featurez'. Did you mean 'features'"),
])
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys, change, message):
    options = {"--model": f"{MODELS}:small_cnn", "--inputs": files[0], "--size": "16",
               "--out": str(tmp_path / "out")}
    if change.get("--weights") == "three_classes":
        change = {"--weights": _weights(tmp_path, 3)}
    if change.get("--inputs") == "notes.txt":
        change = {"--inputs": str(tmp_path / "in" / "notes.txt")}
    options.update(change)
    assert main(["explain", *(item for pair in options.items() for item in pair)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fattr explain: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "--model", "m:f", "--inputs", "a.png", "--out", "o", "--target", "cat"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected 'predicted' or a class index, got 'cat'" in err


def test_a_real_process_prints_no_traceback(tmp_path):
    done = run("explain", "--model", "torchvision.models:resnet18", "--inputs", "x.png",
               "--method", "integrated_gradient", "--out", str(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("fattr explain: error: --method: unknown method "
                               "'integrated_gradient'. Did you mean 'integrated_gradients'")
    assert lines[0].endswith(", ".join(METHODS) + ".")


def test_a_missing_optional_dependency_is_named(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "safetensors" else find_spec(name, *a))
    assert main(["attribute", "--model", f"{MODELS}:small_cnn", "--inputs", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("fattr attribute: error: fattr attribute needs "
                                       "safetensors: pip install 'fattr[cli]'.\n")
