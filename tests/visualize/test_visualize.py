"""Attention maps: the strongest keys are those of the sown weights, normalisation per pairwise function, figures
and the command-line path from a workdir's checkpoint to a PNG."""

import os

import jax
import numpy as np
import pytest

from nonlocal_jax import visualize
from nonlocal_jax.models import ResNetVideo
from tests import remote

PNG = b'\x89PNG\r\n\x1a\n'


def _model_and_variables(pairwise, positions=None, subsample=(1, 2, 2)):
  model = ResNetVideo(stage_sizes=(1, 1, 1, 1), width=4, num_classes=3, stem='8x8', nonlocal_locations='res3:0',
                      nonlocal_block={'pairwise': pairwise, 'positions': positions, 'subsample': subsample},
                      head_window=None)
  clips = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), clips, train=False)
  # θ, φ and w_f start at N(0, 0.01²), which makes near-uniform weights: give them a scale that ranks keys.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p * 20.0 if any(getattr(k, 'key', '') in ('theta', 'phi', 'concat_project') for k in path)
      else p, variables['params'])
  return model, {**variables, 'params': params}, np.asarray(clips)


@pytest.mark.parametrize('pairwise', ['embedded_gaussian', 'dot_product', 'concatenation'])
def test_strongest_keys_are_the_argsort_of_the_sown_weights(pairwise):
  model, variables, clips = _model_and_variables(pairwise)
  _, state = model.apply(variables, clips, train=False, mutable=['intermediates'])
  sown = np.asarray(state['intermediates']['nonlocal_conv3_0']['attention'][0])
  [block] = visualize.attention_weights(model, variables, clips).values()
  np.testing.assert_array_equal(block.weights, sown)
  t_grid, h_grid, w_grid = block.query_grid
  assert block.key_grid == (t_grid, h_grid // 2, w_grid // 2)
  assert sown.shape == (2, t_grid * h_grid * w_grid, np.prod(block.key_grid))
  for b, query in ((0, (0, 1, 2)), (1, (t_grid - 1, h_grid - 1, 0))):
    row = sown[b, np.ravel_multi_index(query, block.query_grid)]
    assert np.ptp(row) > 1e-3  # The weights are not uniform, so the ranking means something.
    weights = visualize.query_weights(block, b, query)
    np.testing.assert_array_equal(visualize.strongest_keys(weights, 5), np.argsort(-np.abs(row), kind="stable")[:5])
    np.testing.assert_allclose(np.abs(weights).sum(), 1.0, rtol=1e-5)
    if pairwise == 'embedded_gaussian':
      np.testing.assert_allclose(weights.ravel(), row, rtol=1e-6)  # Softmax rows are shown as they are.
    else:
      np.testing.assert_allclose(weights.ravel(), row / np.abs(row).sum(), rtol=1e-5)
  if pairwise == 'dot_product':
    assert (sown < 0).any()  # Dot products are signed: the reason for the |w| normalisation.


def test_space_only_queries_see_only_their_own_frame():
  model, variables, clips = _model_and_variables('embedded_gaussian', positions='space')
  [block] = visualize.attention_weights(model, variables, clips).values()
  t_grid, h_grid, w_grid = block.query_grid
  assert t_grid == 2
  weights = visualize.query_weights(block, 1, (1, 1, 1))
  row = block.weights[1 * t_grid + 1, 1 * w_grid + 1]
  np.testing.assert_allclose(weights[1].ravel(), row, rtol=1e-6)
  assert np.all(weights[0] == 0)
  offset = block.key_grid[1] * block.key_grid[2]
  np.testing.assert_array_equal(visualize.strongest_keys(weights, 3), offset + np.argsort(-row, kind="stable")[:3])
  with pytest.raises(visualize.VisualizeError, match='outside'):
    visualize.query_weights(block, 0, (t_grid, 0, 0))


def test_key_frames_cover_the_clip():
  # By hand: 8 frames on 4 steps: pairs; 8 frames on 3 steps: 0-1, 2-4, 5-7; 2 frames on 4 steps: one frame each.
  assert [visualize.key_frames(t, 4, 8) for t in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
  assert [visualize.key_frames(t, 3, 8) for t in range(3)] == [(0, 2), (2, 5), (5, 8)]
  assert [visualize.key_frames(t, 4, 2) for t in range(4)] == [(0, 1), (0, 1), (1, 2), (1, 2)]


def test_figure_is_written(tmp_path):
  model, variables, clips = _model_and_variables('dot_product')
  [block] = visualize.attention_weights(model, variables, clips).values()
  fig = visualize.plot_attention(block, clips[0], [(0, 1, 1), (1, 2, 2)], top_k=4)
  assert len(fig.axes) == 2 * block.key_grid[0]
  # Each column shows the mean of the input frames its key step covers (4 frames on a 2-step map: 2 each).
  assert block.key_grid[0] == 2 and clips.shape[1] == 4
  frames = visualize._display(clips[0])
  assert [ax.get_title() for ax in fig.axes[:2]] == ['frames 0-1', 'frames 2-3']
  np.testing.assert_allclose(fig.axes[1].images[0].get_array(), (frames[2] + frames[3]) / 2, rtol=1e-6)
  path = tmp_path / 'attention.png'
  fig.savefig(path, format='png')
  assert path.read_bytes()[:8] == PNG


def test_from_a_workdir_checkpoint_and_a_video_file(tmp_path, remote_dir):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.training import TrainState, checkpoint  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from tests.data import fixtures  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  spec = importlib.util.spec_from_file_location('configs_test', os.path.join(root, 'configs', 'test.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  model = build_model(config.model)
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 4, 16, 16, 3), np.float32), train=False)
  state = TrainState(step=np.zeros((), np.int32), params=variables['params'],
              batch_stats=variables['batch_stats'], opt_state={}, rng=jax.random.key_data(
                  jax.random.PRNGKey(0)))
  manager = checkpoint.create_manager(workdir, asynchronous=False)
  checkpoint.save(manager, state, batches_consumed=0)
  manager.close()
  video = str(tmp_path / 'clip.mp4')
  fixtures.write_video(video, num_frames=12, fps=10, size=(24, 32))
  output = str(tmp_path / 'out' / 'attention.png')
  block, fig = visualize.visualize(workdir, output, video=video, queries=[(0, 0, 0), (1, 1, 1)], top_k=3)
  assert block.name == 'nonlocal_conv3_0' and block.weights.shape[0] == 1
  np.testing.assert_allclose(block.weights.sum(-1), 1.0, rtol=1e-5)  # Embedded Gaussian: distributions.
  assert open(output, 'rb').read(8) == PNG and fig.axes
  remote_output = f'{remote_dir}/figures/attention.png'  # Figures can go to a bucket (gs://) too.
  visualize.visualize(workdir, remote_output, video=video, queries=[(0, 0, 0), (1, 1, 1)], top_k=3)
  assert remote.files_under(remote_dir)['figures/attention.png'] == open(output, 'rb').read()
  with pytest.raises(visualize.VisualizeError, match='choose one of'):
    visualize.visualize(workdir, output, video=video, block='nonlocal_conv9_9')
  with pytest.raises(visualize.VisualizeError, match='t,h,w triples'):
    visualize.parse_queries('1,2')
