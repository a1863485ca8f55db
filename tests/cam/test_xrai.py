"""XRAI: parity with PAIR's saliency.core.XRAI, the greedy definition, composition, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import saliency.core as pair
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from saliency.core import xrai as pair_xrai
from scipy.ndimage import gaussian_filter

import fattr
from tests.conftest import assert_unchanged, small_cnn, state_snapshot

SMALL = {"resize": None, "scales": (5, 20, 80), "min_size": 8, "dilation": 1}  # 16-32 px


def images(batch: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random images (B, C, H, W), float64, so that the segments are blobs."""
    rng = np.random.default_rng(seed)
    raw = gaussian_filter(rng.random((batch, channels, size, size)), (0, 0, 2, 2))
    return torch.tensor(raw)


def constant(a: torch.Tensor):
    """An attribution function that returns `a` whatever it is asked."""
    return lambda params, x, target=None: a


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def pair_mask(x: torch.Tensor, attr: torch.Tensor, segments=None, min_pixels: int = 50,
              area_threshold: float = 1.0) -> np.ndarray:
    """PAIR's XRAI.GetMask for one (C, H, W) image on a given (C, H, W) attribution."""
    extra = pair.XRAIParameters(area_threshold=area_threshold)
    extra.experimental_params["min_pixel_diff"] = min_pixels
    return pair.XRAI().GetMask(hwc(x), None, segments=segments, base_attribution=hwc(attr),
                               extra_parameters=extra)


def label_masks(maps: torch.Tensor) -> list[np.ndarray]:
    """PAIR's segment list for label maps (S, H, W): map by map, label by label."""
    return [(m == label).numpy() for m in maps for label in torch.unique(m)]


# --- parity with PAIR ----------------------------------------------------------------------

