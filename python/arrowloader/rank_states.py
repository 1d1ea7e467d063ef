"""The loader states of every rank of a run, as a framework that checkpoints each rank's
``state_dict()`` (``torch.distributed.checkpoint``, torchtitan's per-rank data loader
states) holds them, merged into the one state a run on any number of ranks resumes.

Every rank of a distributed arrowloader run is at the same place: ranks take equal shares
of each epoch and step together, so their states record the same position (the epoch and
the samples or batches each has delivered, or for packed and mixed datasets the samples
consumed by all ranks together). The merge checks that they agree and returns that state;
``load_state_dict`` on ``M`` ranks then re-splits it (see
:func:`arrowloader.padded_epoch.resplit_samples`), or says why it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def merge_rank_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The one state of a run from its ranks' ``state_dict()`` results (rank order).

    Args:
        states: ``DataLoader.state_dict()`` of every rank, rank 0 first.

    Returns:
        The run's state, to load into every rank of a run on any number of ranks.

    Raises:
        ValueError: no state, a state that is not a dict, or ranks at different places
            (naming the first rank and key that differ from rank 0).
    """
    if not states:
        raise ValueError("merge_rank_states: no state given (one per rank, rank 0 first)")
    first = states[0]
    for rank, state in enumerate(states):
        if not isinstance(state, dict):
            raise ValueError(
                f"merge_rank_states: the state of rank {rank} is a {type(state).__name__}, "
                "not a DataLoader.state_dict()"
            )
        if state == first:
            continue
        keys = sorted(set(first) | set(state), key=str)
        differing = next(k for k in keys if first.get(k, "<missing>") != state.get(k, "<missing>"))
        raise ValueError(
            f"merge_rank_states: rank {rank} is not where rank 0 is ({differing!r}: rank 0 "
            f"{first.get(differing, '<missing>')!r}, rank {rank} "
            f"{state.get(differing, '<missing>')!r}); the states were taken at different "
            "steps or from different runs"
        )
    world_size = first.get("world_size", first.get("plan", {}).get("world_size"))
    if isinstance(world_size, int) and world_size != len(states):
        raise ValueError(
            f"merge_rank_states: the states were taken on {world_size} ranks, "
            f"{len(states)} given; pass the state of every rank"
        )
    return dict(first)
