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


# Packing (PackedDataset). A *piece* is a document's tokens followed by EOS; a *block* is
# seq_len + 1 token positions holding segments of pieces (and, in bestfit mode, padding).
# Every packed row below also carries "segments": the lengths of its block's segments, in
# position order, so cu_seqlens can be derived without looking at position_ids.


def _pieces(documents: Sequence[Sequence[int]], eos_token_id: int) -> list[list[int]]:
    return [[int(t) for t in doc] + [eos_token_id] for doc in documents]


def _packed_row(
    segments: list[list[int]],
    seq_len: int,
    pad_token_id: int,
    mask_across_documents: bool,
    trained: Optional[list[list[bool]]] = None,
) -> dict[str, list]:
    """One block (its segments, in position order) as a row of ``seq_len`` positions;
    ``trained``: for each segment, whether each of its tokens is in the loss (a label
    whose target is not is -100)."""
    tokens: list[int] = []
    starts: list[int] = []
    flags: list[bool] = []
    for k, segment in enumerate(segments):
        starts.append(len(tokens))
        tokens.extend(segment)
        flags.extend(trained[k] if trained is not None else [True] * len(segment))
    valid = len(tokens)
    block = tokens + [pad_token_id] * (seq_len + 1 - valid)
    input_ids = block[:seq_len]
    labels = block[1:]
    for i in range(seq_len):
        if i + 1 >= valid:  # the target is padding
            labels[i] = IGNORE_INDEX
        elif not flags[i + 1]:  # the target is left out of the loss
            labels[i] = IGNORE_INDEX
    if mask_across_documents:
        for start in starts[1:]:
            labels[start - 1] = IGNORE_INDEX
    position_ids: list[int] = []
    for segment in segments:
        position_ids.extend(range(len(segment)))
    position_ids.extend(range(seq_len + 1 - valid))
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids[:seq_len],
        "segments": [len(segment) for segment in segments],
    }


def piece_in_loss(
    length: int, mask: Optional[Sequence[int]] = None, prompt_length: Optional[int] = None
) -> list[bool]:
    """Whether each token of a document of ``length`` tokens, then its EOS, is in the loss
    (completion-only loss): by its ``mask`` (1 in, 0 out), or out for the first
    ``prompt_length``; every token without either. The EOS is in when the last token is
    (never after an empty document)."""
    if mask is not None:
        tokens = [bool(m) for m in mask]
    elif prompt_length is not None:
        tokens = [i >= prompt_length for i in range(length)]
    else:
        return [True] * (length + 1)
    return [*tokens, bool(tokens) and tokens[-1]]


def pack_concat(
    documents: Sequence[Sequence[int]],
    seq_len: int,
    eos_token_id: int,
    mask_across_documents: bool = False,
) -> list[dict[str, list]]:
    """Rows of "concat" packing: the pieces of ``documents`` (in the given order) joined
    into one stream, cut into consecutive blocks of ``seq_len + 1`` tokens; the tail shorter
    than a block is dropped.

    Returns one dict per block: ``input_ids``, ``labels``, ``position_ids`` (``[seq_len]``
    lists) and ``segments`` (lengths of the block's segments).
    """
    block_size = seq_len + 1
    blocks: list[list[list[int]]] = []
    current: list[list[int]] = []
    room = block_size
    for piece in _pieces(documents, eos_token_id):
        rest = piece
        while rest:
            take = rest[:room]
            rest = rest[room:]
            current.append(take)
            room -= len(take)
            if room == 0:
                blocks.append(current)
                current = []
                room = block_size
    return [_packed_row(b, seq_len, 0, mask_across_documents) for b in blocks]


def bestfit_blocks(
    piece_lengths: Sequence[int],
    block_size: int,
    max_documents_per_block: Optional[int] = None,
    overlong: str = "split",
) -> list[list[tuple[int, int, int]]]:
    """The blocks of "bestfit" packing of pieces of these lengths, in the given order:
    each block a list of ``(piece index, start, length)`` segments in position order.

    A piece longer than ``block_size`` is, by ``overlong``: ``"split"`` into chunks of
    ``block_size`` (the last shorter), each placed like a piece; ``"truncate"``d to its
    first ``block_size`` tokens; ``"drop"``ped. Each piece (chunk), in order, goes to the
    open block with the least room that still holds it (ties: the block opened first) or
    opens a new one; a block with ``max_documents_per_block`` pieces is closed.
    """
    chunks: list[tuple[int, int, int]] = []
    for index, length in enumerate(piece_lengths):
        if length > block_size and overlong == "drop":
            continue
        if length > block_size and overlong == "truncate":
            chunks.append((index, 0, block_size))
            continue
        for start in range(0, length, block_size):
            chunks.append((index, start, min(block_size, length - start)))
    blocks: list[list[tuple[int, int, int]]] = []
    rooms: list[int] = []
    for chunk in chunks:
        best = -1
        for k in range(len(blocks)):
            closed = max_documents_per_block is not None and (
                len(blocks[k]) >= max_documents_per_block
            )
            if not closed and rooms[k] >= chunk[2] and (best < 0 or rooms[k] < rooms[best]):
                best = k
        if best < 0:
            blocks.append([])
            rooms.append(block_size)
            best = len(blocks) - 1
        blocks[best].append(chunk)
        rooms[best] -= chunk[2]
    return blocks


def pack_bestfit(
    documents: Sequence[Sequence[int]],
    seq_len: int,
    eos_token_id: int,
    pad_token_id: int,
    max_documents_per_row: Optional[int] = None,
    overlong: str = "split",
    in_loss: Optional[Sequence[Sequence[bool]]] = None,
) -> list[dict[str, list]]:
    """Rows of "bestfit" packing (shifted labels: blocks of ``seq_len + 1`` tokens) of
    the pieces of ``documents``, placed by :func:`bestfit_blocks`. Blocks come in opening
    order, padded with ``pad_token_id``; labels never cross into the next segment, and
    are -100 where their target is not ``in_loss`` (per document, per piece token, see
    :func:`piece_in_loss`).

    Returns rows as :func:`pack_concat` does.
    """
    block_size = seq_len + 1
    pieces = _pieces(documents, eos_token_id)
    blocks = bestfit_blocks(
        [len(piece) for piece in pieces], block_size, max_documents_per_row, overlong
    )
    rows = []
    for block in blocks:
        segments = [pieces[d][start : start + length] for d, start, length in block]
        trained = None
        if in_loss is not None:
            trained = [list(in_loss[d][start : start + length]) for d, start, length in block]
        rows.append(_packed_row(segments, seq_len, pad_token_id, True, trained))
    return rows


def packed_cu_seqlens(rows: Sequence[dict[str, list]], seq_len: int) -> tuple[list[int], int]:
    """``(cu_seqlens, max_seqlen)`` of a batch of packed rows, from their ``segments``:
    for each row r, ``r * seq_len +`` the start of every segment starting before
    ``seq_len``, then of the padding if any; finally ``len(rows) * seq_len``. max_seqlen is
    the longest of these segments, clipped to the row."""
    cu_seqlens: list[int] = []
    max_seqlen = 0
    for r, row in enumerate(rows):
        start = 0
        for length in row["segments"]:
            if start < seq_len:
                cu_seqlens.append(r * seq_len + start)
                max_seqlen = max(max_seqlen, min(length, seq_len - start))
            start += length
        if start < seq_len:
            cu_seqlens.append(r * seq_len + start)
            max_seqlen = max(max_seqlen, seq_len - start)
    cu_seqlens.append(len(rows) * seq_len)
    return cu_seqlens, max_seqlen
