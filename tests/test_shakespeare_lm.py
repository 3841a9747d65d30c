"""The Shakespeare character GPT-2: splits, perplexity by hand, training, and the training cache."""

import pytest
import torch
import torch.nn.functional as F

from conftest import bits
from prunekit import shakespeare_lm
from prunekit.shakespeare_lm import (
    UNKNOWN,
    CharVocab,
    TrainConfig,
    calibration_batches,
    load_corpus,
    perplexity,
    split_plays,
    train_gpt2,
)
from prunekit.text import load_plays

transformers = pytest.importorskip("transformers")

TINY = TrainConfig(
    n_layer=1, n_head=2, n_embd=32, seq_len=32, batch_size=8, steps=40, lr=1e-2, warmup_steps=4
)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    return tmp_path


def tiny_model(vocab_size: int = 11) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = TrainConfig(n_layer=1, n_head=2, n_embd=16, seq_len=8, steps=2, warmup_steps=0)
    return transformers.GPT2LMHeadModel(cfg.gpt2_config(vocab_size))


def test_perplexity_is_exp_of_mean_next_token_nll_over_non_overlapping_windows():
    model = tiny_model().train()
    ids = torch.randint(0, 11, (50,))  # 49 predictions → 6 windows of 8, the last 1 token unused
    nll, count = 0.0, 0
    with torch.no_grad():
        for j in range(6):
            logits = model.eval()(input_ids=ids[None, 8 * j : 8 * j + 8]).logits[0]  # (8, vocab)
            targets = ids[8 * j + 1 : 8 * j + 9]
            nll -= float(torch.log_softmax(logits.double(), -1).gather(1, targets[:, None]).sum())
            count += 8
    model.train()
    assert perplexity(model, ids, seq_len=8, batch=4) == pytest.approx(torch.tensor(nll / count).exp().item())
    assert model.training  # restored
    first_last = torch.stack([ids[0:9], ids[40:49]])  # max_windows=2 keeps windows 0 and 5
    with torch.no_grad():
        logits = model.eval()(input_ids=first_last[:, :-1]).logits
    expected = F.cross_entropy(logits.flatten(0, 1), first_last[:, 1:].flatten()).exp().item()
    assert perplexity(model, ids, seq_len=8, max_windows=2) == pytest.approx(expected)


def test_uniform_logits_give_perplexity_equal_to_vocabulary_size():
    model = tiny_model(vocab_size=11)
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        model.lm_head.weight.zero_()  # logits ≡ 0
    assert perplexity(model, torch.randint(0, 11, (40,)), seq_len=8) == pytest.approx(11.0, rel=1e-6)


def test_perplexity_rejects_streams_shorter_than_one_window():
    with pytest.raises(ValueError, match="more than seq_len=8 tokens"):
        perplexity(tiny_model(), torch.zeros(8, dtype=torch.long), seq_len=8)


def test_plays_split_into_disjoint_sets_by_play(corpus):
    names = sorted(load_plays())
    split = split_plays(names)
    sets = [set(v) for v in split.values()]
    assert sum(map(len, sets)) == len(names) == 42 and set.union(*sets) == set(names)
    assert split["heldout"] == tuple(names[::5])  # the plays the MiniLM bench holds out
    assert split["calibration"] == tuple(names[1::10]) and len(split["train"]) == 28
    assert corpus.plays == split
    plays = load_plays()
    train_text = "\n\n".join(plays[n] for n in split["train"])
    assert corpus.vocab == CharVocab.from_text(train_text)
    heldout_text = "\n\n".join(plays[n] for n in split["heldout"])
    assert corpus.heldout.numel() == len(heldout_text) and corpus.train.numel() == len(train_text)
    assert corpus.vocab.decode(corpus.heldout[:500]) == heldout_text[:500]


def test_split_that_leaves_a_set_empty_names_the_fix():
    with pytest.raises(ValueError, match=r"no plays for \['train'\]"):
        split_plays(["a", "b", "c"], heldout_every=2, calibration_every=4)


def test_vocab_maps_unseen_characters_to_unknown():
    vocab = CharVocab.from_text("abca")
    assert vocab.chars == "abc" and vocab.size == 4
    assert vocab.encode("cab!").tolist() == [3, 1, 2, UNKNOWN]
    assert vocab.decode(torch.tensor([1, UNKNOWN])) == "a\ufffd"


def test_calibration_windows_are_seeded_slices_of_the_stream():
    stream = torch.arange(1000)
    batches = calibration_batches(stream, n=10, seq_len=16, batch=4, seed=3)
    assert [b["input_ids"].shape for b in batches] == [(4, 16), (4, 16), (2, 16)]
    windows = torch.cat([b["input_ids"] for b in batches])
    assert torch.equal(windows - windows[:, :1], torch.arange(16).expand(10, 16))  # contiguous slices
    again = torch.cat([b["input_ids"] for b in calibration_batches(stream, n=10, seq_len=16, seed=3)])
    assert torch.equal(windows, again)
    assert not torch.equal(windows, torch.cat([b["input_ids"] for b in calibration_batches(stream, 10, 16)]))


def test_training_lowers_heldout_perplexity(corpus, cache):
    torch.manual_seed(TINY.seed)
    untrained = transformers.GPT2LMHeadModel(TINY.gpt2_config(corpus.vocab.size))
    before = perplexity(untrained, corpus.heldout, TINY.seq_len, max_windows=32)
    trained = train_gpt2(corpus, TINY, progress=False)
    after = perplexity(trained.model, corpus.heldout, TINY.seq_len, max_windows=32)
    assert before > 0.8 * corpus.vocab.size and after < 0.5 * before
    assert not trained.cached and not trained.model.training
    assert trained.model.lm_head.weight is trained.model.transformer.wte.weight


def test_cache_round_trips_bit_for_bit_and_a_changed_hyperparameter_retrains(corpus, cache, monkeypatch):
    first = train_gpt2(corpus, TINY, progress=False)
    assert first.path.parent == cache and (first.path / "training.json").is_file()
    with monkeypatch.context() as m:
        m.setattr(shakespeare_lm, "_train", lambda *a: pytest.fail("trained although cached"))
        second = train_gpt2(corpus, TINY, progress=False)
    assert second.cached and second.record == first.record
    assert second.model.lm_head.weight is second.model.transformer.wte.weight
    state = second.model.state_dict()
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(bits(state[name]), bits(tensor)), name
    changed = train_gpt2(corpus, TrainConfig(**{**TINY.__dict__, "lr": 5e-3}), progress=False)
    assert not changed.cached and changed.path != first.path
    assert not torch.equal(changed.model.lm_head.weight, first.model.lm_head.weight)


def test_corrupt_cache_entry_warns_and_is_trained_again_identically(corpus, cache):
    first = train_gpt2(corpus, TINY, progress=False)
    weights = first.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        again = train_gpt2(corpus, TINY, progress=False)
    assert not again.cached and again.path == first.path
    assert torch.equal(again.model.lm_head.weight, first.model.lm_head.weight)  # training is deterministic
    assert train_gpt2(corpus, TINY, progress=False).cached


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_embd": 30}, "multiple of n_head=4"),
        ({"warmup_steps": 5, "steps": 5}, r"warmup_steps must be in \[0, steps=5\)"),
        ({"steps": 0}, "steps must be a positive int"),
        ({"lr": 0.0}, "need lr > 0"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)
