import pytest

from pyro_dcim import PAPER_SPECS, SpecError, parse_spec
from pyro_dcim.spec import ConvSpec, DenseSpec, layer_shapes


def test_paper_cnn_shapes():
    shapes = layer_shapes(parse_spec(PAPER_SPECS["cnn"]), (1, 28, 28))
    assert shapes == [(1, 28, 28), (32, 28, 28), (32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 14, 14),
                      (64, 7, 7), (50,), (10,)]


@pytest.mark.parametrize("text, expected", [
    ("512-512-10", [DenseSpec(512), DenseSpec(512), DenseSpec(10)]),
    ("512,512,10", [DenseSpec(512), DenseSpec(512), DenseSpec(10)]),
    ("dense", [DenseSpec(512), DenseSpec(512), DenseSpec(10)]),
    ("(3,1,32) (2,2,32) 50 10", [ConvSpec(3, 1, 32, 1), ConvSpec(2, 2, 32, 0), DenseSpec(50), DenseSpec(10)]),
    ("[(5, 2, 8, 2), 10]", [ConvSpec(5, 2, 8, 2), DenseSpec(10)]),
])
def test_parse_strings(text, expected):
    assert parse_spec(text) == expected


def test_cnn_by_name_equals_notation():
    assert parse_spec("cnn") == parse_spec(PAPER_SPECS["cnn"])
    assert [layer.as_notation() for layer in parse_spec("cnn")] == PAPER_SPECS["cnn"]


@pytest.mark.parametrize("spec, message", [
    ([(3, 0, 32), 10], "window, stride and kernels"),
    ([512, (3, 1, 32), 10], "after a dense layer"),
    ([0, 10], "at least one unit"),
    ([(3, 1, 4)], "last layer is the class"),
    ([512, 1], "last layer is the class"),
    ([], "empty spec"),
    ("(3,1", "cannot read spec"),
    ("abc", "cannot read spec"),
    ([(3, 1), 10], "neither a unit count"),
])
def test_invalid_specs_name_the_problem(spec, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(spec)


def test_image_too_small_for_architecture():
    with pytest.raises(SpecError, match="too small"):
        layer_shapes(parse_spec([(5, 1, 4, 0), (5, 1, 4, 0), 10]), (1, 6, 6))
    with pytest.raises(SpecError, match="channels, height, width"):
        layer_shapes(parse_spec([(3, 1, 4), 10]), (784,))
