"""fattr.metrics: evaluation of attributions.

Faithfulness: `infidelity`, `deletion`, `insertion`, `pixel_flipping`, `road`, `selectivity`,
`completeness`. Robustness: `sensitivity_max`. Randomisation: `model_randomization`.
Localisation: `pointing_game`, `relevance_mass`. Complexity: `sparseness`, `complexity`.
Retraining: `roar`, `kar`. Ground truth: `trigger_benchmark`.

Every metric is batched (one value per example, a Tensor), evaluates the model in chunks of
`batch_size` inputs, and validates its inputs with `fattr.FattrError`. Model-based metrics
share the attribution methods' boundary (`fattr.core.call`): `x` may be a tuple of tensors
(attributions are then tuples too) and `model_args=` / `model_kwargs=` are extra forward
arguments whose per-example tensors follow their example through every chunk.
"""

from fattr.metrics.completeness import completeness
from fattr.metrics.complexity import complexity, sparseness
from fattr.metrics.curves import deletion, insertion, pixel_flipping
from fattr.metrics.infidelity import infidelity
from fattr.metrics.localisation import pointing_game, relevance_mass
from fattr.metrics.randomization import model_randomization
from fattr.metrics.retraining import RetrainingCurve, kar, roar
from fattr.metrics.road import road
from fattr.metrics.selectivity import selectivity
from fattr.metrics.sensitivity import sensitivity_max
from fattr.metrics.triggers import TriggerResult, trigger_benchmark

__all__ = [
    "RetrainingCurve", "TriggerResult", "completeness", "complexity", "deletion", "infidelity",
    "insertion", "kar", "model_randomization", "pixel_flipping", "pointing_game",
    "relevance_mass", "road", "roar", "selectivity", "sensitivity_max", "sparseness",
    "trigger_benchmark",
]
