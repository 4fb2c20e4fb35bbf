"""Charades from a tiny generated copy (real PyAV videos with known action intervals, one missing, one corrupt, one
empty): what is stored, which labels a training clip gets, the test views' labels, the skip report, the
one-sentence errors, determinism, and a tiny run through training and evaluation."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from nonlocal_jax import evaluation
from nonlocal_jax import training
from nonlocal_jax.data import builders, clip_labels, eval_pipeline, examples, prepare, records, train_pipeline
from nonlocal_jax.data import charades as charades_lib
from tests.data import conftest
from tests.data import fixtures

# The stored rate of each video: its source rate, capped at 30 fps.
STORED_FPS = {v: min(fps, 30) for v, _, _, fps, _ in fixtures.CHARADES_VIDEOS}
SOURCE_FPS = {v: fps for v, _, _, fps, _ in fixtures.CHARADES_VIDEOS}
# Each video's actions (class, start, end) and classes, written out by hand from the fixture's CSV rows.
ACTIONS = {'AAAAA': [(1, 0.0, 0.5), (3, 1.2, 1.6), (2, 5.0, 6.0)], 'BBBBB': [(0, 0.1, 0.2)], 'CCCCC': [],
           'FFFFF': [(4, 0.45, 0.55)], 'DDDDD': [(4, 0.0, 1.0), (1, 1.0, 2.0)],
           'EEEEE': [(2, 0.5, 0.7), (2, 0.1, 0.2)]}
VIDEO_CLASSES = {'AAAAA': {1, 2, 3}, 'BBBBB': {0}, 'CCCCC': set(), 'FFFFF': {4}, 'DDDDD': {1, 4}, 'EEEEE': {2}}
STORED_FRAMES = {'AAAAA': 40, 'BBBBB': 15, 'CCCCC': 24, 'FFFFF': 6, 'DDDDD': 32, 'EEEEE': 16}


@pytest.fixture(scope='module')
def charades(tmp_path_factory):
  """The tiny copy prepared into TFDS with 2 workers, frames kept at their 48×64 source size."""
  root = str(tmp_path_factory.mktemp('charades'))
  videos, annotations = fixtures.make_charades_folder(root)
  data_dir = os.path.join(root, 'tfds')
  summary = prepare.prepare_charades(videos, annotations, data_dir, short_side=None, num_workers=2, keep_cache=True)
  return {'videos': videos, 'annotations': annotations, 'data_dir': data_dir, 'summary': summary}


def _config(charades, **overrides):
  return conftest.small_video_config(name='charades', data_dir=charades['data_dir'], num_frames=4, frame_stride=2,
                                     eval_split='test', **overrides)


def _reader(charades, split):
  c = _config(charades)
  builder = builders.prepared_builder(c, [split])
  return examples.ExampleReader(records.open_split(builder, split), builders.dataset_features(builder), c)


def _video_id(reader, index):
  return reader.source.example(index).features.feature['video_id'].bytes_list.value[0].decode()


def test_each_video_is_stored_with_its_rate_actions_and_classes(charades):
  features = builders.dataset_features(builders.prepared_builder(_config(charades)))
  assert features.multi_label and features.num_classes == 10 and features.actions_key == 'actions'
  assert features.label_names == tuple(fixtures.CHARADES_CLASSES)
  for split in ('train', 'test'):
    reader = _reader(charades, split)
    stored = {}
    for i in range(len(reader)):
      example = reader.read(i)
      video = _video_id(reader, i)
      stored[video] = example
      assert len(example.frames) == STORED_FRAMES[video] and (example.height, example.width) == (48, 64)
      assert example.actions.fps == STORED_FPS[video]
      got = sorted(zip(example.actions.classes.tolist(), example.actions.starts, example.actions.ends))
      np.testing.assert_allclose(np.asarray(got).reshape(-1, 3), np.asarray(sorted(ACTIONS[video])).reshape(-1, 3),
                                 atol=1e-6)
      assert set(np.flatnonzero(example.label)) == VIDEO_CLASSES[video]  # The video-level multi-hot label.
    assert set(stored) == {v for v, s, *_ in fixtures.CHARADES_VIDEOS if s == split}
    shards = [i.filename for i in builders.prepared_builder(_config(charades)).info.splits[split].file_instructions]
    assert shards and all(os.path.isfile(records.index_path(s)) for s in shards)  # Offset index written at preparation.


def test_missing_corrupt_and_empty_videos_are_skipped_and_reported(charades):
  summary = charades['summary']
  assert summary.used == {'train': 4, 'test': 2} and summary.total == {'train': 6, 'test': 3}
  assert 'used 6 of 9 videos' in summary.message('charades')
  with open(summary.report_path, newline='') as f:
    report = {row['video_id']: row['reason'] for row in csv.DictReader(f)}
  assert report == {fixtures.CHARADES_MISSING[0]: 'missing', fixtures.CHARADES_CORRUPT[0]: 'corrupt',
                    fixtures.CHARADES_EMPTY[0]: 'empty'}


def test_an_interrupted_preparation_resumes_from_the_cache(charades, tmp_path):
  # The fixture kept its cache; a run into another folder over the same cache decodes nothing again.
  source = charades_lib.cache_dir(charades['data_dir'], None, 30.0)
  target = charades_lib.cache_dir(str(tmp_path / 'tfds'), None, 30.0)
  os.makedirs(os.path.dirname(target))
  os.symlink(source, target)  # Stands in for the cache an interrupted run leaves behind.
  summary = prepare.prepare_charades(charades['videos'], charades['annotations'], str(tmp_path / 'tfds'),
                                     short_side=None, num_workers=1, keep_cache=True)
  assert summary.from_cache == {'train': 4, 'test': 2} and summary.used == {'train': 4, 'test': 2}
  assert 'taken from an interrupted run' in summary.message('charades')


def test_clip_labels_of_hand_computed_spans():
  # 10 fps, frames 10, 12, 14, 16: the span is [1.0 s, 1.6 s].
  actions = clip_labels.Actions(np.array([0, 1, 2, 3]), np.array([0.5, 1.61, 1.25, 0.0]),
                                np.array([1.0, 3.0, 1.35, 0.99]), 10.0)
  # Class 0 ends where the clip starts: on. Class 1 starts after its last frame, class 3 ends before its first:
  # off. Class 2 lies between frames 12 (1.2 s) and 14 (1.4 s), inside the span though on no sampled frame: on.
  np.testing.assert_array_equal(clip_labels.clip_label(actions, np.array([10, 12, 14, 16]), 5), [1, 0, 1, 0, 0])
  # A clip that wrapped round a 6-frame video: frames 4, 0, 2 are the spans [0.4, 0.4] and [0, 0.2]. Class 1 in
  # the gap between them is off; class 4, overlapping the second, is on.
  wrapped = clip_labels.Actions(np.array([1, 4]), np.array([0.25, 0.15]), np.array([0.35, 0.25]), 10.0)
  np.testing.assert_array_equal(clip_labels.clip_label(wrapped, np.array([4, 0, 2]), 5), [0, 0, 0, 0, 1])
  empty = clip_labels.Actions(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), 10.0)
  np.testing.assert_array_equal(clip_labels.clip_label(empty, np.array([0, 2]), 5), np.zeros(5))


def _frame_indices(view, video):
  """The stored frame each frame of a view shows, told from its flat colour (stored frame j is source frame
  j·source/stored fps)."""
  ratio = SOURCE_FPS[video] / STORED_FPS[video]
  colours = np.array([fixtures.frame_color(int(round(j * ratio))) for j in range(STORED_FRAMES[video])], float)
  side = view.shape[1]
  pixels = view[:, side // 2, side // 2].astype(float)
  distance = np.abs(pixels[:, None, :] - colours[None, :, :]).max(axis=2)
  assert np.all(distance.min(axis=1) < 9), 'every frame is one of the video\'s'
  return distance.argmin(axis=1)


def _per_frame_label(video, indices):
  """PySlowFast's formulation, independently: the union of the per-frame labels (the actions in progress at frame
  f, f / fps in [start, end]) of every stored frame from a run's first index to its last."""
  label = np.zeros(10, np.float32)
  runs = np.split(indices, np.flatnonzero(np.diff(indices) < 0) + 1)
  for run in runs:
    for f in range(run[0], run[-1] + 1):
      for k, start, end in ACTIONS[video]:
        if start <= f / STORED_FPS[video] <= end:
          label[k] = 1
  return label


