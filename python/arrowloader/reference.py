"""Plain-Python reference implementations: the oracle the native code is tested against.

Deliberately simple and slow: lists and loops, no numpy tricks, no shared code with the
native path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

IGNORE_INDEX = -100


def truncate(
    tokens: Sequence[int], max_length: Optional[int], side: str = "right"
) -> list[int]:
    """The tokens a document keeps: the first (``side="right"``) or last
    (``side="left"``) ``max_length`` of them."""
    tokens = list(tokens)
    if max_length is None or len(tokens) <= max_length:
        return tokens
    return tokens[:max_length] if side == "right" else tokens[len(tokens) - max_length :]


def pad_batch(
    documents: Sequence[Sequence[int]],
    *,
    max_length: Optional[int] = None,
    truncation_side: str = "right",
    padding: str = "longest",
    pad_to_multiple_of: Optional[int] = None,
    padding_side: str = "right",
    pad_token_id: int = 0,
    return_attention_mask: bool = True,
    causal_labels: bool = False,
    labels: Optional[Sequence[int]] = None,
) -> dict[str, list]:
    """Truncates and pads ``documents`` into a batch of nested lists.

    Returns ``input_ids`` ``[B][L]``, ``attention_mask`` ``[B][L]`` (if asked), and
    ``labels``: ``[B][L]`` causal labels (-100 on padding) or the given ``[B]`` labels.
    """
    kept = [truncate(doc, max_length, truncation_side) for doc in documents]
    width = max((len(doc) for doc in kept), default=0)
    if padding == "max_length":
        width = max_length
    if pad_to_multiple_of:
        while width % pad_to_multiple_of:
            width += 1
    out: dict[str, list] = {"input_ids": []}
    if return_attention_mask:
        out["attention_mask"] = []
    if causal_labels:
        out["labels"] = []
    for doc in kept:
        pad = width - len(doc)
        if padding_side == "right":
            out["input_ids"].append(doc + [pad_token_id] * pad)
            mask = [1] * len(doc) + [0] * pad
            causal = doc + [IGNORE_INDEX] * pad
        else:
            out["input_ids"].append([pad_token_id] * pad + doc)
            mask = [0] * pad + [1] * len(doc)
            causal = [IGNORE_INDEX] * pad + doc
        if return_attention_mask:
            out["attention_mask"].append(mask)
        if causal_labels:
            out["labels"].append(causal)
    if labels is not None and not causal_labels:
        out["labels"] = list(labels)
    return out