def test_default_pipeline_matches_pair_end_to_end():
    """Linear model: IG is exact for every quadrature rule, so fattr's IG with PAIR's black and
    white baselines, PAIR's segmentation (224 px, six scales, dilation 5) and the greedy
    selection must reproduce PAIR's XRAI.GetMask with everything left at its defaults (to
    float32 rounding: PAIR sums the IG gradients in a float32 buffer)."""
    x = images(2, 32)
    w = torch.randn(3 * 32 * 32, 4, dtype=torch.float64)
    f = lambda params, x: x.flatten(1) @ params["w"]
    ours = fattr.xrai(fattr.integrated_gradients(f, steps=4), baselines="min_max")(
        {"w": w}, x, target=2)
    assert ours.shape == (2, 1, 32, 32)

    def call(batch, call_model_args=None, expected_keys=None):
        gradient = np.broadcast_to(hwc(w[:, 2].view(3, 32, 32)), np.shape(batch))
        return {pair.INPUT_OUTPUT_GRADIENTS: gradient}

    for b in range(2):
        theirs = pair.XRAI().GetMask(hwc(x[b]), call, extra_parameters=pair.XRAIParameters(
            steps=4))
        np.testing.assert_allclose(ours[b, 0].numpy(), theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("resize, dilation", [(224, 5), (None, 0), (None, 3)])
def test_segments_are_pairs_felzenszwalb_masks(resize, dilation):
    x = images(2, 24, seed=1)
    ours = fattr.xrai_segments(x, resize=resize, dilation=dilation,
                               **({} if resize else {"min_size": 10, "scales": (5, 20, 80)}))
    for b in range(2):
        if resize is None:  # PAIR's scales and min_size are constants: patch them for 24 px
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(pair_xrai, "_FELZENSZWALB_MIN_SEGMENT_SIZE", 10)
                patch.setattr(pair_xrai, "_FELZENSZWALB_SCALE_VALUES", [5, 20, 80])
                theirs = pair_xrai._get_segments_felzenszwalb(hwc(x[b]), resize_image=False,
                                                              dilation_rad=dilation)
        else:
            theirs = pair_xrai._get_segments_felzenszwalb(hwc(x[b]), dilation_rad=dilation)
        theirs = [m for m in theirs if m.any()]  # labels lost when resizing back: no region
        mine = ours[b].numpy()
        assert len(theirs) > 6 and not mine[len(theirs):].any()  # the padding is empty
        np.testing.assert_array_equal(mine[:len(theirs)], np.stack(theirs))


@pytest.mark.parametrize("min_pixels, area_threshold", [(50, 1.0), (5, 1.0), (20, 0.4)])
def test_greedy_matches_pair_on_label_maps(min_pixels, area_threshold):
    x = images(3, 28)
    attr = torch.randn(3, 3, 28, 28, dtype=torch.float64)
    attr = attr + torch.linspace(-1, 1, 28, dtype=torch.float64)  # some structure to find
    maps = torch.stack([torch.tensor(np.stack([
        pair_xrai.segmentation.felzenszwalb(hwc(x[b]), scale=s, sigma=0.5, min_size=10)
        for s in (20, 100, 400)])) for b in range(3)])
    ours = fattr.xrai(constant(attr), min_pixels=min_pixels, area_threshold=area_threshold)(
        {}, x, segments=maps)
    for b in range(3):
        theirs = pair_mask(x[b], attr[b], label_masks(maps[b]), min_pixels, area_threshold)
        np.testing.assert_allclose(ours[b, 0].numpy(), theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_greedy_matches_pair_on_overlapping_masks(dtype, tol):
    """Boolean masks (B, M, H, W) that overlap, as dilated regions do, and leave gaps. In
    float32 the choices are still PAIR's (fattr keeps its running sums in float64)."""
    x = images(2, 32, seed=3)
    attr = torch.tensor(gaussian_filter(np.random.default_rng(4).standard_normal(
        (2, 3, 32, 32)), (0, 0, 3, 3))).to(dtype)
    masks = fattr.xrai_segments(x, resize=None, dilation=2, scales=(30, 200))
    masks[0, 1:4] = False  # some empty masks, some uncovered pixels
    ours = fattr.xrai(constant(attr), min_pixels=10)({}, x.to(dtype), segments=masks)
    assert ours.dtype == dtype
    for b in range(2):
        theirs = pair_mask(x[b], attr[b].double(), list(masks[b].numpy()), min_pixels=10)
        np.testing.assert_allclose(ours[b, 0].numpy(), theirs, rtol=tol, atol=tol * 1e-2)


# --- the definition ------------------------------------------------------------------------

def test_scores_follow_the_greedy_definition_by_hand():
    """8x8 image, one channel, min_pixels=1. Regions: T = top-right quarter (values 3),
    L = left half (values 1), D = the right half (T plus a bottom-right quarter of 0.5), and
    a region R of one row inside T, the densest region of all."""
    v = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    v[..., :, :4] = 1.0
    v[..., :4, 4:] = 3.0
    v[..., 4:, 4:] = 0.5
    v[..., 0, 4:] = 7.0  # row R inside T
    masks = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
    masks[0, 0, :4, 4:] = True  # T
    masks[0, 1, :, :4] = True  # L
    masks[0, 2, :, 4:] = True  # D
    masks[0, 3, 0, 4:] = True  # R
    out = fattr.xrai(constant(v), min_pixels=1)({}, torch.rand(1, 1, 8, 8), segments=masks)
    expected = torch.empty(8, 8, dtype=torch.float64)
    expected[0, 4:] = 7.0  # R first (density 7)
    expected[1:4, 4:] = 3.0  # then T minus R (3), not T's own mean (4)
    expected[:, :4] = 1.0  # then L (1) beats D minus T (0.5)
    expected[4:, 4:] = 0.5
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=1e-15)


def test_min_pixels_area_threshold_and_the_uncovered_rest():
    v = torch.arange(64, dtype=torch.float64).view(1, 1, 8, 8)
    masks = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    masks[0, 0, 6:] = True  # rows 6-7: 16 pixels, the densest
    masks[0, 1, 7, 7] = True  # one pixel, denser still but below min_pixels
    masks[0, 2, :2] = True  # rows 0-1
    attr = fattr.xrai(constant(v), min_pixels=2, area_threshold=0.2)
    out = attr({}, torch.rand(1, 1, 8, 8), segments=masks)[0, 0]
    assert (out[6:] == v[0, 0, 6:].mean()).all()  # 16/64 > 0.2: stop after the first region
    assert (out[:6] == v[0, 0, :6].mean()).all()  # the rest: its own mean, rows 0-1 included
    maps = fattr.xrai(constant(v[:, 0]), min_pixels=2, area_threshold=0.2)  # (B, H, W) maps
    torch.testing.assert_close(maps({}, torch.rand(1, 1, 8, 8), segments=masks)[0, 0], out)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 30), st.sampled_from([0.3, 1.0]))
def test_scores_keep_the_sum_and_the_first_region_is_the_densest(seed, min_pixels, area):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(2, 2, 12, 12, generator=g, dtype=torch.float64)
    maps = torch.randint(0, 6, (2, 3, 12, 12), generator=g)
    out = fattr.xrai(constant(v), min_pixels=min_pixels, area_threshold=area)(
        {}, torch.rand(2, 1, 12, 12, dtype=torch.float64), segments=maps)
    values = v.amax(1, keepdim=True)
    torch.testing.assert_close(out.sum((1, 2, 3)), values.sum((1, 2, 3)))  # scores are means
    for b in range(2):
        masks = [m for m in torch.nn.functional.one_hot(maps[b], 6).permute(0, 3, 1, 2)
                 .flatten(0, 1).bool() if m.sum() >= min_pixels]
        if masks:
            best = max(values[b, 0][m].mean() for m in masks)
            assert any(torch.allclose(out[b, 0][m], best.expand(int(m.sum()))) for m in masks)


