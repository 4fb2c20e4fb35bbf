"""Helpers of the model tests: abstract (eval_shape) traces of full-size networks, cached per worker; cheap jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nonlocal_jax.models import ResNetImage, ResNetVideo


@functools.lru_cache(maxsize=None)
def _abstract(cls_name, input_shape, kwargs_items):
  cls = {'video': ResNetVideo, 'image': ResNetImage}[cls_name]
  model = cls(**dict(kwargs_items))
  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  out, variables = jax.eval_shape(lambda x: model.init_with_output(rngs, x, train=False, mutable=True), x)
  return out, variables


def abstract_video(input_shape, **kwargs):
  """(output, variables) ShapeDtypeStructs of ResNetVideo(**kwargs) on an input of this shape; nothing runs."""
  return _abstract('video', tuple(input_shape), tuple(sorted(kwargs.items())))


def abstract_image(input_shape, **kwargs):
  """As abstract_video for ResNetImage."""
  return _abstract('image', tuple(input_shape), tuple(sorted(kwargs.items())))


def count(tree):
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def stage_shapes(variables):
  """{'conv1': (T, H, W, C), ...} from the sown intermediates (batch axis dropped)."""
  return {k[:-len('_out')]: tuple(v[0].shape[1:]) for k, v in variables['intermediates'].items()
          if k.endswith('_out')}


def run(fn, *args):
  """fn(*args), jitted: one program for the whole test function, compiled with the cheap XLA options that
  tests/conftest.py sets for every test (XLA:CPU's optimisation passes dominated the tiny networks' compile time:
  ~20 s per init with the defaults, ~2 s without)."""
  return jax.jit(fn)(*args)


def without_nonlocal(variables):
  """The variables of the same network without its non-local blocks (those of the plain network)."""
  return {c: {k: v for k, v in t.items() if not k.startswith('nonlocal')} for c, t in variables.items()}


def assert_same_function(ours, theirs, ulps=8):
  """ours == theirs up to float32 rounding: at most `ulps` units in the last place of the largest |theirs|.
  A block that is the identity at init leaves the network's function unchanged exactly, but XLA fuses the ops
  around it differently from the plain network's, so the two programs may round the same sums differently (1 ulp
  of the logits seen); a block that is not the identity moves the logits by orders of magnitude more."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert np.all(np.isfinite(ours))
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=ulps * np.finfo(np.float32).eps * np.abs(theirs).max())
