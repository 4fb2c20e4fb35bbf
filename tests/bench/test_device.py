"""``python -m bench.device --tiny`` and a fake-data training run, on a Python where TensorFlow, TFDS, clu, PyAV
and grain cannot be imported (as on the GPU machines): both succeed, and what the benchmark writes is checked
against its own rows (the 'auto' table is the ranking of the measured times and 'auto' follows it)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator

from bench import device
from bench import device_plan
from bench import device_report
from bench import device_run
from nonlocal_jax.layers import attention
from nonlocal_jax.training import checks
from tests.once import once
from tests.training import helpers

BLOCKED = ('tensorflow', 'tensorflow_datasets', 'clu', 'av', 'grain')
SHIM = f'import sys\nfor name in {BLOCKED!r}:\n  sys.modules[name] = None  # import name -> ImportError\n'
SCRIPT = """
import json, runpy, sys
sys.argv = ['bench.device', '--tiny', '--out_dir={out}']
runpy.run_module('bench.device', run_name='__main__', alter_sys=True)
from bench import device_plan
from nonlocal_jax import training
# The benchmark's tiny network: its train step is compiled once (the persistent cache has it).
config = device_plan.network_config('c2d_nl', 'bfloat16', tiny=True)
config.train.log_every_steps, config.train.checkpoint_every_steps = 3, 3
training.train_and_evaluate(config, {work!r})
blocked = {blocked!r}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in blocked and sys.modules[m] is not None)))
"""


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """The subprocess's output folder, workdir and last stdout line (the blocked modules it loaded); one run for
  all test workers."""
  def make(base):
    (base / 'shim').mkdir()
    (base / 'shim' / 'sitecustomize.py').write_text(SHIM)
    env = dict(helpers.env_for(1), PYTHONPATH=f"{base / 'shim'}{os.pathsep}{helpers.ROOT}",
               JAX_COMPILATION_CACHE_DIR=str(base / 'cache'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
    script = SCRIPT.format(out=base / 'out', work=str(base / 'work'), blocked=BLOCKED)
    run = subprocess.run([sys.executable, '-c', script], env=env, cwd=helpers.ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return {'out': str(base / 'out' / 'cpu'), 'work': str(base / 'work'),
            'loaded': json.loads(run.stdout.splitlines()[-1])}

  result = once(tmp_path_factory, 'device_tiny_run', make)
  return dict(result, out=pathlib.Path(result['out']), work=pathlib.Path(result['work']))


def test_tiny_device_benchmark_and_fake_training_run_without_tensorflow(tiny_run):
  assert tiny_run['loaded'] == []
  payload = json.loads((tiny_run['out'] / 'device.json').read_text())
  assert payload['tiny'] and payload['slug'] == 'cpu'
  assert {k: v['status'] for k, v in payload['pieces'].items() if v['status'] != 'ok'} == {}
  assert payload['matmul']['bfloat16_tflops'] > 0 and payload['matmul']['float32_tflops'] > 0
  # The tiny plan's step names its settings (the CPU's defaults); its profile traces that step, kept compiled.
  assert [(r['network'], r['dtype'], r['attention'], r['convs'], r['pools']) for r in payload['train']] == [
      ('c2d_nl', 'bfloat16', 'auto', 'folded', 'window')]
  for r in payload['train']:
    assert r['loss_finite'] and r['compile_s'] > 0
    # The floor at the run's own rates: a CPU step calls no cuDNN or cuBLAS, so it is XLA's bytes at the copy rate.
    assert r['library_calls'] == 0
    assert r['floor_ms'] == pytest.approx(r['hlo_gb_per_step'] * 1e9 / (payload['matmul']['copy_gb_per_s'] * 1e9) * 1e3)
    assert r['clips_per_s'] == pytest.approx(r['batch'] * 1e3 / r['step_ms'])
  by_case = {}
  for r in payload['block']:
    by_case.setdefault((r['dtype'], r['pairwise']), {})[r['implementation']] = r
  assert set(by_case) == {('bfloat16', 'embedded_gaussian'), ('float32', 'dot_product')}
  for (dtype, pairwise), rows in by_case.items():
    exact = {'naive', 'chunked'} | ({'lean', 'fused'} if pairwise == 'embedded_gaussian' else {'reassociated'})
    assert {i for i, r in rows.items() if r['status'] == 'ok'} == exact
    assert {i for i, r in rows.items() if r['status'] != 'ok'} == ({'cudnn'} if pairwise != 'dot_product' else set())
    assert all(r['fwd_ms'] > 0 and r['fwd_bwd_ms'] > 0 and r['temp_mib'] >= 0 for r in rows.values()
               if r['status'] == 'ok')
  profile = payload[device.profile_key('auto', 'conv=folded,pool=window')]
  assert profile['status'] == 'ok' and (tiny_run['out'] / profile['trace']).is_file()
  assert not profile['compiled_here']  # The train piece's compiled step, state and batch.
  assert sum(v['share'] for v in profile['by_kind'].values()) == pytest.approx(1.0)
  assert 0 < profile['busy_ms_per_step'] <= profile['span_ms_per_step']
  feed, = payload['feed']
  assert (feed['piece'], feed['clips'], feed['frames'], feed['crop']) == ('feed 4×2×16²', 4, 2, 16)
  assert feed['batch_mb'] == pytest.approx((4 * 2 * 16 * 16 * 3 + 4 * (4 + 1 + 4)) / 1e6)  # clips, side, flip, label
  assert 0 < feed['call_ms'] <= feed['ready_ms'] and feed['call_cpu_ms'] >= 0
  assert feed['call_clips_per_s'] == pytest.approx(4 * 1e3 / feed['call_ms'])
  markdown = (tiny_run['out'] / 'device.md').read_text()
  assert 'Matrix multiply (256²)' in markdown
  assert '- 4 clips of 2×16² (0 MB, 1 device): the call returns after' in markdown
  assert '| c2d_nl (tiny: configs/test.py) | bfloat16 | auto | folded, window |' in markdown
  assert 'input pipeline: skipped' in markdown and 'cudnn | refused' in markdown


def test_the_tiny_auto_table_ranks_the_measured_times_and_auto_follows_it(tiny_run):
  payload = json.loads((tiny_run['out'] / 'device.json').read_text())
  table = json.loads((tiny_run['out'] / 'attention_auto.json').read_text())
  assert table['device_kind'] == 'cpu' and len(table['entries']) == 2
  for entry in table['entries']:
    rows = [r for r in payload['block'] if (r['dtype'], r['pairwise'], r['status']) == (
        entry['dtype'], entry['pairwise'], 'ok')]
    assert entry['ranking'] == [r['implementation'] for r in sorted(rows, key=lambda r: r['fwd_bwd_ms'])]
    chosen = attention.resolve_implementation('auto', entry['pairwise'], entry['groups'], entry['n_query'],
                                              entry['n_key'], entry['inter'], 2**40, dtype=entry['dtype'],
                                              table=table)
    assert chosen == entry['ranking'][0]


def test_the_fake_run_without_tensorflow_writes_tensorboard_scalars(tiny_run):
  events = event_accumulator.EventAccumulator(str(tiny_run['work']))
  events.Reload()
  assert [e.step for e in events.Scalars('train/loss')] == [3, 6]
  assert sorted(s for s in os.listdir(tiny_run['work'] / 'checkpoints') if s.isdigit()) == ['3', '6']


@pytest.mark.parametrize('key, temporal, blocks', [('c2d_nl', 'c2d', '5'), ('c2d', 'c2d', 'none'),
                                                   ('i3d_nl', 'i3d_3x1x1', '5')])
def test_the_device_networks_are_the_issues_at_8x224(key, temporal, blocks):
  for dtype in device_plan.DTYPES:
    config = device_plan.network_config(key, dtype, tiny=False)
    d, m = config.data, config.model
    assert (d.name, d.global_batch_size, d.num_frames, d.crop_size) == ('fake', 8, 8, 224)
    assert (m.depth, m.temporal, m.nonlocal_locations, m.stem, m.dtype) == (50, temporal, blocks, '8x8', dtype)
  variant = device_plan.network_config(key, 'bfloat16', False, variant='conv=folded,pool=slices')
  assert (variant.model.conv_implementation, variant.model.pool_implementation) == ('folded', 'slices')
  frozen = device_plan.network_config(key, 'bfloat16', False, variant='conv=folded,pool=slices,norm=affine')
  assert frozen.model.norm == 'affine' and variant.model.norm == 'batch'
  with pytest.raises(ValueError, match="with NAME one of \\('conv', 'pool', 'norm', 'bn', 'xla'\\)"):
    device_plan.network_config(key, 'bfloat16', False, variant='convs=folded')
  assert device_plan.compiler_options('pool=slices,xla=nhwc') == {'xla_gpu_force_conv_nhwc': True}
  assert device_plan.compiler_options('pool=slices') == {}
  with pytest.raises(ValueError, match='xla: one of'):
    device_plan.compiler_options('xla=fast')
  cudnn = device_plan.network_config(key, 'bfloat16', False, 'cudnn')
  assert cudnn.model.nonlocal_block.implementation == 'cudnn'
  checks.check_config(cudnn)  # Ranges (the dtype, the implementation) and the model's input size: it can start.
  planned = {(w[0], w[1]) for kind, *w in device_plan.FULL['plan'] if kind == 'train'}
  assert {(key, d) for d in device_plan.DTYPES} <= planned  # Every network in both dtypes.
  pieces = [device_plan.piece_name(*p) for p in device_plan.FULL['plan'] if p[0] in ('train', 'profile')]
  assert len(set(pieces)) == len(pieces)  # --resume keeps a piece by its name.
  # ... and the payload a profile by its settings: one key per planned profile.
  profiles = [device.profile_key(p[3], (*p, None, None)[5]) for p in device_plan.FULL['plan'] if p[0] == 'profile']
  assert len(set(profiles)) == len(profiles) and 'profile' in profiles
  assert device.profile_key('lean', 'pool=slices') == 'profile pool=slices,attention=lean'


def test_resume_keeps_the_finished_pieces_and_reruns_the_rest(tiny_run, tmp_path):
  # A second lease after a first that left one piece failed: only that piece runs again.
  out = tmp_path / 'out'
  shutil.copytree(tiny_run['out'], out / 'cpu')
  payload = json.loads((out / 'cpu' / 'device.json').read_text())
  failed = 'block res3 float32 dot_product'
  payload['pieces'][failed] = {'status': 'failed', 'error': 'RuntimeError: the lease ended'}
  (out / 'cpu' / 'device.json').write_text(json.dumps(payload))
  resumed = device.main(['--tiny', '--resume', f'--out_dir={out}'])
  assert {k: v['status'] for k, v in resumed['pieces'].items()} == {k: 'ok' for k in payload['pieces']}
  for key in ('train', 'matmul', device.profile_key('auto', 'conv=folded,pool=window'), 'feed'):  # Kept, not rerun.
    assert resumed[key] == payload[key], key
  kept = [r for r in resumed['block'] if (r['dtype'], r['pairwise']) == ('bfloat16', 'embedded_gaussian')]
  assert kept == [r for r in payload['block'] if (r['dtype'], r['pairwise']) == ('bfloat16', 'embedded_gaussian')]
  rerun = [r for r in resumed['block'] if (r['dtype'], r['pairwise']) == ('float32', 'dot_product')]
  assert {r['implementation'] for r in rerun} == {r['implementation'] for r in payload['block']
                                                   if (r['dtype'], r['pairwise']) == ('float32', 'dot_product')}
  assert len(resumed['earlier_runs']) == 1


def test_resume_runs_again_a_block_case_that_lacks_an_implementation():
  # res3 at batch 8: 3136 queries, 784 keys, C' = 256; res4: 784, 196, 512.
  res3, res4 = (4, 28, 28, 512), (4, 14, 14, 1024)
  row = lambda shape, impl: dict(shape=shape, dtype='bfloat16', pairwise='embedded_gaussian', implementation=impl)
  entry = lambda n_query, n_key, inter: dict(pairwise='embedded_gaussian', dtype='bfloat16', groups=8,
                                            n_query=n_query, n_key=n_key, inter=inter, ranking=['naive'])
  payload = dict(block=[row('res3', 'naive'), row('res3', 'fused'), row('res4', 'naive')],
                 auto_entries=[entry(3136, 784, 256), entry(784, 196, 512)])
  before = json.loads(json.dumps(payload))
  assert not device.forget_block_case(payload, 'res3', res3, 'bfloat16', 'embedded_gaussian', ['naive', 'fused'])
  assert payload == before
  assert device.forget_block_case(payload, 'res3', res3, 'bfloat16', 'embedded_gaussian', ['naive', 'lean', 'fused'])
  assert payload == dict(block=[row('res4', 'naive')], auto_entries=[entry(784, 196, 512)])


def test_the_formulations_are_the_fastest_step_of_each_kind_of_network_among_two_or_more():
  row = lambda clips, kind='c2d', **kw: dict(dict(device_run.FORMULATION_CASES[kind], status='ok',
                                                  clips_per_s=clips), **kw)
  old = row(400.0)  # Measured before rows recorded their formulation: native convolutions, reduce_window pools.
  assert device_run.formulations([old]) == {}
  rows = [old, row(500.0, convs='folded', pools='window'), row(650.0, convs='folded', pools='slices'),
          row(900.0, convs='native', pools='slices', batch=32),  # Another batch: not the measured step.
          row(990.0, convs='native', pools='slices', network='c2d'),  # Another network.
          row(995.0, convs='native', pools='slices', variant='conv=native,pool=slices,xla=nhwc'),  # Not 'auto's.
          row(999.0, convs='native', pools='window', variant='conv=native,pool=window,bn=flax'),  # A comparison.
          dict(row(0.0, convs='native', pools='slices'), status='failed'),
          row(336.0, 'i3d'), row(300.0, 'i3d', convs='folded', pools='slices')]
  chosen = device_run.formulations(rows)
  assert (chosen['c2d']['conv_implementation'], chosen['c2d']['pool_implementation']) == ('folded', 'slices')
  assert chosen['c2d']['clips_per_s'] == {'folded, slices': 650.0, 'folded, window': 500.0, 'native, window': 400.0}
  labels = [device_report._formulation_label(r) for r in rows[5:7]]  # pylint: disable=protected-access
  assert labels == ['native, slices, XLA nhwc', 'native, window, BN flax']
  # I3D keeps its own winner: folding its 3×1×1 kernels measured slower here.
  assert (chosen['i3d']['conv_implementation'], chosen['i3d']['pool_implementation']) == ('native', 'window')
