"""``python -m bench.device``'s results as markdown: the machine's rates, train steps, profiles, the block, the
'auto' table and what was skipped."""

from bench import common
from bench import device_plan
from bench import device_profile


def _f(value, digits=1):
  return '-' if value is None else f'{value:.{digits}f}'


def row_formulation(row) -> tuple:
  """(convolutions, pools) a train row ran; rows measured before they were recorded ran the defaults of then,
  which on an accelerator were native convolutions and reduce_window pools."""
  return row.get('convs', 'native'), row.get('pools', 'window')


_SETTING_LABELS = {'xla': 'XLA', 'bn': 'BN', 'norm': 'norm'}


def _formulation_label(row) -> str:
  """'folded, slices', plus the variant's other settings: ', XLA nhwc' for a step compiled with XLA options,
  ', BN flax' for flax's BatchNorm backward, ', norm affine' for frozen BatchNorm."""
  settings = [s.partition('=') for s in (row.get('variant') or '').split(',') if s]
  return ', '.join(row_formulation(row)) + ''.join(f', {_SETTING_LABELS[name]} {value}'
                                                   for name, _, value in settings if name in _SETTING_LABELS)


def goal_line(train_rows, bf16_macs_per_s) -> list:
  """The issue's goal in one line (or none without a bf16 C2D + 5 NL row): the fraction of the bf16 matmul rate that
  the train step of R50 C2D + 5 NL in bf16 reached at 8 clips with the defaults, the best formulation (the
  model's settings and the blocks' attention path, all exact) at 8 clips, and the best at any batch. Steps of
  another model (frozen BatchNorm, 'norm=affine') are not the goal's."""
  rows = [r for r in train_rows if r['status'] == 'ok' and 'norm=' not in (r.get('variant') or '') and
          (r['network'], r['dtype']) == ('c2d_nl', 'bfloat16')]
  if not rows:
    return []
  def reached(r):
    settings = device_plan.settings_label(r.get('variant'), r['attention'])
    return (f"{100 * r['train_tflops'] * 1e12 / 2 / bf16_macs_per_s:.0f} % ({r['clips_per_s']:.0f} clips/s) "
            f"at {r['batch']} clips with {settings or 'the defaults'}")
  at_8 = [r for r in rows if r['batch'] == 8]
  default = next((r for r in at_8 if not r.get('variant') and r['attention'] == 'auto'), None)
  shown = [r for r in (default, max(at_8, key=lambda r: r['clips_per_s'], default=None),
                       max(rows, key=lambda r: r['clips_per_s'])) if r is not None]
  shown = [r for i, r in enumerate(shown) if all(r is not q for q in shown[:i])]
  return ["The issue's goal: R50 C2D + 5 NL in bf16 at >= 30 % of the bf16 matmul rate; reached " +
          '; '.join(reached(r) for r in shown) + '.']


