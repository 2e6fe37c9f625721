"""umT5 video-prompt encoder (Wan): tiny UMT5EncoderModel + tokenizer saved locally, loaded through the real loaders."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from avgen.conditioning import UMT5TextEncoder

WORDS = ["a", "ball", "bounces", "and", "flashes", "the", "face", "speaks"]


def _save_tiny_umt5(path):
    torch.manual_seed(0)
    UMT5EncoderModel(UMT5Config(vocab_size=24, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                pad_token_id=0, eos_token_id=1)).save_pretrained(path)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)


def test_umt5_states_zero_padded_to_max_length_and_equal_to_direct_forward(tmp_path):
    _save_tiny_umt5(tmp_path)
    enc = UMT5TextEncoder(str(tmp_path), max_length=12)
    assert enc.max_length == 12 and enc.output_dim == 16
    assert not any(p.requires_grad for p in enc.parameters())
    states, mask = enc(["a ball  bounces\n and flashes", "the face speaks"])
    assert states.shape == (2, 12, 16) and mask.sum(1).tolist() == [6, 4]
    assert torch.all(states[~mask] == 0)
    reference = UMT5EncoderModel.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[3 + WORDS.index(w) for w in "a ball bounces and flashes".split()] + [1]])
    with torch.no_grad():
        direct = reference(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(states[0, :6], direct, atol=1e-5, rtol=1e-5)


def test_umt5_loads_from_a_diffusers_pipeline_folder(tmp_path):
    _save_tiny_umt5(tmp_path / "flat")
    pipeline = tmp_path / "Wan2.2-Diffusers"
    UMT5EncoderModel.from_pretrained(tmp_path / "flat").save_pretrained(pipeline / "text_encoder")
    PreTrainedTokenizerFast.from_pretrained(tmp_path / "flat").save_pretrained(pipeline / "tokenizer")
    a, _ = UMT5TextEncoder(str(tmp_path / "flat"), max_length=8)(["the face speaks"])
    b, _ = UMT5TextEncoder(str(pipeline), max_length=8)(["the face speaks"])
    torch.testing.assert_close(a, b)


def test_umt5_defaults_are_wans():
    with torch.device("meta"):
        enc = UMT5TextEncoder()
    assert enc.max_length == 512 and enc.output_dim == 4096
    assert enc.clean("  two   words&amp;\n more ") == "two words& more"
