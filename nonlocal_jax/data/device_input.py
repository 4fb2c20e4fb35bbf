"""The last steps of the input, run on the device inside the jitted steps: resize each view, normalise.

The host ships uint8 views (``nonlocal_jax.data.transforms``): a window smaller than the view sits in the top-left
corner of its array with its side in ``batch['view_side']``. Here each view is resized to the full array
bilinearly (half-pixel centres, no antialiasing: the same samples as ``tf.image.resize`` of the window alone),
flipped horizontally where ``batch['view_flip']`` says (training), and normalised as
``config.data.normalization`` says. On an accelerator this costs a fraction of a percent of a
training step; on the host it cost a third of the pipeline's time, and float32 views would have made the
host-to-device copy four times larger.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from nonlocal_jax.data import normalization


def resize_views(views: jax.Array, sides: jax.Array) -> jax.Array:
  """float32 views (B, [T,] S, S, 3): the top-left ``sides[b]``-pixel square of each view resized to S×S."""
  size = views.shape[-2]
  spatial = (views.ndim - 3, views.ndim - 2)

  def one(view, side):
    scale = size / side.astype(jnp.float32)
    return jax.image.scale_and_translate(view.astype(jnp.float32), view.shape, (spatial[0] - 1, spatial[1] - 1),
                                         jnp.stack([scale, scale]), jnp.zeros(2, jnp.float32), method='linear',
                                         antialias=False)

  return jax.vmap(one)(views, sides)


def network_input(data_config: Any = None) -> Callable[[dict], jax.Array]:
  """The function the jitted steps apply to a batch to get the network's input: views resized (when the batch
  has ``view_side``) and flipped (``view_flip``), uint8 pixels normalised; float inputs without them (fake data)
  pass unchanged."""
  normalize = normalization.on_device(data_config)

  def apply(batch: dict) -> jax.Array:
    # Normalising first is exact: resizing (weights summing to 1) and flipping commute with it.
    x = normalize(batch['clips'] if 'clips' in batch else batch['image'])
    if 'view_side' in batch:
      x = resize_views(x, batch['view_side'])
    if 'view_flip' in batch:
      flip = batch['view_flip'].reshape(batch['view_flip'].shape + (1,) * (x.ndim - 1))
      x = jnp.where(flip, x[..., ::-1, :], x)
    return x

  return apply
