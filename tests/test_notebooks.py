"""The notebooks run: 01 and 02 in full, 03's cells that need no TPU/GCS/Colab, each on tiny settings, in a
Jupyter kernel of this interpreter; and every committed notebook has cleared outputs and one parameters cell.

Tiny settings are appended to the notebook's ``parameters`` cell (as papermill injects them), so a knob the
test does not name keeps its default. A cell appended at the end dumps the notebook variables the assertions
read to a JSON file.
"""

import json
import pathlib
import re
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / 'notebooks'
NOTEBOOKS = ('01_nonlocal_block.ipynb', '02_train_synthetic.ipynb', '03_colab_tpu_kinetics.ipynb')
PARAMETERS_TAG = 'parameters'
COLAB_TAG = 'colab-only'
# Per cell; generous because the 2-core test machines are shared (the tiny cells take seconds when idle).
CELL_TIMEOUT_S = 600
# What only a Colab TPU runtime can run; a device-independent (untagged) cell of 03 must contain none of it.
DEVICE_ONLY = re.compile(r'from google\.colab|%tensorboard|%load_ext|gcsfuse|train_and_evaluate\(|'
                         r'evaluate_checkpoint\(|device_count\(\) ==|check_prepared\(')


def _tags(cell) -> list:
  return list(cell.get('metadata', {}).get('tags', []))


def _read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def _execute(name: str, tiny: str, outputs: list, tmp_path: pathlib.Path, *, skip_colab_only=False) -> dict:
  """Runs notebooks/<name> with ``tiny`` appended to its parameters cell; returns the notebook's ``outputs``."""
  import nbclient  # pylint: disable=g-import-not-at-top
  nb = _read(name)
  if skip_colab_only:
    nb.cells = [c for c in nb.cells if COLAB_TAG not in _tags(c)]
  [parameters] = [c for c in nb.cells if PARAMETERS_TAG in _tags(c)]
  parameters.source += '\n\n# Tiny settings of tests/test_notebooks.py.\n' + tiny
  # The 'python3' kernelspec found first on the Jupyter path could belong to another installation.
  guard = nbformat.v4.new_code_cell(
      f'import sys\nassert sys.prefix == {sys.prefix!r}, (f"The python3 kernel runs {{sys.executable}}, not the '
      f'tests\' interpreter {sys.executable}: install ipykernel in this environment.")')
  result_path = tmp_path / f'{pathlib.Path(name).stem}_outputs.json'
  dump = nbformat.v4.new_code_cell(
      f'import json\nwith open({str(result_path)!r}, "w") as f:\n'
      f'  json.dump({{k: globals()[k] for k in {outputs!r}}}, f, default=str)')
  nb.cells = [guard] + nb.cells + [dump]
  client = nbclient.NotebookClient(nb, kernel_name='python3', timeout=CELL_TIMEOUT_S,
                                   resources={'metadata': {'path': str(NOTEBOOK_DIR)}})
  try:
    client.execute()  # A failing cell raises CellExecutionError with that cell's source and traceback.
  finally:
    # Kept for a post-mortem (outputs of every cell run so far), e.g. when the kernel died without a traceback.
    nbformat.write(nb, tmp_path / f'executed_{name}')
  return json.loads(result_path.read_text())


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_notebook_is_clean(name):
  nb = _read(name)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  for cell in code:
    assert cell.outputs == [] and cell.execution_count is None, f'{name}: clear the outputs before committing'
  # Small metadata only: editors may add cell ids or a Colab section, not execution records or widget state.
  for cell in nb.cells:
    assert len(json.dumps(cell.metadata)) <= 200, f'{name}: large cell metadata {dict(cell.metadata)}'
  assert len(json.dumps(nb.metadata)) <= 1000 and 'widgets' not in nb.metadata, f'{name}: large notebook metadata'
  assert (NOTEBOOK_DIR / name).stat().st_size < 64_000, f'{name} is large: outputs or images left in it?'
  assert 'google.colab' in code[0].source and 'pip' in code[0].source, f'{name}: the first code cell installs on Colab'
  tagged = [i for i, c in enumerate(code) if PARAMETERS_TAG in _tags(c)]
  assert len(tagged) == 1 and tagged[0] <= 2, f'{name}: one "parameters" cell, among the first code cells'


def test_colab_only_cells_hold_everything_device_dependent():
  nb = _read('03_colab_tpu_kinetics.ipynb')
  tagged = [c for c in nb.cells if COLAB_TAG in _tags(c)]
  assert len(tagged) >= 5
  for cell in nb.cells:
    if cell.cell_type == 'code' and COLAB_TAG not in _tags(cell):
      assert not DEVICE_ONLY.search(cell.source), f'untagged cell needs a TPU, GCS or Colab:\n{cell.source}'


