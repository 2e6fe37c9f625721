"""AudioGen-Omni network: PAAPI (caption isotropy, relative temporal positions, ablation), timing
embeddings, variable-length batches, paper size."""

import dataclasses
import functools

import pytest
import torch

from avgen.conditioning.lyrics import PAD_ID
from avgen.models.audiogen_omni.network import AudioGenOmniNetwork, upsample_per_sample

C, DS, DY, DC, L = 6, 10, 12, 8, 5
LATENT_RATE, CLIP_RATE = 10.0, 2.0  # toy rates: 5 latent frames per CLIP frame

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread (tests/conftest.py)

def _network(paapi=True, joint=2, single=1, **kw):
    torch.manual_seed(0)
    net = AudioGenOmniNetwork(
        latent_channels=C, semantic_dim=DS, sync_dim=DY, caption_dim=DC, caption_length=L,
        lyrics_vocab_size=20, lyrics_dim=16, lyrics_max_positions=64, lyrics_blocks=1,
        hidden_dim=32, num_heads=2, num_joint_blocks=joint, num_single_blocks=single,
        latent_rate=LATENT_RATE, semantic_rate=CLIP_RATE, paapi=paapi, **kw,
    )
    randomise(net)
    return net.eval()


def randomise(module):
    """Away from the zero init (adaLN, output, nulls), so every path carries signal, at a sane scale."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, 0, 1.0 / p[0].numel() ** 0.5)
            else:
                p.normal_(0, 0.1)
    return module



def _inputs(batch=2, frames=(20, 14), seed=1):
    g = torch.Generator().manual_seed(seed)
    n = max(frames)
    clip_frames = [f * CLIP_RATE // LATENT_RATE for f in frames]
    sync_tokens = [8 * (1 + f // 10) for f in frames]
    f_max, s_max = int(max(clip_frames)), max(sync_tokens)
    latent_mask = torch.arange(n)[None] < torch.tensor(frames)[:, None]
    ids = torch.full((batch, 6), PAD_ID)
    for b in range(batch):
        ids[b, : 3 + b] = torch.randint(0, 20, (3 + b,), generator=g)
    return dict(
        semantic_features=torch.randn(batch, f_max, DS, generator=g),
        semantic_mask=torch.arange(f_max)[None] < torch.tensor(clip_frames)[:, None],
        sync_features=torch.randn(batch, s_max, DY, generator=g),
        sync_lengths=torch.tensor(sync_tokens),
        caption_features=torch.randn(batch, L, DC, generator=g),
        caption_mask=torch.tensor([[True] * 3 + [False] * 2] * batch),
        lyrics_ids=ids,
        video_present=torch.ones(batch, dtype=torch.bool),
        caption_present=torch.ones(batch, dtype=torch.bool),
        lyrics_present=torch.ones(batch, dtype=torch.bool),
        seconds_start=torch.zeros(batch),
        seconds_total=torch.tensor([f / LATENT_RATE for f in frames]),
        latent_mask=latent_mask,
    ), torch.randn(batch, n, C, generator=g), torch.rand(batch, generator=g)


def _velocity(net, inputs, x, t, conditions=None):
    with torch.no_grad():
        cond = conditions if conditions is not None else net.preprocess_conditions(**inputs)
        return net.predict_velocity(x, t, cond, inputs["latent_mask"])


def test_caption_is_keys_only_and_invariant_to_token_order_and_position():
    net = _network()
    inputs, x, t = _inputs()
    ref = _velocity(net, inputs, x, t)
    perm = torch.tensor([4, 2, 0, 3, 1])
    shuffled = dict(inputs, caption_features=inputs["caption_features"][:, perm])
    torch.testing.assert_close(_velocity(net, shuffled, x, t), ref, atol=1e-5, rtol=1e-5)
    # but its content matters
    other = dict(inputs, caption_features=inputs["caption_features"] + 1.0)
    assert not torch.allclose(_velocity(net, other, x, t), ref, atol=1e-3)
    # the caption stream has no post-attention weights: never updated
    assert all(blk.stream_block("caption").role == "kv_only" for blk in net.joint_blocks)


@pytest.mark.parametrize("stream", ["clip", "lyrics"])
def test_temporal_streams_are_position_aware_with_paapi_and_isotropic_without(stream):
    """One joint block (V and T are pre-only there) so a token's stream weights are per token:
    permuting V or T tokens (with their masks) can only change the output through RoPE."""
    inputs, x, t = _inputs(batch=1, frames=(20,))
    for paapi, should_change in ((True, True), (False, False)):
        net = _network(paapi=paapi, joint=1)
        with torch.no_grad():
            cond = net.preprocess_conditions(**inputs)
        tokens = getattr(cond, stream)
        perm = torch.randperm(tokens.shape[1], generator=torch.Generator().manual_seed(3))
        changes = {stream: tokens[:, perm]}
        if stream == "clip":
            changes["clip_mask"] = cond.clip_mask[:, perm]
        permuted = dataclasses.replace(cond, **changes)
        a, b = _velocity(net, inputs, x, t, cond), _velocity(net, inputs, x, t, permuted)
        assert (not torch.allclose(a, b, atol=1e-4)) == should_change, (stream, paapi)


def test_shifting_every_temporal_stream_together_changes_nothing():
    """A, V and T interact only through relative RoPE positions. Caption keys carry no rotation, so an
    audio query's score against them depends on the query's absolute position (as MMAudio's text
    tokens): the invariance holds exactly with the caption keys masked out."""
    net = _network(mask_caption_padding=True)
    inputs, x, t = _inputs()
    inputs["caption_mask"] = torch.zeros_like(inputs["caption_mask"])
    ref = _velocity(net, inputs, x, t)
    net.stream_angles = functools.partial(AudioGenOmniNetwork.stream_angles, net, offset=37.0)
    torch.testing.assert_close(_velocity(net, inputs, x, t), ref, atol=1e-4, rtol=1e-4)
    # shifting only the CLIP stream breaks the phase alignment
    original = AudioGenOmniNetwork.stream_angles

    def clip_only(self, n, f, device, offset=0.0):
        angles = original(self, n, f, device)
        shifted = original(self, n, f, device, offset=7.0)
        return dict(angles, clip=shifted["clip"])

    net.stream_angles = functools.partial(clip_only, net)
    change = (_velocity(net, inputs, x, t) - ref).abs().max()
    assert change > 1e-3, change


def test_clip_positions_are_rate_based_on_the_audio_timeline():
    net = _network()
    angles = net.stream_angles(20, 4, torch.device("cpu"))
    # CLIP frame 1 sits at latent frame 5 (10 Hz latents, 2 Hz frames), whatever the clip length
    torch.testing.assert_close(angles["clip"][1], angles["audio"][5])
    assert angles["caption"] is None
    assert all(a is None for a in _network(paapi=False).stream_angles(20, 4, torch.device("cpu")).values())
    assert net.stream_angles(20, 4, torch.device("cpu"))["lyrics"] is angles["audio"] or torch.equal(
        net.stream_angles(20, 4, torch.device("cpu"))["lyrics"], angles["audio"]
    )


def test_per_second_timing_embeddings_change_the_output():
    net = _network()
    inputs, x, t = _inputs()
    ref = _velocity(net, inputs, x, t)
    later = dict(inputs, seconds_start=torch.tensor([3.0, 0.0]))
    out = _velocity(net, later, x, t)
    assert not torch.allclose(out[0], ref[0], atol=1e-4)
    torch.testing.assert_close(out[1], ref[1])  # per sample
    longer = dict(inputs, seconds_total=inputs["seconds_total"] + 4.0)
    assert not torch.allclose(_velocity(net, longer, x, t), ref, atol=1e-4)
    # the same whole second gives the same embedding (floor)
    same = dict(inputs, seconds_start=torch.tensor([0.4, 0.9]))
    torch.testing.assert_close(_velocity(net, same, x, t), ref)


def _alone(inputs, x, b, n):
    f = int(inputs["semantic_mask"][b].sum())
    s = int(inputs["sync_lengths"][b])
    k = int((inputs["lyrics_ids"][b] != PAD_ID).sum())
    one = {key: v[b : b + 1] for key, v in inputs.items()}
    one.update(
        semantic_features=one["semantic_features"][:, :f], semantic_mask=one["semantic_mask"][:, :f],
        sync_features=one["sync_features"][:, :s], lyrics_ids=one["lyrics_ids"][:, :k],
        latent_mask=one["latent_mask"][:, :n],
    )
    return one, x[b : b + 1, :n]


@pytest.mark.parametrize("absent", [False, True])
def test_variable_length_batch_equals_each_sample_alone(absent):
    net = _network()
    inputs, x, t = _inputs(frames=(20, 13))
    if absent:  # the short clip without video and without lyrics: nulls span its own duration
        inputs["video_present"] = torch.tensor([True, False])
        inputs["lyrics_present"] = torch.tensor([True, False])
    out = _velocity(net, inputs, x, t)
    for b, n in enumerate((20, 13)):
        one, xb = _alone(inputs, x, b, n)
        torch.testing.assert_close(_velocity(net, one, xb, t[b : b + 1])[0], out[b, :n], atol=1e-4, rtol=1e-4)
        assert (out[b, n:] == 0).all()


def test_absent_conditions_use_nulls_and_the_lyrics_matter():
    net = _network()
    inputs, x, t = _inputs()
    ref = _velocity(net, inputs, x, t)
    no_lyrics = dict(inputs, lyrics_present=torch.tensor([False, True]))
    out = _velocity(net, no_lyrics, x, t)
    assert not torch.allclose(out[0], ref[0], atol=1e-4)
    # an absent condition ignores its content entirely
    junk = dict(no_lyrics, lyrics_ids=torch.randint(0, 20, inputs["lyrics_ids"].shape))
    junk["lyrics_ids"][1] = inputs["lyrics_ids"][1]
    torch.testing.assert_close(_velocity(net, junk, x, t), out)
    no_video = dict(inputs, video_present=torch.tensor([False, False]))
    junk_video = dict(no_video, semantic_features=torch.randn_like(inputs["semantic_features"]),
                      sync_features=torch.randn_like(inputs["sync_features"]))
    torch.testing.assert_close(_velocity(net, junk_video, x, t), _velocity(net, no_video, x, t))


def test_upsample_per_sample_is_torch_nearest_exact_on_each_valid_part():
    x = torch.randn(2, 8, 3)
    out = upsample_per_sample(x, torch.tensor([8, 5]), torch.tensor([13, 9]), 13)
    for b, (ls, lt) in enumerate(((8, 13), (5, 9))):
        ref = torch.nn.functional.interpolate(x[b : b + 1, :ls].transpose(1, 2), size=lt, mode="nearest-exact")
        torch.testing.assert_close(out[b, :lt], ref[0].transpose(0, 1))
        assert (out[b, lt:] == 0).all()


def test_paper_size_is_table_1s_1_55b():
    with torch.device("meta"):
        net = AudioGenOmniNetwork(latent_channels=40, semantic_dim=1280, sync_dim=768, caption_dim=768)
    total = sum(p.numel() for p in net.parameters())
    assert abs(total / 1.55e9 - 1) < 0.02  # Table 1: 1.55B
    assert len(net.joint_blocks) + len(net.single_blocks) == 24  # §4: "the DiT model consists of 24 layers"
