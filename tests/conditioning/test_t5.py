"""FLAN-T5 caption encoder: tiny config + tokenizer saved locally and loaded through the real loaders."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from avgen.conditioning.t5 import KNOWN_CONFIGS, TINY_T5, T5TextEncoder

WORDS = ["a", "dog", "barks", "loudly", "rain", "falls", "on", "the", "roof", "bird", "sings"]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_t5")
    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    model.save_pretrained(path)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)
    return str(path)


def test_loaded_states_match_the_direct_t5_forward(t5_dir):
    enc = T5TextEncoder(t5_dir, max_length=8)
    texts = ["a dog barks loudly", "rain falls on the roof"]
    states, mask = enc(texts)
    assert states.shape == (2, 8, 16) and mask.shape == (2, 8) and enc.output_dim == 16
    # word count + EOS valid, the rest padding
    assert mask.sum(1).tolist() == [5, 6]
    ref_model = T5EncoderModel.from_pretrained(t5_dir).eval()
    ids = torch.tensor([[3 + WORDS.index(w) for w in t.split()] + [1] for t in texts[:1]])
    ref = ref_model(input_ids=ids).last_hidden_state[0]  # unpadded: padding must not change valid states
    torch.testing.assert_close(states[0, :5], ref, atol=1e-5, rtol=1e-5)
    assert torch.all(states[~mask] == 0)


def test_empty_caption_keeps_only_the_eos_token_and_truncation(t5_dir):
    enc = T5TextEncoder(t5_dir, max_length=4)
    states, mask = enc(["", "a dog barks loudly on the roof"])
    assert mask[0].tolist() == [True, False, False, False]
    assert mask[1].all()  # truncated to max_length, EOS kept last by the tokenizer
    assert torch.isfinite(states).all() and states[0, 0].abs().sum() > 0


def test_frozen_encoder_has_no_gradients_and_stays_in_eval(t5_dir):
    enc = T5TextEncoder(t5_dir, max_length=8)
    enc.train()
    assert not enc.training and all(not p.requires_grad for p in enc.parameters())
    states, _ = enc(["a bird sings"])
    assert not states.requires_grad
    trainable = T5TextEncoder(t5_dir, max_length=8, frozen=False)
    s, m = trainable(["a bird sings"])
    s[m].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.parameters())


def test_tiny_config_is_seeded_and_meta_build_has_no_weights():
    a, b = T5TextEncoder(TINY_T5, max_length=6), T5TextEncoder(TINY_T5, max_length=6)
    c = T5TextEncoder(TINY_T5, max_length=6, init_seed=1)
    sa, ma = a(["a dog barks"])
    torch.testing.assert_close(sa, b(["a dog barks"])[0])
    assert not torch.allclose(sa, c(["a dog barks"])[0])
    assert ma[0].sum() == 6  # 11 characters + EOS, truncated to 6 with EOS last
    with torch.device("meta"):
        big = T5TextEncoder("google/flan-t5-large")
    assert all(p.is_meta for p in big.parameters()) and big.output_dim == KNOWN_CONFIGS["google/flan-t5-large"]["d_model"]
    # T5-large encoder: 24 layers of d_model 1024 / gated FFN 2816 -> about 341M parameters
    assert 330e6 < sum(p.numel() for p in big.parameters()) < 350e6


def test_unknown_name_fails_clearly_on_meta():
    with torch.device("meta"), pytest.raises(OSError, match="save_pretrained"):
        T5TextEncoder("nobody/no-such-t5")


@pytest.mark.parametrize("name, gated, d_ff", [("google/flan-t5-base", True, 2048), ("google-t5/t5-base", False, 3072)])
def test_base_size_configs_build_on_meta_with_the_published_parameter_count(name, gated, d_ff):
    with torch.device("meta"):
        enc = T5TextEncoder(name)
    assert enc.output_dim == 768
    d, layers, heads = 768, 12, 12
    attention = 4 * d * d  # q, k, v, o without bias
    ffn = (3 if gated else 2) * d * d_ff  # gated-GELU has two input projections
    per_layer = attention + ffn + 2 * d  # two RMS layer norms
    expected = 32128 * d + layers * per_layer + 32 * heads + d  # embeddings, blocks, rel. bias, final norm
    assert sum(p.numel() for p in enc.parameters()) == expected
