"""Seeds derived from several numbers (a run seed, an epoch, a step, a rank, a stream).

Exact resume derives every generator's seed from where the run is (``avgen.data.sampling``,
``avgen.training.randomness``); numpy's SeedSequence hashes the key, so nearby keys (step 5 vs 6,
rank 0 vs 1) give unrelated streams, unlike ``seed + step``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mixed_seed"]


def mixed_seed(*key: int) -> int:
    """A well-mixed 63-bit seed of a key of non-negative integers (a run seed is taken modulo 2**32)."""
    if not key:
        raise ValueError("mixed_seed needs at least one number")
    entropy = [int(key[0]) & 0xFFFFFFFF, *(int(k) for k in key[1:])]
    high, low = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(high) << 31) ^ int(low)
