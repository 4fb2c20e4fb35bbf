r"""Command line of the sweeps: train, print or collect every run of a sweep config (see nonlocal_jax.sweep).

    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py:synthetic --workdir=/tmp/table2a
    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py --workdir=gs://b/t2a --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py:synthetic --workdir=/tmp/table2a --collect_only
    python -m nonlocal_jax.sweep --config=configs/ablation_stage.py:synthetic --workdir=/tmp/table2b --seeds=0,1,2
"""

import sys
from typing import Sequence

from absl import app
from absl import flags

from nonlocal_jax import console
from nonlocal_jax import training
from nonlocal_jax.sweep import report
from nonlocal_jax.sweep import results
from nonlocal_jax.sweep import runner
from nonlocal_jax.sweep import variants

FLAGS = flags.FLAGS
flags.DEFINE_string('config', None, 'Sweep config file with an optional argument '
                    '(configs/ablation_pairwise.py:synthetic).')
flags.DEFINE_string('workdir', None, 'Directory of the sweep: one sub-directory per variant, and the results.')
flags.DEFINE_bool('print_commands', False, 'Print one main.py command per unfinished variant; train nothing.')
flags.DEFINE_bool('all_commands', False, 'With --print_commands, also print the finished variants.')
flags.DEFINE_bool('collect_only', False, 'Only gather the finished variants\' results; train nothing.')
flags.DEFINE_multi_string('set', [], 'key=value override applied to every variant (data.data_dir=/x).')
flags.DEFINE_list('seeds', [], 'Train every variant once per seed (0,1,2): the config\'s own seed in <name>, '
                  'the others in <name>_seed<k>; results.md gives mean ± sd and each seed\'s top-1.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: Sequence[str]) -> None:
  """Runs, prints or collects the sweep of --config in --workdir."""
  del argv
  extra = variants.parse_overrides(FLAGS.set)
  seeds = variants.check_seeds(FLAGS.seeds)
  if seeds and 'seed' in extra:
    raise variants.SweepError('Give the seeds either with --seeds or with --set=seed=..., not both.')
  if FLAGS.print_commands:
    print('\n'.join(runner.commands(FLAGS.config, FLAGS.workdir, extra=extra, only_unfinished=not FLAGS.all_commands,
                                    seeds=seeds)))
    return
  if FLAGS.collect_only:
    rows = report.write_results(results.collect(FLAGS.config, FLAGS.workdir, extra=extra, seeds=seeds),
                                FLAGS.workdir)
  else:
    rows = runner.run(FLAGS.config, FLAGS.workdir, extra=extra, seeds=seeds)
  print(report.describe(rows, FLAGS.workdir), end='')


def _main_with_errors(argv: Sequence[str]) -> None:
  # As main.py: progress and results on the console, each run's library logs in <run>/logs/main.log (absl's
  # --verbosity brings them back; its default here is -2, the libraries' errors only).
  console.setup(FLAGS.verbosity if FLAGS['verbosity'].present else -2)
  try:
    main(argv)
  except (variants.SweepError, training.ConfigError, training.NonFiniteLossError) as e:
    sys.exit(f'Error: {e}')


if __name__ == '__main__':
  app.run(_main_with_errors)
