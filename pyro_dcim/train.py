"""The training API's former home, kept for ``from pyro_dcim.train import TrainConfig, train``;
the code lives in :mod:`pyro_dcim.training`."""

from .training.batches import epoch_permutation, load_splits, shard_indices  # noqa: F401
from .training.config import ConfigError, TrainConfig, resolve_device  # noqa: F401
from .training.loop import NonFiniteLossError, TrainResult, build_model, evaluate, train  # noqa: F401
from .training.signals import TrainingInterrupted  # noqa: F401
