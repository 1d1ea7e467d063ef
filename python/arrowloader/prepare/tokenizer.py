"""Tokenizers for ``arrowloader prepare``: a Hugging Face ``tokenizers`` file
(``tokenizer.json``), or a local ``transformers`` tokenizer folder.

A folder holding ``tokenizer.json`` is read with ``tokenizers`` alone (its EOS token from
``tokenizer_config.json`` or ``special_tokens_map.json``); any other folder, and every
folder whose chat template is needed, goes through ``transformers.AutoTokenizer`` with
``local_files_only=True`` and ``trust_remote_code=False``: nothing is downloaded and no
code from the folder runs (a chat template is a Jinja template, rendered in transformers'
sandbox).
Truncation and padding configured in a tokenizer file are switched off, so no document is
ever cut short.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from arrowloader.errors import ArrowLoaderError

TOKENIZER_FILE = "tokenizer.json"
#: Files of a tokenizer folder that its hash covers (weights and the like are left out).
_HASHED_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".vocab", ".jinja")
#: End-of-text tokens looked for, in this order, in a bare tokenizer.json.
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")
#: How a chat template marks the assistant's tokens for ``return_assistant_tokens_mask``.
_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TokenizerError(ArrowLoaderError, ValueError):
    """The tokenizer cannot be loaded, changed since the preparation began, or lacks an
    EOS token that ``--append-eos`` needs."""


@dataclass(frozen=True)
class TokenizerSpec:
    """What names a tokenizer across processes and machines: its path, how to load it,
    the hash of its files, and the EOS token chosen.

    Attributes:
        source: the path given (a ``tokenizer.json`` file or a folder), absolute.
        kind: ``"tokenizers"`` or ``"transformers"``.
        sha256: hash over the tokenizer's files (see :func:`tokenizer_hash`).
        eos_token: the EOS token's text, or None.
        add_special_tokens: let the tokenizer add its special tokens (BOS, ...).
    """

    source: str
    kind: str
    sha256: str
    eos_token: Optional[str]
    add_special_tokens: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def tokenizer_files(path: Path) -> list[Path]:
    """The files a tokenizer consists of: the file itself, or a folder's top-level
    tokenizer files (``.json``, ``.txt``, ``.model``, ...), sorted by name."""
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _HASHED_SUFFIXES
    )


def tokenizer_hash(path: Path) -> str:
    """SHA-256 over the names and bytes of :func:`tokenizer_files`."""
    digest = hashlib.sha256()
    for file in tokenizer_files(path):
        data = file.read_bytes()
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _folder_eos(folder: Path) -> Optional[str]:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            config = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        token = config.get("eos_token") if isinstance(config, dict) else None
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and token:
            return token
    return None


class LoadedTokenizer:
    """A tokenizer ready to encode batches of documents.

    Attributes:
        spec: its :class:`TokenizerSpec`.
        vocab_size: every id it produces is below this.
        eos_token_id: the id of ``spec.eos_token``, or None.
    """

    def __init__(self, spec: TokenizerSpec, backend: Any, vocab_size: int,
                 eos_token_id: Optional[int]) -> None:
        self.spec = spec
        self._backend = backend
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of every text, in order: a list of int lists."""
        if self.spec.kind == "tokenizers":
            encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            return [e.ids for e in encode(list(texts),
                                          add_special_tokens=self.spec.add_special_tokens)]
        out = self._backend(
            list(texts), add_special_tokens=self.spec.add_special_tokens, truncation=False,
            padding=False, return_attention_mask=False, return_token_type_ids=False,
        )
        return [list(ids) for ids in out["input_ids"]]

    def _encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of every text without any special token."""
        if self.spec.kind == "tokenizers":
            encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            return [e.ids for e in encode(list(texts), add_special_tokens=False)]
        out = self._backend(
            list(texts), add_special_tokens=False, truncation=False, padding=False,
            return_attention_mask=False, return_token_type_ids=False,
        )
        return [list(ids) for ids in out["input_ids"]]

    def encode_examples(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[list[list[int]], list[int]]:
        """Prompt and completion examples as ``(ids, prompt_lengths)``: each example's ids
        are its prompt's (with the tokenizer's special tokens when ``add_special_tokens``)
        then its completion's (never with them), so the prompt length is exact, not
        guessed from tokenizing the joined text."""
        prompt_ids = self.encode_batch(prompts)
        completion_ids = self._encode_plain(completions)
        return [p + c for p, c in zip(prompt_ids, completion_ids)], [len(p) for p in prompt_ids]

    def encode_conversations(
        self, conversations: Sequence[list[dict[str, Any]]]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Conversations through the tokenizer's chat template as ``(ids, masks)``: the
        masks are ``apply_chat_template(..., return_assistant_tokens_mask=True)``'s, 1 on
        the tokens the template marks as the assistant's (``{% generation %}`` blocks).

        Raises:
            TokenizerError: the tokenizer has no chat template, or one that does not mark
                the assistant's tokens.
        """
        template = self.chat_template()
        out = self._backend.apply_chat_template(
            list(conversations), chat_template=template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True,
        )
        return ([list(ids) for ids in out["input_ids"]],
                [list(mask) for mask in out["assistant_masks"]])

    def chat_template(self) -> str:
        """The tokenizer's chat template, checked to mark the assistant's tokens.

        Raises:
            TokenizerError: see :meth:`encode_conversations`.
        """
        template = getattr(self._backend, "chat_template", None) if (
            self.spec.kind == "transformers") else None
        if isinstance(template, dict):  # named templates: the default one
            template = template.get("default")
        if not isinstance(template, str) or not template:
            raise TokenizerError(
                f"{self.spec.source}: no chat template; --messages-field needs a tokenizer "
                "folder whose tokenizer_config.json (or chat_template.jinja) holds one. For "
                "prompt/completion data use --prompt-field and --completion-field"
            )
        if not _GENERATION_BLOCK.search(template):
            raise TokenizerError(
                f"{self.spec.source}: the chat template does not mark the assistant's tokens "
                "with {% generation %} ... {% endgeneration %}, so no loss mask can be made "
                "from it; add the markers around the assistant's turns, or write the data "
                "as prompt and completion (--prompt-field, --completion-field)"
            )
        return template


