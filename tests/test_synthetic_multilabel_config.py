"""configs/synthetic_multilabel.py poses unpaired_digits on synthetic_nl's network: each half of the clip falls in
one of the C2D network's two temporal pool windows, which tests/test_synthetic_config.py shows stay apart until
the global pool without a non-local block."""

import pytest

from nonlocal_jax.data import synthetic
from tests.training.helpers import load_config


def test_each_half_of_the_clip_is_one_temporal_pool_window():
  config = load_config('synthetic_multilabel')
  s = config.data.synthetic
  assert config.data.name == 'synthetic_long_range/unpaired_digits' and config.data.num_frames == s.num_frames == 4
  gen = synthetic.synthetic_config('unpaired_digits', **{k: s[k] for k in ('num_frames', 'size', 'digit_size')})
  for i in range(40):
    clip = synthetic.generate_clip(gen, 'train', i)
    # The 8x8 stem pools frames (0, 1) and (2, 3): the first half's digits in the first window, the second's in the
    # second.
    assert clip['digit_frames'].tolist() == [0, 1, 2, 3]
    first, second = set(clip['digit_classes'][:2].tolist()), set(clip['digit_classes'][2:].tolist())
    assert set(clip['label'].tolist()) == first ^ second


@pytest.mark.parametrize('blocks', ['none', 'res3res4'])
def test_the_network_is_synthetic_nl_s_with_ten_outputs(blocks):
  multi_label = load_config('synthetic_multilabel', f'blocks={blocks}').model.to_dict()
  single = load_config('synthetic_nl', f'blocks={blocks}').model.to_dict()
  assert multi_label.pop('num_classes') == 10 and single.pop('num_classes') == 2
  assert multi_label == single
