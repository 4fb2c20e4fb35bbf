"""configs/synthetic_nl.py poses a problem that only a non-local block can solve (nonlocal_jax/data/synthetic.py).

The argument needs two facts about the config: the dataset puts its two digits in frames that the C2D network never
pools together before the global pool, and its res5 blocks therefore see one digit frame at a time. Both are
checked here on the config's own network, by changing one digit frame and watching which res5 positions move.
"""

import jax
import numpy as np
import pytest

from nonlocal_jax.data import synthetic
from nonlocal_jax.models import build_model
from tests.training.helpers import load_config


def test_digits_fall_in_the_first_and_last_frame():
  config = load_config('synthetic_nl')
  s = config.data.synthetic
  assert config.data.num_frames == s.num_frames
  gen = synthetic.synthetic_config(**{k: s[k] for k in ('num_frames', 'size', 'digit_size', 'same')})
  frames = {tuple(synthetic.generate_clip(gen, 'train', i)['digit_frames'].tolist()) for i in range(40)}
  assert frames == {(0, s.num_frames - 1)}, frames


@pytest.mark.parametrize('blocks, frame_0_moves', [('none', False), ('res3res4', True)])
def test_res5_sees_the_first_digit_frame_only_through_a_nonlocal_block(blocks, frame_0_moves):
  config = load_config('synthetic_nl', f'blocks={blocks}')
  model = build_model(config.model)
  d = config.data
  rng = np.random.default_rng(0)
  clip = rng.normal(size=(1, d.num_frames, d.crop_size, d.crop_size, 3)).astype(np.float32)
  changed = clip.copy()
  changed[:, -1] = rng.normal(size=changed[:, -1].shape)  # A different last (second digit) frame.
  variables = jax.jit(lambda key, x: model.init(key, x, train=False))(jax.random.PRNGKey(0), clip)
  last = f'res5_{config.model.stage_sizes[-1] - 1}'

  @jax.jit
  def res5_out(variables, x):
    _, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=['intermediates'])
    return state['intermediates'][last]['__call__'][0]

  a, b = np.asarray(res5_out(variables, clip)), np.asarray(res5_out(variables, changed))
  assert a.shape[1] == 2  # The stem's temporal pool of 2: frames (0, 1) and (2, 3).
  assert np.abs(a[:, 1] - b[:, 1]).max() > 1e-4  # The changed frame's own time step moves...
  if frame_0_moves:
    assert np.abs(a[:, 0] - b[:, 0]).max() > 1e-4  # ...and, through the blocks, the other one.
  else:
    np.testing.assert_array_equal(a[:, 0], b[:, 0])  # ...and C2D's other time step cannot.
