"""Builds the Flax model of a reference ``Arch`` and runs converted weights through it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nonlocal_jax import convert
from nonlocal_jax.models import ResNetVideo
from tests.training.helpers import load_config  # pylint: disable=unused-import (the tests call helpers.load_config)



def placement(arch):
  """The Arch's non-local positions in the models' 'res3:1;res4:0' form."""
  items = [f'res{k}:{",".join(map(str, idx))}' for k, idx in zip((2, 3, 4, 5), arch.nonlocal_after) if idx]
  return ';'.join(items) or 'none'


def video_model(arch, **overrides):
  """The ResNetVideo that the blobs of ``arch`` belong to."""
  kwargs = dict(stage_sizes=arch.stage_sizes, width=arch.width, num_classes=arch.num_classes,
                temporal='i3d_3x1x1' if arch.i3d else 'c2d', stem=arch.stem,
                stem_pool_padding=arch.stem_pool_padding, nonlocal_locations=placement(arch),
                norm='affine' if arch.affine else 'batch', nonlocal_res3_temporal_groups=arch.res3_groups,
                head_window=None, dropout_rate=0.0)
  kwargs.update(overrides)
  return ResNetVideo(**kwargs)


def abstract_variables(model, shape):
  """Variable shapes of ``model`` for inputs of ``shape`` (nothing runs)."""
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), jnp.zeros(shape, jnp.float32))


def initial_variables(model, shape, seed=1):
  """Initialised variables of ``model`` (numpy)."""
  init = jax.jit(lambda key: model.init(key, jnp.zeros(shape, jnp.float32), train=False))
  # The rbg generator compiles about 3x faster than threefry here; the values only need to be some init.
  return jax.device_get(init(jax.random.key(seed, impl='unsafe_rbg')))


@functools.lru_cache(maxsize=None)
def initial_for(arch, shape):
  """``initial_variables`` of the model of ``arch``, cached per test worker."""
  return initial_variables(video_model(arch), shape)


def logits(model, variables, clips, **kwargs):
  """Eval-mode logits as float64 numpy."""
  out = jax.jit(lambda v, x: model.apply(v, x, train=False, **kwargs))(variables, jnp.asarray(clips, jnp.float32))
  return jax.tree.map(lambda a: np.asarray(a, np.float64), out)


def clips(shape, seed=0):
  """Clips roughly as normalised video: N(0, 1)."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def converted(arch, blobs, shape, **kwargs):
  """(model, variables) after converting ``blobs`` strictly."""
  model = video_model(arch)
  return model, convert.convert_blobs(blobs, abstract_variables(model, shape), **kwargs)
