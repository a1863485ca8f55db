"""`fattr attribute`: one process == two torchrun ranks == two ranks killed by SIGTERM mid-way
and resumed; unreadable images reported and skipped; the output readable without fattr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import fattr
from fattr.run.cli import main
from tests.run.conftest import MODELS, ROOT, command, environment, run, write_images

# smoothgrad draws noise: equal maps across runs need the per-batch seeds to hold
METHOD = ("--method", "smoothgrad", "--method-kwargs", '{"samples": 3}')


def options(inputs: Path, out: Path, *extra: str, delay: float = 0.0) -> list[str]:
    return ["attribute", "--model", f"{MODELS}:small_cnn", "--model-kwargs",
            json.dumps({"delay": delay}), "--inputs", str(inputs), "--out", str(out), "--size",
            "16", "--batch-size", "2", "--metrics", "deletion", "--no-progress", *METHOD, *extra]


def shards(out: Path) -> list[Path]:
    return sorted((out / "shards").glob("*.safetensors"))


def test_one_process_equals_two_ranks_equals_killed_and_resumed(images, tmp_path):
    inputs, names = images
    one = run(*options(inputs, tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert "skipped b/broken.png: UnidentifiedImageError" in one.stderr
    two = run(*options(inputs, tmp_path / "two"), ranks=2)
    assert two.returncode == 0, two.stderr
    assert "skipped b/broken.png" in two.stderr

    # two ranks, stopped by SIGTERM to torchrun once the first shard is on disk
    killed = tmp_path / "killed"
    process = subprocess.Popen(command(*options(inputs, killed, delay=0.25), ranks=2), cwd=ROOT,
                               env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not shards(killed) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    written = len(shards(killed))
    assert 1 <= written < 6, written  # 12 files in batches of 2: stopped mid-way
    assert not (killed / "index.json").exists()
    again = run(*options(inputs, killed, delay=0.25))
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = run(*options(inputs, killed, "--resume", delay=0.25), ranks=2)
    assert resumed.returncode == 0, resumed.stderr

    results = [fattr.run.load(tmp_path / name) for name in ("one", "two", "killed")]
    for maps in results:
        assert list(maps) == names  # the broken image is the only one missing
        for a, b in zip(maps.values(), results[0].values()):
            assert a.shape == (3, 16, 16)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(results[0][names[0]], results[0][names[1]])
    for name in ("one", "two", "killed"):
        out = tmp_path / name
        # nothing duplicated: every path is in exactly one shard, as its own tensor
        paths = [p for shard in shards(out) for p in load_file(str(shard))]
        assert sorted(paths) == names
        assert not list((out / "shards").glob("*.tmp"))
        index = json.loads((out / "index.json").read_text())
        assert list(index["skipped"]) == ["b/broken.png"]
        assert set(index["files"]) == set(names)
    scores = [fattr.run.load(tmp_path / n, "deletion") for n in ("one", "two", "killed")]
    for s in scores[1:]:
        torch.testing.assert_close(torch.stack(list(s.values())),
                                   torch.stack(list(scores[0].values())))


def test_output_reads_without_fattr_and_matches_the_method(images, tmp_path, capsys):
    inputs, names = images
    out = tmp_path / "out"
    argv = ["attribute", "--model", f"{MODELS}:small_cnn", "--inputs", str(inputs), "--out",
            str(out), "--size", "16", "--batch-size", "4", "--method", "gradcam",
            "--normalize", "none", "--target", "2", "--metrics", "deletion,insertion",
            "--no-progress"]
    assert main(argv) == 0
    assert "skipped b/broken.png" in capsys.readouterr().err
    index = json.loads((out / "index.json").read_text())
    entry = index["files"][names[0]]
    with safe_open(str(out / entry["shard"]), framework="pt") as shard:
        stored = shard.get_tensor(names[0])
        record = json.loads(shard.metadata()["fattr"])
    assert record["targets"][0] == 2 and entry["target"] == 2
    assert entry["shape"] == [1, 16, 16] and set(entry) >= {"deletion", "insertion"}

    from fattr.run.images import read_image
    from tests.run.models import small_cnn

    model = small_cnn().eval()
    x = read_image(inputs / names[0], 16)[None]
    f, params = fattr.functional(model)
    expected = fattr.gradcam(f, "features")(params, x, 2)[0]
    torch.testing.assert_close(stored, expected)
    deletion = fattr.metrics.deletion(f, params, x, expected[None], 2)
    assert fattr.run.load(out, "insertion")[names[0]].shape == ()
    assert abs(entry["deletion"] - deletion.item()) < 1e-5

    # a finished run: rerunning needs --resume, and --resume with other options is refused
    assert main(argv) == 2
    assert main([*argv, "--resume", "--batch-size", "3"]) == 2
    err = capsys.readouterr().err
    assert "pass --resume" in err and "had other options (batch_size)" in err
    assert main([*argv, "--resume"]) == 0  # nothing left to do: the same index again
    assert fattr.run.load(out).keys() == set(names)


@pytest.mark.parametrize(("argv", "message"), [
    (["--inputs", "missing-folder"], "--inputs: 'missing-folder' is not a folder of images."),
    (["--metrics", "deletion,auc"], "--metrics: unknown metric 'auc'"),
    (["--method", "gradcm"], "unknown method 'gradcm'. Did you mean 'gradcam'"),
    (["--batch-size", "0"], "--batch-size: must be a positive integer"),
])
def test_bad_options_exit_2_with_one_line(images, tmp_path, capsys, argv, message):
    inputs, _ = images
    base = ["attribute", "--model", f"{MODELS}:small_cnn", "--inputs", str(inputs), "--out",
            str(tmp_path / "out"), "--no-progress"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fattr attribute: error: ") and err.count("\n") == 1, err
    assert message in err


def test_load_reports_an_unfinished_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(fattr.FattrError, match="has not finished: run it again with --resume"):
        fattr.run.load(tmp_path)


def test_a_batch_of_unreadable_files_is_recorded_and_skipped(tmp_path, capsys):
    inputs = tmp_path / "in"
    names = write_images(inputs, 2, broken=("z/broken1.png", "z/broken2.jpg"))
    out = tmp_path / "out"
    assert main(["attribute", "--model", f"{MODELS}:small_cnn", "--inputs", str(inputs),
                 "--out", str(out), "--size", "16", "--batch-size", "2", "--method",
                 "saliency", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipped z/broken1.png" in err and "skipped z/broken2.jpg" in err
    assert len(shards(out)) == 2 and load_file(str(shards(out)[1])) == {}
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["skipped"]) == ["z/broken1.png", "z/broken2.jpg"]
    assert list(fattr.run.load(out)) == names
