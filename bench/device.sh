#!/usr/bin/env bash
# One command for a GPU (or TPU) machine: python -m bench.device, sized for under 8 minutes on one H200.
#
#   bash bench/device.sh            # from anywhere; extra arguments go to bench.device (--tiny, --budget_s=...)
#
# The machine needs JAX, flax, optax, orbax, chex, numpy, absl, etils and tensorboard; TensorFlow, TFDS, PyAV, clu
# and grain are not needed. ml_collections (the configs) is installed from .wheels/ when that folder holds wheels:
#   python -m pip download --python-version 3.12 --only-binary=:all: --no-deps -d .wheels ml_collections==1.1.0
# Results: bench/results/<device slug>/device.{json,md} and nonlocal_jax/layers/attention_tables/<slug>.json,
# also copied into $OUT when it is set (the device tool's folder that comes back), with the log.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if compgen -G '.wheels/*.whl' > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/nonlocal_jax_site .wheels/*.whl
  export PYTHONPATH=/tmp/nonlocal_jax_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
"$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())'
if [ -n "${OUT:-}" ]; then
  "$PYTHON" -m bench.device --also_to="$OUT" "$@" 2>&1 | tee "$OUT/device.log"
else
  "$PYTHON" -m bench.device "$@"
fi
