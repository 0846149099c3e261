"""Checkpoints: atomic writes, one-call loading, clear errors."""

import pytest
import torch

from pyro_dcim import DCIM, load_model
from pyro_dcim.training.checkpoint import CheckpointError, load_checkpoint, model_state, save_checkpoint


def test_round_trip_rebuilds_the_model(tmp_path):
    net = DCIM.from_spec([(3, 2, 4), 7, 5], input_shape=(1, 9, 9), units="pm1")
    with torch.no_grad():
        net.input_bias.fill_(0.3)
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": model_state(net), "epoch": 3})
    loaded = load_model(tmp_path)  # a run folder works as well as the file
    assert loaded.spec == net.spec and loaded.units.name == "pm1" and loaded.input_shape == (1, 9, 9)
    x = torch.rand(2, 1, 9, 9)
    assert torch.equal(loaded(x), net(x))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(tmp_path)
    state = model_state(DCIM.from_spec([4, 3], input_shape=(6,)))
    other = dict(state, spec=[5, 3])
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": other})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path)
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": dict(state, version="9.9.0")})
    with pytest.raises(CheckpointError, match="9.9.0"):
        load_model(tmp_path)


def test_atomic_writes_take_the_umask_of_the_moment(tmp_path):
    """The file mode follows the umask when the file is written (none is read, or set, at import)."""
    import os
    import stat

    from pyro_dcim.training.atomic import atomic_write

    previous = os.umask(0o027)
    try:
        readable = atomic_write(tmp_path / "a", lambda f: f.write(b"x"))
        private = atomic_write(tmp_path / "b", lambda f: f.write(b"x"), readable=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(readable.stat().st_mode) == 0o640 and stat.S_IMODE(private.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]   # no temporaries left
