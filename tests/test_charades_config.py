"""configs/charades_nl.py: the paper's Charades recipe on configs/kinetics_nl.py's networks, a config that passes
every start-up check, and init_checkpoint from a run with another number of classes (the Kinetics classifier
replaced, everything else loaded)."""

import flax
import jax
import numpy as np
import pytest

from nonlocal_jax import training
from nonlocal_jax.data import sampling
from nonlocal_jax.training import checkpoint, checks, loop, parallel
from nonlocal_jax.training import state as state_lib
from tests.training.helpers import load_config


def test_the_default_is_the_papers_table_4_model_and_recipe():
  config = load_config('charades_nl')
  m, d, t = config.model, config.data, config.train
  assert (m.temporal, m.depth, m.nonlocal_locations, m.num_classes) == ('i3d_3x1x1', 101, '5', 157)
  assert (m.norm, m.nonlocal_res3_temporal_groups, m.head_window) == ('affine', 4, (9, 9))
  assert (d.name, d.train_split, d.eval_split, d.num_frames, d.frame_stride) == ('charades', 'train', 'test', 128, 1)
  assert (d.train_crop_window, d.crop_size, d.test_short_side, d.test_crop_size) == (224, 288, 320, 320)
  assert (d.test_num_clips, d.test_num_crops, d.test_view_pooling, d.global_batch_size) == (10, 3, 'max', 8)
  # 0.00125 at 8 clips per update, ÷10 every 75k of 200k.
  assert t.base_learning_rate * d.global_batch_size / t.base_batch_size == 0.00125
  assert (t.num_steps, t.step_boundaries, t.step_factor, t.schedule) == (200_000, (75_000, 150_000), 0.1, 'step')
  checks.check_config(config)  # Every field in range, the data settings fit each other, the network takes the clip.


def test_a_training_view_is_a_224_window_of_the_scaled_frame_resized_to_288():
  d = load_config('charades_nl').data
  sides = set()
  for seed in range(2000):  # Each of the 65 scales at least once (a side reached by one scale: 1/65 a draw).
    (_, _, side, _), _ = sampling.train_window(256, 340, d, np.random.default_rng(seed))
    sides.add(side)
  # The 224 crop of a 256-short frame scaled to s in [256, 320] covers 224·256/s stored pixels (179 to 224).
  assert sides == {round(224 * 256 / s) for s in range(256, 321)}


@pytest.mark.parametrize('arg,want', [('blocks=none', ('none', None, 128)), ('frames=8x8', ('5', 4, 8)),
                                      ('depth=50', ('5', 4, 128))])
def test_variants_take_kinetics_nl_keys(arg, want):
  config = load_config('charades_nl', arg)
  m = config.model
  assert (m.nonlocal_locations, m.nonlocal_res3_temporal_groups, config.data.num_frames) == want
  assert m.temporal == 'i3d_3x1x1' and m.num_classes == 157


def test_a_bad_variant_is_named_with_this_file():
  with pytest.raises(ValueError, match='configs/charades_nl.py argument depth='):
    load_config('charades_nl', 'depth=34')


def _random_state(config, mesh, seed):
  """A TrainState of ``config``'s network with random values: its shapes traced, nothing compiled (seconds)."""
  trainer = training.Trainer(config, mesh)
  shapes = jax.eval_shape(state_lib.create_train_state(config, trainer.model, trainer.tx))
  rng = np.random.default_rng(seed)
  return trainer, jax.tree.map(lambda s: (rng.standard_normal(s.shape).astype(s.dtype)
                                          if np.issubdtype(s.dtype, np.floating) else np.zeros(s.shape, s.dtype)),
                               shapes)


def test_init_checkpoint_with_another_number_of_classes_replaces_only_the_classifier(tmp_path):
  # A 2-class run's checkpoint stands in for the Kinetics model; the new run has 7 classes.
  mesh = parallel.make_mesh()
  _, source = _random_state(load_config('test'), mesh, 0)
  manager = checkpoint.create_manager(str(tmp_path / 'kinetics'), asynchronous=False)
  checkpoint.save(manager, source, batches_consumed=0)
  manager.wait_until_finished()
  loaded = flax.traverse_util.flatten_dict(source.params, sep='/')

  _, fresh = _random_state(load_config('test', **{'model.num_classes': 7}), mesh, 1)
  before = flax.traverse_util.flatten_dict(fresh.params, sep='/')
  state = loop._init_from_checkpoint(fresh, str(tmp_path / 'kinetics'), mesh)  # pylint: disable=protected-access
  now = flax.traverse_util.flatten_dict(jax.device_get(state.params), sep='/')
  assert now.keys() == loaded.keys()
  other = sorted(k for k in now if np.shape(loaded[k]) != np.shape(now[k]))
  assert other == ['pred/bias', 'pred/kernel'] and now['pred/kernel'].shape[-1] == 7
  for k, v in now.items():
    # The classifier keeps its fresh initialisation; every other parameter is the checkpoint's.
    np.testing.assert_array_equal(v, before[k] if k in other else loaded[k], err_msg=k)


def test_a_crop_window_larger_than_the_smallest_scale_is_one_sentence():
  config = load_config('charades_nl', **{'data.train_crop_window': 257})
  with pytest.raises(training.ConfigError, match=r'^config.data.train_crop_window must be at most '
                                                 r'train_short_side_min: fix it in the config.$'):
    checks.check_config(config)