def to_markdown(p, labels):
  """The payload as markdown: machine, matmul rates, train steps, block table, the auto table, the pipeline."""
  lines = [f"Measured by `python -m bench.device{' --tiny' if p['tiny'] else ''}` in {p['seconds']:.0f} s on "
           f"{common.machine_line(p['machine'])}.", '']
  for r in p.get('earlier_runs', ()):
    lines.append(f"Resumed (`--resume`): the pieces finished by a run of {r['seconds']:.0f} s on {r['date']} "
                 f"(jax {r['jax']}) are kept, the matrix-multiply and copy rates among them.")
  m = p.get('matmul', {})
  if m.get('status') == 'ok':
    lines.append(f"Matrix multiply ({m['n']}²): bfloat16 {m['bfloat16_tflops']:.1f} TFLOP/s, float32 "
                 f"{m['float32_tflops']:.1f} TFLOP/s. Memory (x + 1, bytes read and written): "
                 f"{m['copy_gb_per_s']:.0f} GB/s.")
  elif m:
    lines.append(f"Matrix multiply: {m.get('status')} ({m.get('error') or m.get('reason')}).")
  rate = m.get('bfloat16_macs_per_s')
  label = lambda key: f'{key} (tiny: configs/test.py)' if p['tiny'] else labels[key]
  lines += ['', 'Train step on fake data (`Trainer.train_step`, one batch on the device, state donated); TFLOP/s '
            'counts 3× the forward multiply-adds of `nonlocal_jax.models.summary`:', '']
  copy = m.get('copy_gb_per_s')
  table = []
  for r in p.get('train', []):
    if r['status'] != 'ok':
      table.append([label(r['network']), r['dtype'], r['attention'], r.get('variant') or 'defaults', r['status'],
                    r.get('error') or r.get('reason'), '', '', '', '', '', '', ''])
      continue
    fraction = f"{100 * r['train_tflops'] * 1e12 / 2 / rate:.0f} %" if rate else '-'
    memory = (f"{_f(r.get('hlo_gb_per_step'), 2)} GB, {100 * r['hlo_gb_per_s'] / copy:.0f} %"
              if r.get('hlo_gb_per_s') and copy else '-')
    floor = f"{r['floor_ms']:.2f} ({r['step_ms'] / r['floor_ms']:.1f}×)" if r.get('floor_ms') else '-'
    table.append([label(r['network']), r['dtype'], r['attention'], _formulation_label(r), r['input'],
                  f"{r['clips_per_s']:.1f}",
                  f"{r['step_ms']:.1f}", f"{r['compile_s']:.1f}", f"{r['train_tflops']:.2f}", fraction,
                  memory, floor, _f(r['temp_mib'], 0)])
  lines.append(common.markdown_table(['network', 'dtype', 'attention', 'convs, pools', 'input', 'clips/s', 'ms/step',
                                      'compile s',
                                      'TFLOP/s', 'of bf16 matmul', 'XLA traffic/step, of copy rate',
                                      'floor ms (step / floor)', 'temp MiB'],
                                     table))
  lines += ['', "XLA traffic: the bytes the compiled step's own fusions read and write (`cost_analysis`; cuDNN's "
            "convolutions and attention are custom calls it does not count, and it counts a loop's body once, as in "
            "the chunked attention: so this is a floor) at the measured step "
            'time, against the copy rate above; the JSON also keeps its flop count (`hlo_tflops`), which leaves '
            'the same custom calls out. Floor: the least time of the compiled step at the rates above (its '
            "dtype's matmul rate), its XLA traffic at the copy rate plus each cuDNN convolution and cuBLAS product "
            'at the slower of its bytes and its flops (`bench/hlo_roofline.py`), and the step\'s time as a multiple '
            'of it.']
  if rate and not p['tiny']:
    lines += [''] + goal_line(p.get('train', []), rate)
  for r in p.get('train', []):
    for line in r.get('fallbacks', ()):
      lines.append(f"- {label(r['network'])}, {r['dtype']}, {r['attention']}: {line}")
  for key in sorted(k for k in p if k.startswith('profile') and p[k]):
    r = p[key]
    conv = f", {key[len('profile '):]}" if key != 'profile' else ''
    lines += ['', f"Where the time goes: {label(r.get('network', 'c2d_nl'))}, {r.get('dtype')}{conv}, "
              f"{r.get('batch', 8)} clips "
              f"(`python -m bench.device_profile {r.get('trace', '')} --steps={r.get('steps')}`):", '']
    lines += device_profile.to_markdown(r)
  feed = p.get('feed', [])
  if feed:
    lines += ['', 'Host-to-device feed (`parallel.shard_batch`, the training loop\'s call on each uint8 batch, on the '
              'thread that takes the pipeline\'s batches; medians):', '']
    lines += [f"- {r['clips']} clips of {r['frames']}×{r['crop']}² ({r['batch_mb']:.0f} MB, {r['devices']} "
              f"device{'s' if r['devices'] > 1 else ''}): the call returns after {r['call_ms']:.1f} ms "
              f"({r['call_cpu_ms']:.1f} ms of the thread's CPU; at most {r['call_clips_per_s']:,.0f} clips/s from one "
              f"thread), the batch is on the devices after {r['ready_ms']:.1f} ms ({r['gb_per_s']:.1f} GB/s)."
              for r in feed]
  lines += ['', 'Non-local block (subsampling (1, 2, 2), C\' = C/2), forward and forward+backward, median of '
            f"{p['repeats']}; temp: the compiled forward+backward's temporary memory; device peak: the device's "
            'high-water mark after the path first ran (GPU only; it cannot be reset between programs):', '']
  table = [[r['thwc'], r['batch'], r['dtype'], r['pairwise'], r['implementation'],
            _f(r.get('fwd_ms'), 2) if r['status'] == 'ok' else r['status'], _f(r.get('fwd_bwd_ms'), 2),
            _f(r.get('temp_mib')), _f(r.get('device_peak_mib'), 0), r.get('error', '')] for r in p.get('block', [])]
  lines.append(common.markdown_table(['T×H×W×C', 'batch', 'dtype', 'pairwise', 'implementation', 'fwd ms',
                                      'fwd+bwd ms', 'temp MiB', 'device peak MiB', 'note'], table))
  lines += ['', f"Table for implementation='auto' ({len(p.get('auto_entries', []))} cases, fastest first): "
            f"`{p.get('table_path')}`.", '']
  for kind, chosen in (p.get('formulations') or {}).items():
    rates = ', '.join(f'{k}: {v:.0f}' for k, v in chosen['clips_per_s'].items())
    lines += [f"The table's formulations for {kind.upper()} networks, which the models' 'auto' takes on this device "
              f"kind: conv_implementation='{chosen['conv_implementation']}', pool_implementation="
              f"'{chosen['pool_implementation']}' (bf16 R50 {kind.upper()} + 5 NL at 8 clips, clips/s by "
              f'convolutions, pools: {rates}).', '']
  for piece, result in p.get('pieces', {}).items():
    if result.get('status') != 'ok':
      lines.append(f"- {piece}: {result['status']} ({result.get('error') or result.get('reason')})")
  pipeline = p.get('pipeline', {})
  if pipeline:
    lines.append(f"- input pipeline: {pipeline['status']} "
                 f"({pipeline.get('reason') or pipeline.get('error') or pipeline.get('results')})")
  return '\n'.join(lines)
