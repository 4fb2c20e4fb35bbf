"""The long-range synthetic benchmark: labels are what its digits say, splits use disjoint digit images."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nonlocal_jax.data import synthetic


def test_stored_labels_are_what_the_digits_say(synthetic_prepared):
  builder = synthetic_prepared['builder']
  _, targets = synthetic._digits()  # pylint: disable=protected-access
  labels = []
  for ex in tfds.as_numpy(builder.as_dataset(split='train')):
    classes = ex['digit_classes']
    np.testing.assert_array_equal(targets[ex['digit_indices']], classes)  # Recorded classes are the images'.
    assert ex['label'] == synthetic.label_from_digits('same_different', classes)
    labels.append(ex['label'])
  assert len(labels) == 96 and sum(labels) == 48  # Balanced.


def test_digits_are_in_the_recorded_frames_and_places():
  config = synthetic.synthetic_config('sum_mod10', noise_std=0.0, num_distractors=0)
  images, _ = synthetic._digits()  # pylint: disable=protected-access
  for index in range(20):
    ex = synthetic.generate_clip(config, 'test', index)
    assert ex['label'] == (ex['digit_classes'][0] + ex['digit_classes'][1]) % 10
    t = config.num_frames
    assert ex['digit_frames'][0] < t // 4 and ex['digit_frames'][1] >= t - t // 4
    video = ex['video'][..., 0].astype(np.float32)
    for k in range(2):
      y, x = ex['digit_positions'][k]
      patch = video[ex['digit_frames'][k], y:y + config.digit_size, x:x + config.digit_size]
      # pylint: disable-next=protected-access
      expected = 20 + 200 * synthetic._upscale(images[ex['digit_indices'][k]], config.digit_size)
      np.testing.assert_allclose(patch, np.round(expected), atol=1)
    others = np.delete(video, ex['digit_frames'], axis=0)
    assert (others == 20).all()  # No noise, no distractors: frames without a digit are blank.


def test_splits_use_disjoint_digit_images():
  pools = synthetic.digit_pools(seed=0)
  assert not set(pools['train']) & set(pools['test'])
  assert not set(pools['train']) & set(pools['validation'])
  assert not set(pools['validation']) & set(pools['test'])
  config = synthetic.synthetic_config('same_different')
  used = {split: {i for n in range(50) for i in synthetic.generate_clip(config, split, n)['digit_indices']}
          for split in ('train', 'test')}
  assert used['train'] <= set(pools['train']) and used['test'] <= set(pools['test'])


def test_generation_is_deterministic_for_a_seed():
  a = synthetic.generate_clip(synthetic.synthetic_config('sum_mod10'), 'train', 5)
  b = synthetic.generate_clip(synthetic.synthetic_config('sum_mod10'), 'train', 5)
  c = synthetic.generate_clip(synthetic.synthetic_config('sum_mod10', seed=1), 'train', 5)
  np.testing.assert_array_equal(a['video'], b['video'])
  assert not np.array_equal(a['video'], c['video'])


def test_sum_mod10_uses_all_ten_labels():
  config = synthetic.synthetic_config('sum_mod10')
  labels = [synthetic.generate_clip(config, 'train', i)['label'] for i in range(200)]
  assert set(labels) == set(range(10))


def test_command_line_variant_is_what_the_pipeline_reads(tmp_path):
  from configs import default  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import builders, prepare  # pylint: disable=g-import-not-at-top
  assert prepare.main(['synthetic_long_range/sum_mod10', f'--data_dir={tmp_path}', '--num_train=8',
                       '--num_validation=4', '--num_test=0', '--size=24']) == 0
  c = default.data_config()
  c.name, c.data_dir = 'synthetic_long_range/sum_mod10', str(tmp_path)
  c.synthetic.num_train, c.synthetic.num_validation, c.synthetic.num_test, c.synthetic.size = 8, 4, 0, 24
  builder = builders.check_prepared(c.name, c.data_dir, ['train', 'validation'], c.synthetic)
  assert builder.info.splits['train'].num_examples == 8 and builders.num_classes(c, builder) == 10


def test_same_image_pairs_repeat_one_image_and_different_pairs_differ_in_class(tmp_path):
  config = synthetic.synthetic_config('same_different', same='image')
  assert config.name == 'same_different_sameimage'
  _, targets = synthetic._digits()  # pylint: disable=protected-access
  for index in range(40):
    ex = synthetic.generate_clip(config, 'train', index)
    i1, i2 = ex['digit_indices']
    assert (i1 == i2) == bool(ex['label'])
    assert (targets[i1] == targets[i2]) == bool(ex['label'])
  # The default still pairs two different images of one class.
  for index in range(0, 40, 2):
    ex = synthetic.generate_clip(synthetic.synthetic_config('same_different'), 'train', index)
    assert ex['label'] == 1 and ex['digit_indices'][0] != ex['digit_indices'][1]
  with pytest.raises(ValueError, match="same='pixel'"):
    synthetic.synthetic_config('same_different', same='pixel')
  from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
  assert prepare.main(['synthetic_long_range/same_different', f'--data_dir={tmp_path}', '--num_train=4',
                       '--num_validation=2', '--num_test=2', '--size=16', '--digit_size=8', '--same=image']) == 0
  assert (tmp_path / 'synthetic_long_range' / 'same_different_s16_d8_sameimage_ntrain4_nval2_ntest2').is_dir()


def test_one_function_names_the_variant_of_a_set_of_settings():
  # config.data.synthetic (all fields) and the prepare flags (None where not given) pick the same variant.
  from configs import default  # pylint: disable=g-import-not-at-top
  assert synthetic.builder_config('sum_mod10', default.data_config().synthetic) == 'sum_mod10'
  assert synthetic.builder_config('sum_mod10', {'size': None, 'seed': 0}) == 'sum_mod10'
  assert synthetic.builder_config('same_different', None) == 'same_different'
  variant = synthetic.builder_config('sum_mod10', {'size': 24, 'num_test': None, 'noise_std': 20.0})
  assert variant.name == 'sum_mod10_s24' and variant.size == 24 and variant.task == 'sum_mod10'
