"""The input normalisation of ``config.data.normalization``: its constants, applied and undone on NumPy arrays.

'official' is the official code's (x - 114.75) / 57.375 of 0-255 pixels; 'mean_std' is (x - config.data.mean) /
config.data.std, per channel; 'none' leaves pixels as they are. The tf.data pipelines and the visualiser read the
constants from here. The input pipelines deliver uint8 pixels; ``on_device`` is what the jitted steps apply to
them. No TensorFlow: the visualiser and the notebooks import this module.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

# The official code's input normalisation: pixels on 0-255, (x - 114.75) / 57.375.
OFFICIAL_MEAN = 114.75
OFFICIAL_STD = 57.375

KINDS = ('official', 'mean_std', 'none')  # The values config.data.normalization takes.


def mean_and_std(data_config: Any = None) -> Optional[tuple[Any, Any]]:
  """(mean, std) that ``config.data``'s normalisation subtracts and divides by; None for 'none'.

  ``data_config`` is ``config.data`` or a mapping with its ``normalization`` (and ``mean``, ``std``) keys; None
  means the official normalisation. The official constants are Python floats, which keep a float32 array float32;
  'mean_std' gives float64 arrays of the per-channel values.
  """
  kind = 'official' if data_config is None else data_config['normalization']
  if kind == 'official':
    return OFFICIAL_MEAN, OFFICIAL_STD
  if kind == 'mean_std':
    return np.asarray(data_config['mean']), np.asarray(data_config['std'])
  return None


def normalize(x: np.ndarray, data_config: Any = None) -> np.ndarray:
  """0-255 pixels ``x`` normalised as ``config.data`` says (see ``mean_and_std``)."""
  constants = mean_and_std(data_config)
  if constants is None:
    return x
  mean, std = constants
  return (x - mean) / std


def denormalize(x: np.ndarray, data_config: Any = None) -> np.ndarray:
  """The 0-255 pixels a network input ``x`` was normalised from (the inverse of ``normalize``)."""
  constants = mean_and_std(data_config)
  if constants is None:
    return x
  mean, std = constants
  return x * std + mean


def on_device(data_config: Any = None) -> Callable[[Any], Any]:
  """The function the jitted steps apply to a batch's input: uint8 pixels become float32 normalised as
  ``config.data`` says; inputs that are already float (fake data, or arrays a user normalised) pass unchanged.

  Normalising on the device, after the copy, makes the host's work and the host-to-device copy four times smaller
  than shipping float32 clips.
  """
  constants = mean_and_std(data_config)

  def apply(x):
    if x.dtype != np.uint8:
      return x
    x = x.astype(np.float32)
    if constants is None:
      return x
    mean, std = constants
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)

  return apply