def test_a_training_clip_is_labelled_by_the_actions_it_overlaps(charades):
  reader = _reader(charades, 'train')
  seen = {}
  for i in range(len(reader)):
    video = _video_id(reader, i)
    for seed in range(24):
      view, _, label = reader.train_view(i, np.random.default_rng(seed))
      indices = _frame_indices(view, video)
      np.testing.assert_array_equal(label, _per_frame_label(video, indices), err_msg=f'{video} {indices}')
      seen.setdefault(video, set()).add(tuple(np.flatnonzero(label)))
  # Clips of one video get different labels (not the video's): each action alone, or none (all zeros).
  assert {(1,), (3,), ()} <= seen['AAAAA'] and seen['BBBBB'] == {(0,), ()}
  assert seen['CCCCC'] == {()} and seen['FFFFF'] == {()}  # FFFFF's clips wrap: frames 0-4 and 0, before 0.45 s.


def test_test_views_carry_the_labels_of_their_video(charades):
  c = _config(charades, test_num_clips=3, test_num_crops=3)
  dataset = eval_pipeline.create_eval_dataset(c, mode='test')
  reader = _reader(charades, 'test')
  rows = 0
  for batch in dataset:
    for label, video, keep in zip(batch['label'], batch['video_id'], batch['mask']):
      if keep:
        rows += 1
        assert set(np.flatnonzero(label)) == VIDEO_CLASSES[_video_id(reader, int(video))]
  assert rows == 2 * 3 * 3


