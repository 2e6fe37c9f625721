import sys
"""SpeechT5 text encoder + Durator (VoiceLDM / NaturalSpeech learnable upsampling)."""

import logging

import pytest
import torch
import torch.nn.functional as F
from transformers import SpeechT5Config, SpeechT5ForTextToSpeech

from avgen.conditioning.speech import (
    TINY_SPEECHT5, CharacterTokenizer, Durator, LearnableUpsampler, SpeechTranscriptEncoder,
)

D = 16


def _durator(**kw) -> Durator:
    torch.manual_seed(0)
    return Durator(D, dropout=0.0, **kw)


def _tokens(lengths, k=None):
    k = k or max(lengths)
    x = torch.randn(len(lengths), k, D)
    mask = torch.arange(k)[None] < torch.tensor(lengths)[:, None]
    return x, mask


def test_durations_follow_the_formula_and_output_length_follows_them():
    dur = _durator().eval()
    with torch.no_grad():
        dur.duration_predictor.proj.bias.fill_(1.0)  # log-durations around 1 -> a few frames per token
    x, mask = _tokens([5, 3])
    log_w = dur.duration_predictor(x, mask)
    expected_w = torch.exp(log_w.clamp(max=3.5)).clamp(min=1.0) * mask
    out, out_mask, w = dur(x, mask)
    torch.testing.assert_close(w, expected_w)
    lengths = torch.round(expected_w.sum(1)).long()
    assert out.shape == (2, int(lengths.max()), D)
    assert out_mask.sum(1).tolist() == lengths.tolist()
    assert torch.all(out[~out_mask] == 0) and torch.all(w[~mask] == 0)
    assert (w[mask] >= 1).all()


def test_duration_predictor_input_is_detached():
    dur = _durator()
    x, mask = _tokens([4])
    x.requires_grad_(True)
    dur.duration_predictor(x, mask).sum().backward()
    assert x.grad is None


def _upsampler_reference(up: LearnableUpsampler, v, w, src_mask, lengths):
    """Direct transcription, one (b, t, k) at a time, of VoiceLDM's LearnableUpsampler."""
    b, k, d = v.shape
    t_max = int(lengths.max())
    cw, cc = up.conv_w(v, src_mask), up.conv_c(v, src_mask)
    out = torch.zeros(b, t_max, d)
    for bi in range(b):
        e = torch.cumsum(w[bi], 0)
        s = e - w[bi]
        for t in range(1, int(lengths[bi]) + 1):
            logits, cs = [], []
            for ki in range(k):
                if not src_mask[bi, ki]:
                    continue
                se = torch.stack([t - s[ki], e[ki] - t])
                logits.append(up.swish_w(torch.cat([se, cw[bi, ki]])))
                cs.append(up.swish_c(torch.cat([se, cc[bi, ki]])))
            weights = torch.stack(logits).softmax(dim=0)  # (K_valid, dim_w), softmax over tokens
            cs = torch.stack(cs)  # (K_valid, dim_c)
            vk = v[bi, src_mask[bi]]  # (K_valid, D)
            wv = weights.T @ vk  # (dim_w, D)
            wc = weights.T @ cs  # (dim_w, dim_c)
            o = up.linear_w(wv.flatten()) + up.linear_c(wc.flatten())
            out[bi, t - 1] = up.proj_o(up.norm(o))
    return out


def test_upsampler_matches_a_direct_transcription():
    torch.manual_seed(1)
    up = LearnableUpsampler(D, dropout=0.0).eval()
    v, mask = _tokens([4, 2])
    w = torch.tensor([[1.0, 2.5, 1.2, 3.0], [2.0, 1.4, 0.0, 0.0]])
    lengths = torch.round(w.sum(1)).long()
    out, out_mask = up(v, w, mask, lengths)
    ref = _upsampler_reference(up, v, w, mask, lengths)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert out_mask.sum(1).tolist() == lengths.tolist()


def test_padding_tokens_do_not_change_the_output():
    dur = _durator().eval()
    x, mask = _tokens([3])
    padded = torch.cat([x, 100 * torch.randn(1, 4, D)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], dim=1)
    out, m, w = dur(x, mask)
    out_p, m_p, w_p = dur(padded, padded_mask)
    torch.testing.assert_close(out_p, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w_p[:, :3], w)
    assert torch.equal(m_p, m)


def test_gradients_reach_durations_through_s_and_e_and_the_predictor():
    dur = _durator()
    with torch.no_grad():
        dur.duration_predictor.proj.bias.fill_(1.0)
    x, mask = _tokens([4, 2])
    target_w = torch.randn(1, 1, D)
    out, out_mask, w = dur(x, mask)
    (out * target_w).sum().backward()
    g = dur.duration_predictor.proj.weight.grad
    assert g is not None and g.abs().sum() > 0
    # Durations as a leaf: the only path from them to the output is through S and E.
    up = dur.upsampler
    durations = w.detach().clone().requires_grad_(True)
    lengths = torch.round(durations.detach().sum(1)).long()
    o, _ = up(x, durations, mask, lengths)
    (o * target_w).sum().backward()
    assert durations.grad[mask].abs().min() > 0 and torch.all(durations.grad[~mask] == 0)


