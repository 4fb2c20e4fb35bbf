"""PySlowFast .pyth checkpoints (only when PyTorch is installed): names mapped onto the Caffe2 blobs, then parity."""

import re

import numpy as np
import pytest

from nonlocal_jax import convert
from tests.convert import helpers
from tests.convert.reference import Arch, forward, make_blobs

torch = pytest.importorskip('torch')


def _pyslowfast_name(name):
  """Caffe2 blob name -> PySlowFast parameter name (written independently of the converter's mapping)."""
  bn = {'s': 'weight', 'b': 'bias', 'rm': 'running_mean', 'riv': 'running_var'}
  if name == 'conv1_w':
    return 's1.pathway0_stem.conv.weight'
  if name.startswith('res_conv1_bn_'):
    return 's1.pathway0_stem.bn.' + bn[name.rsplit('_', 1)[1]]
  if name.startswith('pred_'):
    return 'head.projection.' + ('weight' if name.endswith('w') else 'bias')
  m = re.fullmatch(r'nonlocal_conv(\d)_(\d+)_(theta|phi|g|out|bn)_(\w+)', name)
  if m:
    module = 'bn' if m[3] == 'bn' else f'conv_{m[3]}'
    leaf = bn[m[4]] if m[3] == 'bn' else ('weight' if m[4] == 'w' else 'bias')
    return f's{m[1]}.pathway0_nonlocal{m[2]}.{module}.{leaf}'
  m = re.fullmatch(r'res(\d)_(\d+)_(branch1|branch2[abc])(_bn)?_(\w+)', name)
  part = m[3] if m[3] == 'branch1' else f'branch2.{m[3][-1]}'
  leaf = bn[m[5]] if m[4] else 'weight'
  return f's{m[1]}.pathway0_res{m[2]}.{part}{m[4] or ""}.{leaf}'


def test_pyth_checkpoint_converts_and_matches(tmp_path):
  arch = Arch(stem='8x8', i3d=True)
  blobs = make_blobs(arch, seed=9, extras=False)
  state = {_pyslowfast_name(k): torch.from_numpy(v) for k, v in blobs.items()}
  state['s1.pathway0_stem.bn.num_batches_tracked'] = torch.tensor(5)
  torch.save({'epoch': 196, 'model_state': state, 'optimizer_state': {}}, tmp_path / 'checkpoint.pyth')
  loaded = convert.load_blobs(str(tmp_path / 'checkpoint.pyth'))
  assert sorted(loaded) == sorted(blobs)
  shape = (1, 4, 32, 32, 3)
  model, variables = helpers.converted(arch, loaded, shape)
  x = helpers.clips(shape, seed=10)
  np.testing.assert_allclose(helpers.logits(model, variables, x), forward(blobs, x, arch), rtol=0, atol=1e-4)