# --- composition -----------------------------------------------------------------------------

@pytest.fixture
def cnn():
    net = small_cnn()
    f, params = fattr.functional(net)
    return net, f, params, images(3, 16, channels=1, seed=5)


def test_batch_equals_per_image_and_per_example(cnn):
    _, f, params, x = cnn
    target = torch.tensor([0, 3, 1])
    batched_ig = fattr.integrated_gradients(f, steps=4)
    single_ig = fattr.integrated_gradients(fattr.per_example(f), steps=4)
    build = lambda ig: fattr.xrai(ig, baselines="min_max", min_pixels=8, **SMALL)
    batched = build(batched_ig)(params, x, target)
    masks = fattr.xrai_segments(x, **SMALL)
    torch.testing.assert_close(build(batched_ig)(params, x, target, segments=masks), batched)
    for b in range(3):
        one = build(batched_ig)(params, x[b:b + 1], target[b:b + 1])
        torch.testing.assert_close(batched[b:b + 1], one, rtol=1e-10, atol=1e-12)
        alone = build(single_ig)(params, x[b], target[b])
        torch.testing.assert_close(alone, batched[b], rtol=1e-10, atol=1e-12)
        given = build(single_ig)(params, x[b], target[b], segments=masks[b])
        torch.testing.assert_close(given, batched[b], rtol=1e-10, atol=1e-12)


def test_min_max_baselines_are_each_examples_extremes(cnn):
    _, _, params, x = cnn
    seen = []

    def recording(params, x, target=None, baseline=None):
        seen.append(baseline)
        return x * baseline

    recording.batched_kwargs = ("baseline",)
    masks = fattr.xrai_segments(x, **SMALL)
    out = fattr.xrai(recording, baselines="min_max", min_pixels=8)(params, x, segments=masks)
    torch.testing.assert_close(seen[0].flatten(), x.flatten(1).amin(1))
    torch.testing.assert_close(seen[1].flatten(), x.flatten(1).amax(1))
    mean = x * (seen[0] + seen[1]) / 2
    torch.testing.assert_close(out, fattr.xrai(constant(mean), min_pixels=8)(
        params, x, segments=masks))


def test_vmap_over_targets_equals_separate_calls(cnn):
    _, f, params, x = cnn
    attr = fattr.xrai(fattr.saliency(f, abs=False), min_pixels=8)
    masks = fattr.xrai_segments(x, **SMALL)
    ts = torch.tensor([[0, 1, 2], [3, 3, 0]])
    mapped = torch.func.vmap(lambda t: attr(params, x, t, segments=masks))(ts)
    for k in range(2):
        torch.testing.assert_close(mapped[k], attr(params, x, ts[k], segments=masks),
                                   rtol=1e-10, atol=1e-12)


def test_grad_through_xrai_matches_finite_differences(cnn):
    _, f, params, x = cnn
    attr = fattr.xrai(fattr.integrated_gradients(f, steps=6), min_pixels=8)
    masks = fattr.xrai_segments(x, **SMALL)
    weight = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    loss = lambda w: (attr({**params, "8.weight": w}, x, 1, segments=masks) * weight).sum()
    w0 = params["8.weight"]
    grad = torch.func.grad(loss)(w0)
    assert grad.abs().sum() > 0
    direction = torch.randn_like(w0)
    eps = 1e-6
    fd = (loss(w0 + eps * direction) - loss(w0 - eps * direction)) / (2 * eps)
    torch.testing.assert_close((grad * direction).sum(), fd, rtol=1e-6, atol=1e-9)


def test_cam_maps_and_model_unchanged(cnn):
    net, f, params, x = cnn
    before = state_snapshot(net)
    out = fattr.xrai(fattr.gradcam(f, "4"), min_pixels=8, **SMALL)(params, x, [0, 1, 2])
    assert out.shape == (3, 1, 16, 16) and torch.isfinite(out).all()
    assert_unchanged(net, before)
    with pytest.raises(ValueError, match="out of range"):
        fattr.xrai(fattr.integrated_gradients(f), **SMALL)(params, x, 9)
    assert_unchanged(net, before)


