"""fattr.viz: the rendered pixels (Agg) match the normalised maps; HTML escapes tokens; bad
input raises clear errors."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import fattr

viz = fattr.viz


def rendered(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255


def cell_colours(fig, rows: int, cols: int) -> np.ndarray:
    """The colour at the centre of every map cell of a one-axes figure that fills the canvas."""
    pixels = rendered(fig)
    h, w = pixels.shape[:2]
    ys = ((np.arange(rows) + 0.5) * h / rows).astype(int)
    xs = ((np.arange(cols) + 0.5) * w / cols).astype(int)
    return pixels[ys][:, xs]


def reference_normalize(a: np.ndarray, sign: str, q: float) -> np.ndarray:
    part = {"all": a, "positive": np.maximum(a, 0), "negative": np.maximum(-a, 0),
            "absolute": np.abs(a)}[sign]
    scale = np.percentile(np.abs(part), q)
    return np.clip(part / scale, -1 if sign == "all" else 0, 1)


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute"])
@pytest.mark.parametrize("q", [99.0, 80.0, 100.0])
def test_normalize_matches_numpy(sign, q):
    a = torch.randn(3, 9, 7, dtype=torch.float64)
    got = viz.normalize(a, sign, q)
    expected = reference_normalize(a.sum(0).numpy(), sign, q)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    assert got.shape == (9, 7)
    assert viz.normalize(torch.zeros(4, 4), sign).abs().sum() == 0


def test_heat_pixels_follow_the_colormap():
    a = torch.tensor([[-2.0, -1.0, 0.0, 1.0], [2.0, 0.5, -0.5, 0.0]])
    fig = viz.image(a, sign="all", clip_percentile=100.0)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 1
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(drawn, (a / 2).numpy())
    expected = matplotlib.colormaps["bwr"]((a.numpy() / 2 + 1) / 2)[..., :3]
    np.testing.assert_allclose(cell_colours(fig, 2, 4), expected, atol=2 / 255)
    # -2 is pure blue, +2 pure red, 0 white
    np.testing.assert_allclose(cell_colours(fig, 2, 4)[0, 0], [0, 0, 1], atol=2 / 255)
    np.testing.assert_allclose(cell_colours(fig, 2, 4)[1, 0], [1, 0, 0], atol=2 / 255)
    np.testing.assert_allclose(cell_colours(fig, 2, 4)[0, 2], [1, 1, 1], atol=2 / 255)


def test_positive_sign_clips_at_the_percentile():
    a = torch.zeros(1, 5, 5)
    a[0, 0, 0] = 100.0  # an outlier
    a[0, 1:, :] = torch.linspace(0.1, 1.0, 20).reshape(4, 5)
    fig = viz.image(a, sign="positive", clip_percentile=90.0)
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    scale = np.percentile(a[0].numpy(), 90.0)
    np.testing.assert_allclose(drawn, np.clip(a[0].numpy() / scale, 0, 1), atol=1e-12)
    assert drawn[0, 0] == 1.0 and drawn[1, 0] < 0.2
    colours = cell_colours(fig, 5, 5)
    expected = matplotlib.colormaps["Reds"](drawn)[..., :3]
    np.testing.assert_allclose(colours, expected, atol=2 / 255)


def test_blend_mask_and_alpha_pixels():
    image = torch.rand(3, 4, 4, dtype=torch.float64)
    image[:, 0, 0] = 0.0   # min-max scaling has a 0 ...
    image[:, 0, 1] = 1.0   # ... and a 1
    a = torch.rand(1, 4, 4, dtype=torch.float64)
    a[0, 3, 3] = 2.0
    values = reference_normalize(a[0].numpy(), "absolute", 100.0)
    picture = image.permute(1, 2, 0).numpy()
    blend = viz.image(a, image, mode="blend", sign="absolute", clip_percentile=100.0)
    heat = matplotlib.colormaps["magma"](values)[..., :3]
    gray = picture.mean(2, keepdims=True)
    np.testing.assert_allclose(cell_colours(blend, 4, 4), 0.5 * gray + 0.5 * heat, atol=2 / 255)
    mask = viz.image(a, image, mode="mask", sign="absolute", clip_percentile=100.0)
    np.testing.assert_allclose(cell_colours(mask, 4, 4), picture * values[..., None],
                               atol=2 / 255)
    alpha = viz.image(a, image, mode="alpha", sign="absolute", clip_percentile=100.0)
    over_white = values[..., None] * picture + (1 - values[..., None])
    np.testing.assert_allclose(cell_colours(alpha, 4, 4), over_white, atol=2 / 255)


def test_layer_size_map_is_resized_to_the_image():
    cam = torch.zeros(1, 1, 2, 2)
    cam[0, 0, 1, 1] = 1.0
    fig = viz.image(cam, torch.rand(1, 8, 8), mode="mask", sign="positive", clip_percentile=100)
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    assert drawn.shape == (8, 8, 4)
    assert drawn[7, 7, 0] > drawn[0, 0, 0] == 0.0  # the top-left quarter is masked out


def test_grid_layout_and_cells():
    maps = {"saliency": torch.randn(3, 1, 6, 6), "ig": torch.randn(3, 3, 6, 6)}
    images = torch.rand(3, 3, 6, 6)
    fig = viz.grid(maps, images, sign="all")
    assert len(fig.axes) == 3 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "saliency", "ig"]
    for row in range(3):
        for col, name in ((1, "saliency"), (2, "ig")):
            drawn = np.asarray(fig.axes[row * 3 + col].images[0].get_array())
            np.testing.assert_allclose(drawn, viz.normalize(maps[name][row]).numpy())
        picture = np.asarray(fig.axes[row * 3].images[0].get_array())
        low, high = images[row].min(), images[row].max()
        np.testing.assert_allclose(picture, ((images[row] - low) / (high - low))
                                   .permute(1, 2, 0).numpy(), atol=1e-6)
    assert rendered(fig).shape[0] > 0
    single = viz.grid(torch.randn(2, 5, 5))
    assert len(single.axes) == 2


def test_save(tmp_path):
    fig = viz.image(torch.randn(6, 6))
    path = viz.save(fig, tmp_path / "sub" / "map.png")
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (400, 400)
    with pytest.raises(ValueError, match="cannot tell the file format from .*map.bmpx"):
        viz.save(fig, tmp_path / "map.bmpx")
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure"):
        viz.save("figure", tmp_path / "map.png")


def test_text_html_escapes_and_colours():
    tokens = ["<script>", 'a"b', "&", "ok"]
    html = viz.text(tokens, torch.tensor([2.0, -1.0, 0.0, 1.0]))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "a&quot;b" in html and "&amp;" in html
    spans = html.split("<span")[1:]
    assert len(spans) == 4
    assert "rgba(0, 150, 0, 1.000)" in spans[0]      # green, full
    assert "rgba(200, 0, 0, 0.500)" in spans[1]      # red, half
    assert "0.000)" in spans[2] and 'title="1"' in spans[3]
    embeddings = viz.text(["x", "y"], torch.tensor([[[1.0, 1.0], [-1.0, 0.0]]]))
    assert "rgba(0, 150, 0, 1.000)" in embeddings and "rgba(200, 0, 0, 0.500)" in embeddings


@pytest.mark.parametrize("call, error, match", [
    (lambda: viz.image(torch.randn(2, 3, 4, 4)), ValueError,
     "attribution must be one map .* got shape \\(2, 3, 4, 4\\)"),
    (lambda: viz.image(torch.randn(4, 4), mode="overlay"), ValueError, "mode must be one of"),
    (lambda: viz.image(torch.randn(4, 4), sign="pos"), ValueError, "sign must be one of"),
    (lambda: viz.image(torch.randn(4, 4), clip_percentile=0), ValueError,
     "clip_percentile must be a number in \\(0, 100\\]"),
    (lambda: viz.image(torch.randn(4, 4), clip_percentile=101), ValueError, "clip_percentile"),
    (lambda: viz.image(torch.randn(4, 4), mode="blend"), ValueError, "pass image="),
    (lambda: viz.image(torch.randn(4, 4), torch.rand(2, 4, 4), mode="mask"), ValueError,
     "image must be .* C = 1 or 3"),
    (lambda: viz.image([[1.0]]), TypeError, "attribution must be a torch.Tensor or numpy"),
    (lambda: viz.image(torch.tensor([[float("nan")]])), ValueError, "NaN or Inf"),
    (lambda: viz.grid({"a": torch.randn(2, 4, 4), "b": torch.randn(3, 4, 4)}), ValueError,
     "the same N"),
    (lambda: viz.grid({}), ValueError, "attributions is empty"),
    (lambda: viz.text("hello", torch.ones(5)), TypeError, "tokens must be a sequence"),
    (lambda: viz.text([1, 2], torch.ones(2)), TypeError, "every token must be a str"),
    (lambda: viz.text(["a", "b"], torch.ones(3)), ValueError,
     "shape \\(3,\\) does not match 2 tokens"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numpy_input_and_no_pyplot_state():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = viz.image(np.random.rand(5, 5), np.random.rand(5, 5), mode="blend")
    assert plt.get_fignums() == before and len(fig.axes) == 1
