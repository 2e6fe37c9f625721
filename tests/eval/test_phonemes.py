"""PER with the CMU dictionary G2P: phoneme sequences and edit distances worked out by hand, numbers read back
as words, the split-off -s, out-of-vocabulary words spelled letter by letter and counted."""

import pytest
import torch

from avgen.eval.phonemes import PhonemeErrorRate, number_words, text_phonemes, word_phonemes


def test_phonemes_of_words_numbers_and_the_s_ending():
    assert word_phonemes("cat") == (["K", "AE", "T"], True)  # CMUdict K AE1 T, stress removed
    assert text_phonemes("The cat.")[0] == ["DH", "AH", "K", "AE", "T"]
    # the normaliser writes "twenty first" as 21st; it is read back as words
    assert number_words("21st") == ["twenty", "first"]
    assert number_words("2.5%") == ["two", "point", "five", "percent"]
    assert number_words("$1204") == ["one", "thousand", "two", "hundred", "four", "dollars"]
    assert number_words("40th") == ["fortieth"] and number_words("cat") is None
    assert text_phonemes("the twenty first")[0] == ["DH", "AH", "T", "W", "EH", "N", "T", "IY", "F", "ER", "S", "T"]
    # "it's" / "cats'" are split by the normaliser: "s" after T is /S/, after N /Z/, after S /IH Z/
    phonemes, words, oov = text_phonemes("It's John's bus's")
    assert phonemes == ["IH", "T", "S", "JH", "AA", "N", "Z", "B", "AH", "S", "IH", "Z"] and (words, oov) == (6, 0)


def test_out_of_vocabulary_words_are_spelled_and_counted():
    phonemes, known = word_phonemes("zqx")
    assert not known and phonemes == ["Z", "IY", "K", "Y", "UW", "EH", "K", "S"]  # letter names z, q, x
    assert word_phonemes("b4x")[0] == ["B", "IY", "F", "AO", "R", "EH", "K", "S"]
    assert text_phonemes("hello zqx world") == (
        ["HH", "AH", "L", "OW", "Z", "IY", "K", "Y", "UW", "EH", "K", "S", "W", "ER", "L", "D"], 3, 1)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_per_matches_hand_computed_phoneme_edit_distances():
    metric = PhonemeErrorRate()
    # ref "the cat sat" = DH AH K AE T S AE T (8); hyp "the bat sat" = one substitution (K -> B)
    metric.update(["the bat sat"], ["the cat sat"])
    assert float(metric.compute()) == pytest.approx(1 / 8)
    # ref "red fish" = R EH D F IH SH (6); hyp "red fishes" = F IH SH IH Z: two insertions
    # ref "sheep" = SH IY P (3); hyp "sheep sheep" = three insertions; ref "go" = G OW (2), hyp "" = two deletions
    metric.update(["red fishes", "sheep sheep", ""], ["red fish", "sheep", "go"])
    assert int(metric.errors) == 1 + 2 + 3 + 2 and int(metric.total) == 8 + 6 + 3 + 2
    assert float(metric.compute()) == pytest.approx(8 / 19)
    # a WER of 1 (one word of one) but a PER of 1/3: "ship" vs "sheep" differs in one phoneme
    close = PhonemeErrorRate()
    close.update(["ship"], ["sheep"])
    assert float(close.compute()) == pytest.approx(1 / 3)
    assert int(metric.words) == (3 + 3) + (2 + 2) + (2 + 1) + (0 + 1) and int(metric.oov_words) == 0
    oov = PhonemeErrorRate()
    oov.update(["zqx"], ["zqx"])
    assert float(oov.compute()) == 0.0 and int(oov.oov_words) == 2 and int(oov.words) == 2
    with pytest.raises(ValueError, match="phonemes"):
        PhonemeErrorRate().compute()
    # DDP: the four states are sums
    assert all(metric._reductions[name] is torch.sum or "sum" in str(metric._reductions[name])
               for name in ("errors", "total", "words", "oov_words"))


def test_score_per_on_whisper_transcripts(capsys):
    import types

    from avgen.eval.phonemes import score_per

    samples = {"a": {"transcript": "the cat sat"}, "b": {"transcript": "zqx"}, "c": {"transcript": None}}
    heard = {"a": "the bat sat", "b": "zqx", "c": "anything"}
    asked = []

    def transcripts(ids):
        asked.append(tuple(ids))
        return {i: heard[i] for i in ids}

    context = types.SimpleNamespace(ids=["a", "b", "c"], samples=samples, transcripts=transcripts)
    assert score_per(context) == pytest.approx(1 / (8 + 8))  # zqx = Z IY K Y UW EH K S: 8 phonemes, no error
    assert asked == [("a", "b")]
    assert "2 of 8 words" in capsys.readouterr().err