def test_empty_batch(cnn):
    _, f, params, x = cnn
    out = fattr.xrai(fattr.saliency(f))(params, x[:0], torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 1, 16, 16) and out.dtype == x.dtype


# --- errors ----------------------------------------------------------------------------------

def test_missing_scikit_image_says_how_to_fix_it(cnn, monkeypatch):
    _, f, params, x = cnn
    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` now fails
    attr = fattr.xrai(fattr.saliency(f), min_pixels=8)
    with pytest.raises(ValueError, match=r"pip install scikit-image.*segments="):
        attr(params, x, 0)
    labels = torch.arange(4).repeat_interleave(64).view(1, 16, 16).expand(3, 16, 16)
    assert attr(params, x, 0, segments=labels).shape == (3, 1, 16, 16)  # no skimage needed


@pytest.mark.parametrize("kwargs, match", [
    ({"baselines": "black"}, "baselines must be None"),
    ({"min_pixels": 0}, "min_pixels must be an int >= 1"),
    ({"area_threshold": 1.5}, r"area_threshold must be a fraction of the image in \[0, 1\]"),
    ({"scales": ()}, "scales must be a non-empty sequence"),
    ({"scales": (50, -1)}, "scales must be a non-empty sequence"),
    ({"resize": (224,)}, "resize must be None"),
    ({"dilation": -1}, "dilation must be an int >= 0"),
    ({"sigma": -0.5}, "sigma must be >= 0"),
])
def test_bad_configuration(cnn, kwargs, match):
    _, f, _, _ = cnn
    with pytest.raises(ValueError, match=f"xrai: {match}"):
        fattr.xrai(fattr.integrated_gradients(f), **kwargs)


def test_bad_attr_fn_and_baselines(cnn):
    _, f, params, x = cnn
    with pytest.raises(TypeError, match="xrai: attr_fn must be an attribution function"):
        fattr.xrai(f(params, x))
    with pytest.raises(ValueError, match="takes no baseline"):
        fattr.xrai(fattr.saliency(f), baselines="min_max")
    attr = fattr.xrai(fattr.integrated_gradients(f), baselines="min_max", **SMALL)
    with pytest.raises(ValueError, match="not both"):
        attr(params, x, 0, baseline=0.0)
    layer_size = fattr.xrai(fattr.gradcam(f, "4", upsample=False), **SMALL)
    with pytest.raises(ValueError, match=r"attr_fn must return a map per pixel.*\(3, 1, 8, 8\)"):
        layer_size(params, x, 0)


@pytest.mark.parametrize("segments, match", [
    (torch.zeros(3, 16, 16), r"got dtype torch.float32"),
    (torch.zeros(2, 16, 16, dtype=torch.long), r"expected \(3, 16, 16\) or \(3, S, 16, 16\)"),
    (torch.zeros(3, 2, 8, 8, dtype=torch.long), r"shape \(3, 2, 8, 8\)"),
    (torch.zeros(3, 16, 16, dtype=torch.bool), r"expected \(3, M, 16, 16\)"),
    (-torch.ones(3, 16, 16, dtype=torch.long), "labels must be >= 0, got -1"),
    ([[0, 1]], "segments must be a tensor, got list"),
])
def test_bad_segments(cnn, segments, match):
    _, f, params, x = cnn
    with pytest.raises(ValueError, match=match):
        fattr.xrai(fattr.saliency(f))(params, x, 0, segments=segments)


def test_bad_inputs(cnn):
    _, f, params, x = cnn
    attr = fattr.xrai(fattr.saliency(f))
    with pytest.raises(ValueError, match=r"xrai: x must be images of shape \(B, C, H, W\)"):
        attr(params, x[0], 0)
    with pytest.raises(ValueError, match="xrai: x contains NaN"):
        attr(params, x * float("nan"), 0)
    per_example = fattr.xrai(fattr.saliency(fattr.per_example(f)))
    masks = fattr.xrai_segments(x, **SMALL)
    with pytest.raises(ValueError, match="cannot run inside torch.func.vmap over examples"):
        torch.func.vmap(lambda xi, m: per_example(params, xi, 0, segments=m))(x, masks)
    with pytest.raises(ValueError, match=r"xrai_segments: x must be a batch of images"):
        fattr.xrai_segments(x[0])


def test_resnet18_end_to_end():
    """A torchvision resnet18 (random weights) end to end, batch of two 32 px images."""
    from tests.conftest import resnet18

    f, params = fattr.functional(resnet18())
    x = images(2, 32, seed=7).float()
    out = fattr.xrai(fattr.integrated_gradients(f, steps=2),
                     baselines="min_max", **SMALL)(params, x, [1, 2])
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.flatten(1).std(1).min() > 0
