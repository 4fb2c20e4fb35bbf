"""The device report's line on the issue's goal, from hand-made train rows."""

from bench import device_report

RATE = 282.25e12  # bf16 multiply-adds per second: 564.5 TFLOP/s.


def _row(tflops, clips, batch=8, variant='', **kw):
  return dict(dict(status='ok', network='c2d_nl', dtype='bfloat16', attention='auto'), train_tflops=tflops,
              clips_per_s=clips, batch=batch, variant=variant, **kw)


def test_goal_line_names_the_defaults_the_best_at_8_clips_and_the_best_at_any_batch():
  both = 'conv=folded,pool=slices'
  rows = [_row(62.09, 373), _row(112.9, 680, variant=both), _row(141.125, 850, batch=64, variant=both),
          _row(90.0, 500, batch=32),
          # Not the goal's network, dtype or model (frozen BatchNorm), or not measured: never counted.
          _row(300.0, 2000, network='c2d'), _row(300.0, 2000, dtype='float32'),
          _row(300.0, 2000, variant=both + ',norm=affine'),
          dict(_row(None, None, variant='pool=slices'), status='failed')]
  # 62.09e12 / 2 / 282.25e12 = 11.0 %, 112.9e12 / 2 / 282.25e12 = 20.0 %, 141.125e12 / 2 / 282.25e12 = 25.0 %.
  assert device_report.goal_line(rows, RATE) == [
      "The issue's goal: R50 C2D + 5 NL in bf16 at >= 30 % of the bf16 matmul rate; reached 11 % (373 clips/s) at "
      f'8 clips with the defaults; 20 % (680 clips/s) at 8 clips with {both}; 25 % (850 clips/s) at 64 clips with '
      f'{both}.']


def test_goal_line_counts_every_exact_attention_path_and_names_it():
  both = 'conv=folded,pool=slices'
  rows = [_row(62.09, 373, attention='cudnn'), _row(112.9, 680, variant=both),
          _row(141.125, 850, variant=both, attention='lean')]
  # No default row (a cuDNN row is not the defaults): the best at 8 clips, which is also the best at any batch.
  assert device_report.goal_line(rows, RATE) == [
      "The issue's goal: R50 C2D + 5 NL in bf16 at >= 30 % of the bf16 matmul rate; reached 25 % (850 clips/s) at "
      f'8 clips with {both},attention=lean.']


def test_goal_line_says_each_row_once_and_nothing_without_a_goal_row():
  assert device_report.goal_line([_row(169.35, 1020)], RATE) == [
      "The issue's goal: R50 C2D + 5 NL in bf16 at >= 30 % of the bf16 matmul rate; reached 30 % (1020 clips/s) at "
      '8 clips with the defaults.']
  assert device_report.goal_line([_row(169.35, 1020, dtype='float32')], RATE) == []
  # No default row at 8 clips: the best formulation there, then the best batch.
  assert device_report.goal_line([_row(50.0, 300, batch=32), _row(56.45, 340, variant='pool=slices')], RATE) == [
      "The issue's goal: R50 C2D + 5 NL in bf16 at >= 30 % of the bf16 matmul rate; reached 10 % (340 clips/s) at "
      '8 clips with pool=slices.']
