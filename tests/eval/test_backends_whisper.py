"""Whisper WER / CER: the English normaliser against hand-applied rules, the Whisper back-end's loading
path and decoding with a tiny local WhisperForConditionalGeneration + processor (against a greedy
decoding loop written out), and the wer / cer columns of ``avgen evaluate`` (cached transcripts)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.eval import BackendUnavailable, CharErrorRate, WordErrorRate, edit_distance, get_backend
from avgen.eval.english import english_normalize

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
            "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte (the byte-level BPE alphabet Whisper's tokenizer uses)."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def _tiny_whisper(directory) -> dict[str, int]:
    """A tiny random Whisper with a byte-level tokenizer (no merges) and the generation config of the real ones."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(_byte_alphabet())}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, encoder_layers=1, decoder_layers=1, d_model=16,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=1500, max_target_positions=12, pad_token_id=ids["<|endoftext|>"],
                           bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                           decoder_start_token_id=ids["<|startoftranscript|>"])
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        lang_to_id={"<|en|>": ids["<|en|>"]}, task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True, max_length=12,
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], begin_suppress_tokens=[220, ids["<|endoftext|>"]])
    model.save_pretrained(directory)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(directory)
    return ids


def test_english_normalizer_applies_whisper_rules():
    cases = {
        "Mr. Smith won't go [laughs] (inaudible) um, to the café!": "mister smith will not go to the cafe",
        "Twenty one people, three hundred and four dogs.": "21 people 304 dogs",
        "It grew two point five percent": "it grew 2.5%",
        "one two three": "1 2 3",  # separate digits stay separate numbers
        "The twenty first of May": "the 21st of may",
        "two million three thousand and one": "2003001",
        "It costs five dollars, we're sure": "it costs $5 we are sure",
        "I've been here; they'll see 1,000 birds": "i have been here they will see 1000 birds",
        "Hmm... gonna wanna": "going to want to",
    }
    for text, expected in cases.items():
        assert english_normalize(text) == expected, text
    assert english_normalize("the colour grey", spellings={"colour": "color", "grey": "gray"}) == "the color gray"


def test_error_rates_with_the_english_normalizer_match_hand_counts():
    wer = WordErrorRate(normalizer="english")
    # ref "i will not pay 21 dollars" -> "i will not pay 21 dollars" (dollars without a number before it stays)
    wer.update(["I will not pay twenty one"], ["I won't pay 21 dollars"])  # 1 deletion of 6 words
    wer.update(["hello there world"], ["Hello, world!"])  # 1 insertion of 2 words
    assert float(wer.compute()) == pytest.approx(2 / 8)
    cer = CharErrorRate(normalizer="english")
    cer.update(["ten cats"], ["10 cat"])  # "10 cats" vs "10 cat": 1 insertion over 6 characters
    assert float(cer.compute()) == pytest.approx(1 / 6)
    assert edit_distance("10 cat", "10 cats") == 1
    with pytest.raises(ValueError, match="normalizer"):
        WordErrorRate(normalizer="french")


def _greedy_reference(model, features: torch.Tensor, prompt: list[int], suppress_first: list[int], eos: int, steps: int) -> list[int]:
    """Greedy Whisper decoding written out: encoder once, the decoder on the growing token list, argmax."""
    with torch.no_grad():
        encoded = model.model.encoder(features).last_hidden_state
        tokens = list(prompt)
        for step in range(steps):
            hidden = model.model.decoder(input_ids=torch.tensor([tokens]), encoder_hidden_states=encoded).last_hidden_state
            logits = model.proj_out(hidden[0, -1])
            if step == 0:
                logits[suppress_first] = -float("inf")
            tokens.append(int(logits.argmax()))
            if tokens[-1] == eos:
                break
    return tokens[len(prompt):]


def test_whisper_backend_loads_a_local_model_and_decodes_greedily(tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from avgen.eval.whisper import WhisperBackend

    ids = _tiny_whisper(tmp_path / "whisper")
    backend = get_backend("whisper", str(tmp_path / "whisper"))
    assert backend.sample_rate == 16000 and backend.generate_kwargs["language"] == "en"
    backend = WhisperBackend(str(tmp_path / "whisper"), max_new_tokens=6)
    rng = np.random.default_rng(0)
    clip = rng.normal(size=12000).astype(np.float32) * 0.1
    # 8 kHz input: resampled to the processor's 16 kHz first
    from avgen.data.media import resample

    text = backend.transcribe([torch.from_numpy(resample(clip.astype(np.float64), 16000, 8000))], 8000)
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "whisper").eval()
    processor = WhisperProcessor.from_pretrained(tmp_path / "whisper")
    resampled = resample(resample(clip.astype(np.float64), 16000, 8000), 8000, 16000).astype(np.float32)
    features = processor.feature_extractor([resampled], sampling_rate=16000, return_tensors="pt")["input_features"]
    prompt = [ids["<|startoftranscript|>"], ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]
    tokens = _greedy_reference(model, features, prompt, [220, ids["<|endoftext|>"]], ids["<|endoftext|>"], steps=6)
    expected = processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    assert len(tokens) == 6 and text == [expected]


def test_whisper_backend_refuses_missing_weights(tmp_path):
    with pytest.raises(BackendUnavailable, match="--whisper"):
        get_backend("whisper")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match="cannot be loaded.*fix: --whisper"):
        get_backend("whisper", str(tmp_path / "empty"))


SPEECH_DATA = """\
data:
  class_path: avgen.data.ToyWorldDataModule
  init_args: {batch_size: 2, num_workers: 0, seed: 4, predict_size: 2, duration: 1.0, sample_rate: 16000,
              semantic_fps: 8.0, sync_fps: 25.0, semantic_size: 32, sync_size: 32, scenarios: [speech]}
"""


def test_evaluate_scores_wer_and_cer_with_a_local_whisper(tmp_path, monkeypatch):
    from avgen.cli.compare import build_datamodule, evaluate
    from avgen.cli.generate import safe_name
    from avgen.eval.whisper import WhisperBackend

    _tiny_whisper(tmp_path / "whisper")
    config = tmp_path / "data.yaml"
    config.write_text(SPEECH_DATA)
    dm = build_datamodule(str(config))
    dm.setup("predict")
    generated = tmp_path / "gen"
    generated.mkdir()
    audio, transcripts = {}, {}
    for batch in dm.predict_dataloader():
        for i, sample_id in enumerate(batch.ids):
            key = safe_name(sample_id)
            audio[key], transcripts[key] = batch.audio[i, : int(batch.audio_lengths[i])], batch.transcript[i]
            sf.write(str(generated / f"{key}.wav"), audio[key].numpy(), 16000, subtype="FLOAT")
    assert all(transcripts.values())
    args = ["--generated", str(generated), "--reference", str(config), "--whisper", str(tmp_path / "whisper"),
            "--metrics", "wer", "cer"]
    result = evaluate(args)
    ids = sorted(audio)
    heard = WhisperBackend(str(tmp_path / "whisper")).transcribe([audio[i] for i in ids], 16000)
    refs = [english_normalize(transcripts[i]).split() for i in ids]
    hyps = [english_normalize(h).split() for h in heard]
    expected_wer = sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / sum(len(r) for r in refs)
    assert result["row"]["wer"] == pytest.approx(expected_wer)
    assert result["row"]["cer"] >= 0 and not result["skipped"]
    # the transcripts are cached: a rerun does not run Whisper again
    monkeypatch.setattr(WhisperBackend, "transcribe", lambda *a, **k: pytest.fail("transcribed again"))
    assert evaluate(args)["row"]["wer"] == pytest.approx(expected_wer)
