"""AudioGen-Omni lyrics-transcription encoder: VoiceBPE tokenizer wrapper and F5-TTS TextEmbedding."""

import math

import pytest
import torch
import torch.nn.functional as F

from avgen.conditioning.lyrics import PAD_ID, LyricsTooLongError, TextEmbedding, VoiceBPETokenizer

CORPUS = ["red blue green ball", "hello look up", "one two three go stop", "bell drum yes no"]


@pytest.fixture(scope="module")
def tokenizer():
    return VoiceBPETokenizer.train(CORPUS, vocab_size=80)


def test_pipeline_tag_space_and_file_round_trip(tokenizer, tmp_path):
    ids = tokenizer.encode("Hello   RED ball")
    tok = tokenizer.tokenizer
    assert ids[0] == tok.token_to_id("[en]")  # language tag first
    pieces = [tok.id_to_token(i) for i in ids]
    assert pieces.count("[SPACE]") == 2  # whitespace collapsed, each space one [SPACE]
    assert tokenizer.decode(ids) == "[en]hello red ball"
    # the saved vocabulary loads through the file path and tokenises identically
    path = tmp_path / "vocab.json"
    tok.save(str(path))
    assert VoiceBPETokenizer(str(path)).encode("Hello   RED ball") == ids


def test_romanizer_hook_runs_for_its_language_and_zh_uses_the_zh_cn_tag(tokenizer):
    calls = []

    def fake_pinyin(text):
        calls.append(text)
        return "hello"

    tok = VoiceBPETokenizer.train(CORPUS, vocab_size=80, langs=("en", "zh"))
    tok.romanizers = {"zh": fake_pinyin}
    zh = tok.encode("你好", lang="zh")
    assert calls == ["你好"]
    assert zh[0] == tok.tokenizer.token_to_id("[zh-cn]") and zh[1:] == tok.encode("hello", lang="en")[1:]
    with pytest.raises(ValueError, match=r"\[fr\] is not in the vocabulary"):
        tokenizer.encode("bonjour", lang="fr")


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="neither a file nor a loadable hub name"):
        VoiceBPETokenizer(str(tmp_path / "missing.json"))


def test_batch_pads_with_pad_id_drops_absent_rows_and_guards_the_length(tokenizer):
    ids = tokenizer.batch(["red", "hello look", "go"], [4, 9, 6], present=[True, True, False])
    assert ids.shape == (3, 9)
    assert ids[0, : len(tokenizer.encode("red"))].tolist() == tokenizer.encode("red")
    assert (ids[2] == PAD_ID).all()
    n = len(tokenizer.encode("hello look up"))
    with pytest.raises(LyricsTooLongError, match=r"clip_7.*needs %d tokens.*only %d latent frames" % (n, n - 1)):
        tokenizer.batch(["hello look up"], [n - 1], names=["clip_7"])


def _f5_text_embedding(module: TextEmbedding, ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Transcription of F5-TTS v1 ``TextEmbedding.forward`` (mask_padding=True, conv_layers=len(blocks)),
    its ``precompute_freqs_cis`` table and ``ConvNeXtV2Block`` / ``GRN`` (unmasked, as F5 runs them)."""
    text = ids + 1
    text = text[:, :seq_len]
    text = F.pad(text, (0, seq_len - text.shape[1]), value=0)
    text_mask = text == 0
    x = module.embed.weight[text]
    dim = module.dim
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(module.max_positions).float(), freqs)
    table = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    pos = torch.arange(seq_len).clamp(max=module.max_positions - 1)
    x = x + table[pos]
    for blk in module.blocks:
        x = x.masked_fill(text_mask.unsqueeze(-1), 0.0)
        res = x
        h = blk.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = F.gelu(blk.pwconv1(blk.norm(h)))
        gx = torch.norm(h, p=2, dim=1, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        h = blk.grn.gamma * (h * nx) + blk.grn.beta + h
        x = res + blk.pwconv2(h)
    return x.masked_fill(text_mask.unsqueeze(-1), 0.0)


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


def test_equals_f5_text_embedding_when_the_text_fills_the_frames():
    emb = _randomise(TextEmbedding(50, 16, max_positions=6, num_blocks=2))
    ids = torch.randint(0, 50, (2, 9))  # 9 tokens on 9 frames: positions 6..8 reuse the clamp
    out, mask = emb(ids, 9)
    torch.testing.assert_close(out, _f5_text_embedding(emb, ids, 9), atol=1e-5, rtol=1e-5)
    assert mask.all()
    # truncation to the frame budget, as F5 does
    out5, _ = emb(ids, 5)
    torch.testing.assert_close(out5, _f5_text_embedding(emb, ids, 5), atol=1e-5, rtol=1e-5)


def test_embedding_and_positions_match_f5_exactly_without_blocks_even_with_filler():
    emb = _randomise(TextEmbedding(50, 16, max_positions=100, num_blocks=0))
    ids = torch.tensor([[3, 7, 1, PAD_ID], [4, 4, 4, 4]])
    out, mask = emb(ids, 12)
    torch.testing.assert_close(out, _f5_text_embedding(emb, ids, 12), atol=1e-6, rtol=1e-6)
    assert mask.sum(1).tolist() == [3, 4]


def test_padding_is_ignored_and_absent_text_is_all_zero():
    emb = _randomise(TextEmbedding(50, 16, num_blocks=3))
    ids = torch.tensor([[5, 9, 2, 11]])
    short, _ = emb(ids, 6)
    # more padding frames after the text: valid outputs unchanged (mask-aware GRN), padding zero
    longer, mask = emb(ids, 20)
    torch.testing.assert_close(longer[:, :6], short, atol=1e-5, rtol=1e-5)
    assert (longer[:, 4:] == 0).all() and mask[0].sum() == 4
    # tokens that fall on padded latent frames (a shorter clip in a batch) are ignored
    frame_mask = torch.arange(20)[None] < 3
    a, _ = emb(torch.tensor([[5, 9, 2, 11, 13, 17]]), 20, frame_mask)
    b, _ = emb(torch.tensor([[5, 9, 2, 30, 40, 1]]), 20, frame_mask)
    torch.testing.assert_close(a, b)
    # and the blocks do see the text: changing a valid token changes its neighbours
    c, _ = emb(torch.tensor([[5, 8, 2, 11]]), 6)
    assert not torch.allclose(c[:, 2], short[:, 2])
    # F5's drop_text: all filler -> all zero
    dropped, dmask = emb(torch.full((1, 4), PAD_ID), 6)
    assert (dropped == 0).all() and not dmask.any()


def test_unshifted_vocabulary_uses_its_own_filler_id():
    emb = TextEmbedding(10, 8, num_blocks=1, filler_shift=False, filler_id=0)
    assert emb.embed.num_embeddings == 10
    out, mask = emb(torch.tensor([[3, 0, 4]]), 5)
    assert mask[0].tolist() == [True, False, True, False, False]
    assert (out[0, 1] == 0).all()


def test_paper_size_parameter_count():
    with torch.device("meta"):
        emb = TextEmbedding(6681, 768, max_positions=4000, num_blocks=4)
    d, h = 768, 1536
    block = (d * 7 + d) + 2 * d + (d * h + h) + 2 * h + (h * d + d)  # dwconv, LN, pw1, GRN, pw2
    expected = (6681 + 1) * d + 4 * block
    assert sum(p.numel() for p in emb.parameters()) == expected
    assert math.isclose(expected / 1e6, 14.6, abs_tol=0.05)  # spec §1.4.3
