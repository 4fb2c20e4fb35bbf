"""Evaluation: metrics, per-video accumulation of views, the exchange between processes, result files and plots.

``evaluate(predict_fn, batches, num_classes=..., class_names=...)`` averages the class probabilities of each
video's views (clips × crops) and returns an ``EvalResult``; ``save_results`` writes it to a work directory and
``load_results`` reads it back. ``top_k_correct`` is the one top-k rule of the project (ties count against the
prediction, NaN is never correct), for NumPy arrays on the host and jax arrays in the train step. Multi-label
datasets (``evaluate(..., multi_label=True)``: multi-hot labels, per-class sigmoid scores) get views pooled by max
and mean average precision over classes (``average_precision``) with hit@k (``top_k_hit``) instead.

Modules: ``metrics`` (top-k, hit@k, predicted class, confusion, per-class accuracy), ``average_precision`` (AP,
mAP), ``accumulate`` (``ViewAccumulator``, ``evaluate``), ``gather`` (the exchange between processes),
``results`` (``EvalResult`` and its files), ``plots`` (the confusion figure).
"""

from nonlocal_jax.evaluation.accumulate import ViewAccumulator, evaluate
from nonlocal_jax.evaluation.gather import process_allgather
from nonlocal_jax.evaluation.average_precision import mean_average_precision, per_class_average_precision
from nonlocal_jax.evaluation.metrics import reported_top_k, top_k_correct, top_k_hit
from nonlocal_jax.evaluation.plots import MAX_PLOT_CLASSES
from nonlocal_jax.evaluation.results import EvalResult, load_results, save_results

__all__ = ['EvalResult', 'MAX_PLOT_CLASSES', 'ViewAccumulator', 'evaluate', 'load_results',
           'mean_average_precision', 'per_class_average_precision', 'process_allgather', 'reported_top_k',
           'save_results', 'top_k_correct', 'top_k_hit']
