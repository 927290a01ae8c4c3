"""Where every random number of a power study comes from.

One root seed per plan. Replicate ``rep`` of cell ``(scenario, n)`` draws from
``SeedSequence(root_seed, spawn_key=(plan key, scenario code, n, rep))``, whose two children
seed the simulated data and the analysis (the Bayesian sampler). The result of a replicate
therefore never depends on the number of workers, the batching or the order of execution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCENARIO_CODES = {"alternative": 0, "null": 1, "null_ratio": 2}


@dataclass(frozen=True)
class ReplicateSeeds:
    """The two 32-bit seeds of one replicate (stored with its record)."""

    data: int
    analysis: int


def replicate_seeds(
    root_seed: int, plan_hash: str, scenario: str, n: int, rep: int
) -> ReplicateSeeds:
    """Seeds of one replicate; ``plan_hash`` is ``Plan.result_hash`` (hex)."""
    plan_key = int(plan_hash[:8], 16)
    sequence = np.random.SeedSequence(
        root_seed, spawn_key=(plan_key, SCENARIO_CODES[scenario], n, rep)
    )
    data, analysis = (int(child.generate_state(1)[0]) for child in sequence.spawn(2))
    return ReplicateSeeds(data=data, analysis=analysis)