def test_max_frames_error_names_the_sample_and_truncate_warns(caplog):
    dur = _durator(max_frames=6, overflow="error").eval()
    with torch.no_grad():
        dur.duration_predictor.proj.bias.fill_(1.0)
    x, mask = _tokens([5, 1])
    with pytest.raises(ValueError, match=r"sample 0 \('a long transcript'\).*Raise max_frames"):
        dur(x, mask, names=["a long transcript", "hi"])
    dur.overflow = "truncate"
    with caplog.at_level(logging.WARNING):
        out, out_mask, w = dur(x, mask)
    assert out_mask.sum(1)[0] == 6 and out.shape[1] == 6 and "truncating" in caplog.text
    assert out_mask.sum(1)[1] == torch.round(w[1].sum()).long()


@pytest.fixture(scope="module")
def speecht5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_speecht5")
    torch.manual_seed(0)
    config = SpeechT5Config(vocab_size=81, hidden_size=D, encoder_layers=2, encoder_attention_heads=2,
                            encoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
                            speech_decoder_prenet_units=16, speech_decoder_postnet_units=16, hidden_dropout=0.0,
                            attention_dropout=0.0, activation_dropout=0.0, positional_dropout=0.0,
                            encoder_layerdrop=0.0, max_text_positions=64)
    SpeechT5ForTextToSpeech(config).save_pretrained(path)
    return str(path)


def test_speecht5_round_trip_and_trainable_encoder(speecht5_dir):
    enc = SpeechTranscriptEncoder(speecht5_dir, tokenizer="char", max_frames=400, durator_dropout=0.0)
    assert enc.output_dim == D and not enc.frozen
    ref = SpeechT5ForTextToSpeech.from_pretrained(speecht5_dir).eval().speecht5.encoder
    tok = CharacterTokenizer()
    out = tok(["hello there"], return_tensors="pt")
    enc.eval()
    states, mask = enc.encode_tokens(["hello there"])
    expected = ref(input_values=out["input_ids"], attention_mask=out["attention_mask"]).last_hidden_state
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-5)
    enc.train()
    frames, frame_mask, w, token_mask = enc.forward_with_durations(["hello there", "hi"])
    assert frame_mask.sum(1).tolist() == torch.round(w.detach().sum(1)).long().tolist()
    (frames * torch.randn(1, 1, D)).sum().backward()
    assert all(p.grad is not None for p in enc.durator.duration_predictor.parameters())
    enc_grads = [p.grad for p in enc.text_encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in enc_grads)


def test_token_cap_follows_the_overflow_policy(speecht5_dir):
    long = "a" * 80  # 81 tokens with EOS > max_text_positions 64
    enc = SpeechTranscriptEncoder(speecht5_dir, tokenizer="char", max_frames=10_000)
    with pytest.raises(ValueError, match="more than 64 tokens"):
        enc.tokenize([long])
    enc.overflow = "truncate"
    ids, mask = enc.tokenize([long, "hi"])
    assert ids.shape[1] == 64 and mask[1].sum() == 3


def test_auto_tokenizer_without_sentencepiece_fails_with_the_fix(speecht5_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # makes `import sentencepiece` fail
    with pytest.raises(ImportError, match="tokenizer='char'"):
        SpeechTranscriptEncoder(speecht5_dir)


def test_auto_tokenizer_is_the_checkpoints_sentencepiece_tokenizer(speecht5_dir, tmp_path):
    """The real SpeechT5 path: a (tiny, character-level) SentencePiece tokenizer saved with the model."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import SpeechT5Tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["hello there", "red blue yes", "see you soon", "one two three bell"] * 20))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=30,
                                   model_type="char", character_coverage=1.0, minloglevel=2)
    model_dir = tmp_path / "speecht5_with_tokenizer"
    SpeechT5ForTextToSpeech.from_pretrained(speecht5_dir).save_pretrained(model_dir)
    reference_tokenizer = SpeechT5Tokenizer(vocab_file=str(tmp_path / "spm.model"))
    reference_tokenizer.save_pretrained(model_dir)

    enc = SpeechTranscriptEncoder(str(model_dir), max_frames=400, durator_dropout=0.0).eval()
    texts = ["hello there", "red blue"]
    ids, mask = enc.tokenize(texts)
    expected = reference_tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"].bool())
    states, state_mask = enc.encode_tokens(texts)
    ref = SpeechT5ForTextToSpeech.from_pretrained(speecht5_dir).eval().speecht5.encoder
    direct = ref(input_values=expected["input_ids"], attention_mask=expected["attention_mask"]).last_hidden_state
    torch.testing.assert_close(states[state_mask], direct[expected["attention_mask"].bool()])


def test_tiny_config_seeded_and_meta_build():
    a = SpeechTranscriptEncoder(TINY_SPEECHT5).eval()
    b = SpeechTranscriptEncoder(TINY_SPEECHT5).eval()
    fa, ma = a(["go left"])
    fb, mb = b(["go left"])
    torch.testing.assert_close(fa, fb)
    assert torch.equal(ma, mb)
    frozen = SpeechTranscriptEncoder(TINY_SPEECHT5, frozen=True)
    assert all(not p.requires_grad for p in frozen.parameters())
    with torch.device("meta"):
        big = SpeechTranscriptEncoder()
    assert big.output_dim == 768 and all(p.is_meta for p in big.parameters())
