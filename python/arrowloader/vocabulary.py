"""The token ids a dataset writes (padding, end of sequence) and the vocabulary its ids
must lie in, taken from explicit arguments, a tokenizer and a prepared corpus's manifest,
and refused when two of them disagree: an id the model's embedding does not have fails
on a GPU far from its cause, and one the tokenizer means otherwise trains silently wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from arrowloader.manifest import Manifest

#: What ``tokenizer=`` accepts: a ``transformers`` tokenizer, a ``tokenizers.Tokenizer``,
#: or the path of a ``tokenizer.json`` (or of a folder holding one).
TokenizerLike = Union[Any, str, os.PathLike]

#: The facts a dataset can take from elsewhere, in the order they are reported.
FACTS = ("vocab_size", "eos_token_id", "pad_token_id")


@dataclass(frozen=True)
class TokenFacts:
    """Ids and the vocabulary size one source knows (None: it does not say), and what
    that source is, for messages."""

    source: str
    vocab_size: Optional[int] = None
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None


def tokenizer_facts(tokenizer: TokenizerLike) -> TokenFacts:
    """The vocabulary size (added tokens included), EOS and pad ids of ``tokenizer``.

    Raises:
        TypeError: ``tokenizer`` is none of the kinds :data:`TokenizerLike` names.
        ValueError: a path holds no ``tokenizer.json``.
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer).expanduser()
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"tokenizer={str(tokenizer)!r}: no tokenizer.json there")
        from tokenizers import Tokenizer  # the "prepare" extra: only needed here

        return _tokenizers_facts(Tokenizer.from_file(str(file)), f"tokenizer {file}")
    if hasattr(tokenizer, "get_vocab_size") and hasattr(tokenizer, "token_to_id"):
        return _tokenizers_facts(tokenizer, "the tokenizer")
    if hasattr(tokenizer, "convert_tokens_to_ids") and hasattr(tokenizer, "__len__"):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        return TokenFacts(
            source=f"tokenizer {name!r}",
            vocab_size=len(tokenizer),
            eos_token_id=_id(getattr(tokenizer, "eos_token_id", None)),
            pad_token_id=_id(getattr(tokenizer, "pad_token_id", None)),
        )
    raise TypeError(
        "tokenizer must be a transformers tokenizer, a tokenizers.Tokenizer or the path of "
        f"a tokenizer.json, got {type(tokenizer).__name__}"
    )


def _tokenizers_facts(tokenizer: Any, source: str) -> TokenFacts:
    padding = tokenizer.padding  # None unless the file configures padding
    return TokenFacts(
        source=source,
        vocab_size=int(tokenizer.get_vocab_size(with_added_tokens=True)),
        pad_token_id=None if padding is None else _id(padding.get("pad_id")),
    )


def _id(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def manifest_facts(manifest: Optional[Manifest], where: str) -> Optional[TokenFacts]:
    """What a prepared corpus's manifest (at ``where``) records, or None without one."""
    if manifest is None:
        return None
    tokenizer = manifest.tokenizer.get("source", "?")
    return TokenFacts(
        source=f"the manifest of {where} (tokenizer {tokenizer})",
        vocab_size=manifest.vocab_size,
        eos_token_id=manifest.eos_token_id,
    )


def resolve_facts(
    explicit: dict[str, Optional[int]], *sources: Optional[TokenFacts]
) -> dict[str, Optional[int]]:
    """Each of ``explicit``'s facts (names from :data:`FACTS`): the argument when given,
    else the first source that knows it, else None.

    Raises:
        ValueError: an argument and a source, or two sources, give different values;
            the message names both and where each came from.
    """
    known = [source for source in sources if source is not None]
    resolved: dict[str, Optional[int]] = {}
    for name, value in explicit.items():
        origin = f"{name}={value}"
        for source in known:
            theirs = getattr(source, name)
            if theirs is None:
                continue
            if value is None:
                value, origin = theirs, f"{name} {theirs} from {source.source}"
            elif theirs != value:
                raise ValueError(
                    f"{origin} disagrees with {source.source}, which gives {name} {theirs}; "
                    f"pass the value that matches the tokenizer the corpus was made with, "
                    f"or leave {name} out to take it from there"
                )
        resolved[name] = value
    return resolved


def check_token_id(name: str, value: Optional[int], vocab_size: Optional[int]) -> None:
    """Raises ValueError unless ``value`` (an id argument such as ``pad_token_id``) is None
    or a non-negative int below ``vocab_size`` (when that is known); TypeError for a
    non-int."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(
            f"{name}={value} is negative; token ids index the embedding table and must be "
            ">= 0"
        )
    if vocab_size is not None and value >= vocab_size:
        raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size})")