def load_tokenizer(
    source: str | os.PathLike[str],
    eos_token: Optional[str] = None,
    add_special_tokens: bool = False,
    expected_sha256: Optional[str] = None,
    kind: Optional[str] = None,
) -> LoadedTokenizer:
    """Loads a ``tokenizer.json`` file or a tokenizer folder.

    Args:
        source: the file or folder.
        eos_token: the EOS token's text; default: the folder's configured one, else the
            first of ``<|endoftext|>``, ``</s>``, ... the vocabulary holds.
        add_special_tokens: let the tokenizer add its special tokens to every document.
        expected_sha256: the hash the tokenizer must have (a worker checks that it loads
            the very tokenizer the preparation began with).
        kind: ``"transformers"`` reads a folder with ``transformers`` even when it holds a
            ``tokenizer.json`` (for its chat template); None chooses as the module
            docstring says.

    Raises:
        TokenizerError: it cannot be loaded, its hash differs, or ``eos_token`` is not
            in its vocabulary.
    """
    path = Path(source).absolute()
    if not path.exists():
        raise TokenizerError(f"{path}: no such tokenizer file or folder")
    digest = tokenizer_hash(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise TokenizerError(
            f"{path}: the tokenizer's files changed since the preparation began (hash "
            f"{digest[:12]}, expected {expected_sha256[:12]}); every machine must see the "
            "same tokenizer"
        )
    if kind not in (None, "tokenizers", "transformers"):
        raise ValueError(f"kind must be 'tokenizers', 'transformers' or None, got {kind!r}")
    if kind == "transformers" and path.is_file():
        raise TokenizerError(
            f"{path}: a bare tokenizer file has no chat template; give the tokenizer's folder "
            "(with tokenizer_config.json) instead"
        )
    file = path if path.is_file() else path / TOKENIZER_FILE
    if file.is_file() and kind != "transformers":
        kind = "tokenizers"
        backend = _load_tokenizers_file(file)
        vocab_size = backend.get_vocab_size(with_added_tokens=True)
        if eos_token is None:
            eos_token = _folder_eos(file.parent) if path.is_dir() else None
        if eos_token is None:
            eos_token = next(
                (t for t in _EOS_CANDIDATES if backend.token_to_id(t) is not None), None
            )
        eos_id = backend.token_to_id(eos_token) if eos_token is not None else None
    else:
        kind = "transformers"
        backend = _load_transformers_folder(path)
        vocab_size = len(backend)
        if eos_token is None:
            eos_token = backend.eos_token
        eos_id = backend.convert_tokens_to_ids(eos_token) if eos_token is not None else None
        if eos_id == backend.unk_token_id and eos_token != backend.unk_token:
            eos_id = None
    if eos_token is not None and eos_id is None:
        raise TokenizerError(f"{path}: the EOS token {eos_token!r} is not in the vocabulary")
    spec = TokenizerSpec(str(path), kind, digest, eos_token, add_special_tokens)
    return LoadedTokenizer(spec, backend, int(vocab_size), eos_id)


def load_spec(spec: TokenizerSpec) -> LoadedTokenizer:
    """Loads the tokenizer a spec names, checking its hash."""
    return load_tokenizer(spec.source, spec.eos_token, spec.add_special_tokens, spec.sha256,
                          spec.kind)


def _load_tokenizers_file(file: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerError(
            "tokenizing needs the 'tokenizers' package: pip install 'arrowloader[prepare]'"
        ) from None
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises plain Exception for a bad file
        raise TokenizerError(f"{file}: not a tokenizers tokenizer file ({exc})") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _load_transformers_folder(folder: Path) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise TokenizerError(
            f"{folder}: has no tokenizer.json; reading it needs the 'transformers' package "
            "(pip install 'arrowloader[hf]')"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:  # transformers raises many kinds for a bad folder
        raise TokenizerError(f"{folder}: not a transformers tokenizer folder ({exc})") from None
    # Documents are never truncated; this only silences the over-length warning.
    tokenizer.model_max_length = 1 << 62
    return tokenizer
