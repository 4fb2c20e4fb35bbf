r"""Sweeps: train every variant of a config's sweep, then tabulate and plot the results (the paper's Table 2).

    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py:synthetic --workdir=/tmp/table2a
    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py --workdir=gs://b/t2a --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py:synthetic --workdir=/tmp/table2a --collect_only

A sweep config is an ordinary config module (``get_config(arg)``, which main.py reads) that also defines
``get_sweep(arg)``: a list of variants, each a dict of dotted overrides of the config (of any depth) plus an
optional ``name`` (its sub-workdir, letters, digits, ``-_.=,``) and ``label`` (its row in the table)::

    def get_sweep(arg=None):
      return [{'name': 'c2d', 'label': 'C2D baseline', 'model.nonlocal_locations': 'none'},
              {'name': 'dot_product', 'model.nonlocal_block.pairwise': 'dot_product'}]

``product(a, b)`` crosses two such lists (big_vision's ``hyper.product``). The sweep lives beside the config
rather than in it so that every variant's saved ``config.json`` is exactly what main.py would train.

Each variant trains in ``<workdir>/<name>`` with ``nonlocal_jax.training.train_and_evaluate`` (in this process,
one after the other). A variant whose test metrics (``eval/test_step<num_steps>_metrics.json``) exist is
finished and skipped, and an unfinished one resumes from its checkpoint, so rerunning a stopped sweep
continues it. ``--print_commands`` prints one ``python main.py`` line per unfinished variant instead, for a
cluster scheduler; ``--collect_only`` then gathers their results and says how many runs have finished and which
have not. Results: ``<workdir>/results.csv`` (every column), ``results.md`` (model, top-1, top-5, params,
multiply-adds, train time: Table 2's layout) and ``results.png`` (top-1/top-5 bars; not drawn while no run has
finished). Top-1/top-5 are the video-level (multi-view) test accuracies; multiply-adds are
``nonlocal_jax.models.summary``'s count per clip at the training clip size.

``--seeds=0,1,2`` trains every variant once per seed (``config.seed``: initialisation, data order, dropout):
the config's own seed in ``<name>``, so a finished one-seed sweep is reused, the others in ``<name>_seed<k>``;
commands come seed by seed, so a scheduler finishes a whole one-seed table first. ``results.csv`` then has one
row per run, and ``results.md``/``results.png`` give each variant's mean ± standard deviation and every seed's
top-1::

    python -m nonlocal_jax.sweep --config=configs/ablation_stage.py:synthetic --workdir=/tmp/table2b --seeds=0,1,2

Modules: ``variants`` (the sweep config, its variants and runs), ``runner`` (training or printing the runs),
``results`` (what each run left, as rows), ``statistics`` (mean ± sd over seeds), ``table`` (markdown),
``chart`` (the bar chart), ``report`` (the result files and the console summary), ``__main__`` (the flags).
"""

from nonlocal_jax.sweep.chart import plot
from nonlocal_jax.sweep.report import describe
from nonlocal_jax.sweep.report import progress
from nonlocal_jax.sweep.report import write_results
from nonlocal_jax.sweep.results import collect
from nonlocal_jax.sweep.results import CSV_COLUMNS
from nonlocal_jax.sweep.results import is_finished
from nonlocal_jax.sweep.results import metrics_path
from nonlocal_jax.sweep.results import model_cost
from nonlocal_jax.sweep.runner import commands
from nonlocal_jax.sweep.runner import format_flag
from nonlocal_jax.sweep.runner import run
from nonlocal_jax.sweep.statistics import summarize
from nonlocal_jax.sweep.table import markdown_table
from nonlocal_jax.sweep.variants import check_seeds
from nonlocal_jax.sweep.variants import load_module
from nonlocal_jax.sweep.variants import load_variants
from nonlocal_jax.sweep.variants import parse_overrides
from nonlocal_jax.sweep.variants import product
from nonlocal_jax.sweep.variants import resolve_runs
from nonlocal_jax.sweep.variants import Run
from nonlocal_jax.sweep.variants import run_dir
from nonlocal_jax.sweep.variants import split_spec
from nonlocal_jax.sweep.variants import SweepError
from nonlocal_jax.sweep.variants import variant_config
from nonlocal_jax.sweep.variants import Variant