def test_the_same_seed_gives_the_same_batches(charades):
  c = _config(charades)

  def first(seed):
    stream = train_pipeline.create_train_iterator(c, seed=seed)
    return [next(stream) for _ in range(3)]
  a, b, other = first(0), first(0), first(1)
  for x, y in zip(a, b):
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
  assert any(not np.array_equal(x['clips'], y['clips']) for x, y in zip(a, other))
  assert a[0]['label'].shape == (2, 10) and a[0]['label'].dtype == np.float32


def _prepared_marker(data_dir):
  return [os.path.join(r, f) for r, _, files in os.walk(data_dir) for f in files if f == 'dataset_info.json']


def _errors(capsys, videos, annotations, data_dir):
  status = prepare.main(['charades', f'--videos={videos}', f'--annotations={annotations}', f'--data_dir={data_dir}',
                         '--num_workers=1'])
  return status, [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]


TRAIN_CSV = 'Charades_v1_train.csv'
BAD_ANNOTATIONS = {
    # (what is wrong, the train CSV's rows or None to delete a file, words the one sentence must hold)
    'malformed actions': ([('AAAAA', 'c001 0.00 0.50'), ('BBBBB', 'c000 0.10')],
                         [f'{TRAIN_CSV} line 3', '"c000 0.10"', 'class start end']),
    'negative time': ([('AAAAA', 'c001 -1.00 0.50')], [f'{TRAIN_CSV} line 2', 'seconds ≥ 0']),
    'unknown class': ([('AAAAA', 'c001 0.00 0.50'), ('CCCCC', ''), ('BBBBB', 'c000 0.1 0.2;c200 0.00 1.00')],
                      [f'{TRAIN_CSV} line 4', 'class c200', 'classes file does not list']),
    'missing classes file': (None, ['No Charades_v1_classes.txt in']),
}


@pytest.mark.parametrize('rows,words', BAD_ANNOTATIONS.values(), ids=BAD_ANNOTATIONS.keys())
def test_an_unusable_annotation_is_one_sentence_before_any_work(charades, rows, words, tmp_path, capsys):
  annotations = str(tmp_path / 'annotations')
  shutil.copytree(charades['annotations'], annotations)
  if rows is None:
    os.remove(os.path.join(annotations, 'Charades_v1_classes.txt'))
  else:
    fixtures.write_charades_csv(os.path.join(annotations, TRAIN_CSV), rows)
  status, errors = _errors(capsys, charades['videos'], annotations, tmp_path / 'tfds')
  assert status == 2 and len(errors) == 1 and all(w in errors[0] for w in words), errors
  assert not _prepared_marker(tmp_path)


def test_a_bad_videos_folder_is_one_sentence(charades, tmp_path, capsys):
  status, errors = _errors(capsys, tmp_path / 'nope', charades['annotations'], tmp_path / 'tfds')
  assert status == 2 and len(errors) == 1 and f'No videos folder at {tmp_path / "nope"}' in errors[0]
  assert 'pass --videos=DIR' in errors[0] and not os.path.exists(tmp_path / 'tfds')
  with pytest.raises(builders.DatasetNotPreparedError, match='python -m nonlocal_jax.data.prepare charades '
                     f'--videos=DIR --annotations=DIR --data_dir={tmp_path}`'):
    builders.check_prepared('charades', str(tmp_path))


def test_a_tiny_run_trains_on_clip_labels_and_tests_by_map(charades, tmp_path):
  # Its steps are the multi-label training test's (configs/test.py, 10 classes, 2 steps): compiled once for both
  # through the session's compilation cache (tests/conftest.py).
  from tests.training import helpers  # pylint: disable=g-import-not-at-top
  config = helpers.load_config(**{'data.name': 'charades', 'model.num_classes': 10, 'train.num_steps': 2,
                                  'train.checkpoint_every_steps': 2})
  config.data.data_dir = charades['data_dir']
  training.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'eval' / 'test_step2_metrics.json') as f:
    metrics = json.load(f)
  result = evaluation.load_results(str(tmp_path / 'eval'), 'test_step2')
  # The 2 test videos (classes {1, 4} and {2}), 2 clips × 1 crop each, pooled by max; mAP over their 3 classes.
  assert result.view_pooling == 'max' and result.video_num_views.tolist() == [2, 2]
  assert sorted(map(tuple, result.video_labels)) == [(0, 0, 1) + (0,) * 7, (0, 1, 0, 0, 1) + (0,) * 5]
  assert metrics['map_videos'] == 2 and metrics['map_classes'] == 3 and 0 < metrics['video_map'] <= 1