def test_01_nonlocal_block(tmp_path):
  tiny = 'CROP = 64\nPATCH_DISTANCE = 3\nTOY_SIZE = 30\n'  # 7×7 patches in a 7×7 window on a 64×64 crop.
  out = _execute('01_nonlocal_block.ipynb', tiny, ['psnr', 'identity_error', 'perturbed_error', 'top_keys_match'],
                 tmp_path)
  psnr = out['psnr']
  # Denoising must help: at these settings non-local means gains ~9 dB over the noisy input.
  assert psnr['jax'] > psnr['noisy'] + 3.0, psnr
  # The implementations differ in details (skimage's fast mode sums an (s-1)² window, drops weights below e^-5,
  # uses an approximate exp): measured 0.37-0.60 dB apart at these settings over 8 noise seeds, and 0.1-0.75 dB
  # at other crops (64² to 512²), patch sizes (5, 7) and windows (7² to 21²). Deliberate bugs measured at these
  # settings cost 1.6-9 dB (inverse-distance weights instead of exp: 1.7; h instead of h²: 3.4; no 2σ²
  # correction: 4.3; value taken one pixel off the patch centre: 5.4; patch sum instead of mean: 9.2).
  assert abs(psnr['jax'] - psnr['skimage']) < 1.0, psnr
  assert set(out['identity_error']) == {'gaussian', 'embedded_gaussian', 'dot_product', 'concatenation'}
  assert all(e == 0.0 for e in out['identity_error'].values()), out['identity_error']
  # With γ = 1 the output moves; it would stay exactly x only if γ had no effect.
  assert all(e > 0.0 for e in out['perturbed_error'].values()), out['perturbed_error']
  assert out['top_keys_match'] == {'plus': True, 'ring': True, 'cross': True}, out['top_keys_match']


def test_02_train_synthetic(tmp_path):
  overrides = {'data.synthetic.num_train': 32, 'data.synthetic.num_validation': 8, 'data.synthetic.num_test': 16,
               'data.global_batch_size': 16, 'data.eval_global_batch_size': 16, 'data.num_workers': 2,
               'train.log_every_steps': 1, 'train.warmup_steps': 1, 'train.precise_bn_batches': 0}
  # One run, the non-local one (the attention-map cells need it): the C2D run is the same code with blocks=none,
  # and it made this the suite's longest test.
  tiny = (f'REPO_DIR = {str(ROOT)!r}\nRUNS = {{"NL C2D": RUNS["NL C2D"]}}\nNUM_STEPS = 3\nOVERRIDES = {overrides!r}\n'
          f'DATA_DIR = {str(tmp_path / "data")!r}\nWORKDIR = {str(tmp_path / "runs")!r}\n')
  out = _execute('02_train_synthetic.ipynb', tiny, ['workdirs', 'final'], tmp_path)
  assert set(out['workdirs']) == {'NL C2D'}
  for name, workdir in out['workdirs'].items():
    workdir = pathlib.Path(workdir)
    assert workdir.parent == tmp_path / 'runs'
    metrics = json.loads((workdir / 'eval' / 'test_step3_metrics.json').read_text())
    assert metrics['num_videos'] == 16 and 0.0 <= metrics['video_top1'] <= 1.0, metrics
    assert out['final'][name] == metrics
    assert list(workdir.glob('events.out.tfevents.*')), f'{name} wrote no TensorBoard events'


def test_03_colab_tpu_kinetics_config_cells(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from nonlocal_jax import config_files  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.models import build_model  # pylint: disable=g-import-not-at-top
  spec = 'configs/kinetics_nl.py'
  tiny = (f'REPO_DIR = {str(ROOT)!r}\nCONFIG = {spec!r}\nMOUNT = {str(tmp_path)!r}\n'
          f'DATA_DIR = {str(tmp_path / "tensorflow_datasets")!r}\nWORKDIR = {str(tmp_path / "workdir")!r}\n')
  out = _execute('03_colab_tpu_kinetics.ipynb', tiny, ['num_params', 'num_nonlocal_blocks', 'clips_per_core'],
                 tmp_path, skip_colab_only=True)
  # The model of the config, traced here independently of the notebook's summary.
  config = config_files.load_module(str(ROOT / spec)).get_config(None)
  model = build_model(config.model)
  clip = jax.ShapeDtypeStruct((1, config.data.num_frames, config.data.crop_size, config.data.crop_size, 3), 'float32')
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), clip)['params']
  assert out['num_params'] == sum(leaf.size for leaf in jax.tree.leaves(params))
  assert out['num_nonlocal_blocks'] == sum(name.startswith('nonlocal_') for name in params) == 5
  assert out['clips_per_core'] == 64 // 8
