"""Decoy Digits (examples/decoy_digits.py) in a faster configuration: an attribution penalty in
the training loss makes a shortcut-taking CNN right for the right reasons (Ross et al. 2017).

Each penalized model must keep >= 0.9 clean test accuracy and gain >= 20 points over the plain
model on the swapped test set, whose patches show a wrong class. Saliency, IG and LRP train 6
epochs here (12 in the example); Grad-CAM, the weakest penalty, 12.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import one_thread
from tests.test_examples import example

decoy_digits = example("decoy_digits")


@pytest.fixture(scope="module", name="one_thread")
def _one_thread_for_the_module():
    """A 16x16 CNN trains fastest, and reproducibly, on one thread."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data():
    return decoy_digits.decoy_digits(seed=0)


@pytest.fixture(scope="module")
def plain(one_thread, data):
    return {epochs: decoy_digits.train(data, None, epochs, seed=0) for epochs in (6, 12)}


def assert_fixed(result: dict[str, float]) -> None:
    assert result["plain_clean_acc"] >= 0.95, result    # the plain model reads digits...
    assert result["plain_swapped_acc"] <= 0.75, result  # ...but follows the decoy
    assert result["rrr_clean_acc"] >= 0.9, result
    assert result["rrr_swapped_acc"] >= result["plain_swapped_acc"] + 0.2, result


def test_the_patch_encodes_the_class_in_training_and_a_wrong_class_when_swapped(data):
    corners = decoy_digits.CORNERS.bool()
    shade = lambda x: x[:, 0][:, corners].amax(1)  # one patch per image, the rest of the corners 0
    assert torch.allclose(shade(data["x_train"]), 1 - 0.1 * data["y_train"].float())
    assert torch.allclose(shade(data["x_clean"]), 1 - 0.1 * data["y_test"].float())
    swapped = torch.round((1 - shade(data["x_swapped"])) * 10).long()
    assert (swapped != data["y_test"]).all() and len(swapped.unique()) == 10
    for x in (data["x_train"], data["x_swapped"]):  # exactly one 4x4 patch, in the corners only
        assert ((x[:, 0][:, corners] > 0).sum(1) == 16).all()
    assert torch.equal(data["x_clean"][:, :, ~corners], data["x_swapped"][:, :, ~corners])


def test_run_saliency_penalty(one_thread):
    result = decoy_digits.run(seed=0, penalty="saliency", epochs=6)
    assert set(result) == {"plain_clean_acc", "plain_swapped_acc", "rrr_clean_acc",
                           "rrr_swapped_acc"}
    assert_fixed(result)


@pytest.mark.parametrize(("penalty", "epochs"),
                         [("integrated_gradients", 6), ("lrp", 6), ("gradcam", 12)])
def test_penalty_fixes_the_decoy(one_thread, data, plain, penalty, epochs):
    fixed = decoy_digits.train(data, penalty, epochs, seed=0)
    assert_fixed(decoy_digits.accuracies(plain[epochs], fixed, data))
