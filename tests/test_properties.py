"""Property and fuzz tests: random input never crashes with anything but the project's own
errors, and random specs keep shapes, finiteness and probabilities in [0, 1]."""

import gzip

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_dcim import DCIM, SpecError, parse_spec
from pyro_dcim.data import DataError, read_idx
from pyro_dcim.spec import layer_shapes

# no deadline and no too_slow health check: both time the examples, which fails on a loaded machine
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

entry = st.one_of(st.integers(-3, 40), st.tuples(st.integers(-1, 6), st.integers(-1, 4), st.integers(-1, 8)),
                  st.tuples(st.integers(0, 5), st.integers(1, 3), st.integers(1, 4), st.integers(-1, 3)),
                  st.lists(st.integers(0, 5), max_size=5), st.text(max_size=4), st.none(), st.booleans())


@FAST
@given(st.lists(entry, max_size=6))
def test_spec_parser_accepts_or_raises_spec_error(spec):
    try:
        layers = parse_spec(spec)
    except SpecError:
        return
    assert layers and layers[-1].units >= 2
    try:
        shapes = layer_shapes(layers, (1, 12, 12))
    except SpecError:
        return
    assert all(min(s) >= 1 for s in shapes)


@FAST
@given(st.text(max_size=30))
def test_spec_strings_never_crash(text):
    try:
        parse_spec(text)
    except SpecError:
        pass


@FAST
@given(st.binary(max_size=200), st.booleans())
def test_idx_reader_random_bytes(tmp_path_factory, data, compress):
    path = tmp_path_factory.mktemp("idx") / "f"
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        array = read_idx(path)
    except DataError:
        return
    assert array.ndim >= 1


@FAST
@given(st.binary(min_size=1, max_size=64), st.integers(0, 3), st.integers(1, 4))
def test_idx_reader_corrupted_headers(tmp_path_factory, payload, ndim_extra, size):
    # a well-formed uint8 header, then a payload whose length rarely matches
    header = bytes([0, 0, 0x08, 1 + ndim_extra]) + b"".join(size.to_bytes(4, "big") for _ in range(1 + ndim_extra))
    path = tmp_path_factory.mktemp("idx") / "f"
    path.write_bytes(header + payload)
    try:
        array = read_idx(path)
    except DataError:
        return
    assert array.size == len(payload)


specs = st.one_of(
    st.lists(st.integers(1, 12), min_size=1, max_size=3).map(lambda h: h + [3]),
    st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 4), st.integers(1, 9)).map(
        lambda t: [(t[0], t[1], t[2]), t[3], 2]),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs, st.sampled_from(["01", "pm1"]), st.integers(0, 2**16), st.floats(0.1, 8.0))
def test_core_keeps_shapes_finiteness_and_probabilities(spec, units, seed, scale):
    torch.manual_seed(seed)
    net = DCIM.from_spec(spec, input_shape=(1, 6, 5), units=units)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    x0 = torch.rand(3, 1, 6, 5)
    mf = net.forward_mean_field(x0)
    lo = 0.0 if units == "01" else -1.0
    for h, shape in zip(mf.hidden, net.shapes[1:-1]):
        assert h.shape == (3, *shape) and torch.isfinite(h).all() and (h >= lo).all() and (h <= 1).all()
    probs = mf.logits.softmax(-1)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(-1), torch.ones(3))
    rev = net.reverse_mean_field(probs)
    image = torch.sigmoid(rev.logits)
    assert rev.logits.shape == x0.shape and ((image >= 0) & (image <= 1)).all() and torch.isfinite(rev.logits).all()


@pytest.mark.parametrize("bad", [[(3, 0, 32), 10], [512, (3, 1, 32), 10], [0, 10], [512, (3, 1, 4)]])
def test_paper_examples_of_invalid_specs(bad):
    with pytest.raises(SpecError):
        parse_spec(bad)
