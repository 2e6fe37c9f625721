"""Video codecs: Wan VAE wrapper (length math, Wan's per-channel normalisation, load path) and the pixel codec."""

import pytest
import torch
from diffusers import AutoencoderKLWan

from avgen.codecs import PixelVideoCodec, WanVideoCodec

MEAN = [0.1, -0.2, 0.3, 0.0]
STD = [1.5, 0.5, 2.0, 1.0]


def _tiny_wan_vae() -> AutoencoderKLWan:
    """Wan2.2 layout (residual blocks, 2x2 pixel patchify, causal 4x time), tiny widths."""
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=8, decoder_base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=MEAN, latents_std=STD,
    ).eval()


def test_wan_codec_length_math_and_normalisation(tmp_path):
    _tiny_wan_vae().save_pretrained(tmp_path / "pipeline" / "vae")
    codec = WanVideoCodec.from_pretrained(tmp_path / "pipeline")  # finds vae/ like a pipeline repo
    vae = codec.vae
    assert (codec.temporal_stride, codec.spatial_stride, codec.latent_channels) == (4, 16, 4)
    assert [codec.num_latent_frames(f) for f in (1, 5, 9, 121)] == [1, 2, 3, 31]
    assert codec.num_frames(31) == 121 and codec.valid_num_frames(12) == 9
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        codec.num_latent_frames(8)
    with pytest.raises(ValueError, match="divisible by 16"):
        codec.latent_size(40, 32)
    assert codec.latent_lengths(torch.tensor([1, 5, 6, 9])).tolist() == [1, 2, 3, 3]

    frames = torch.rand(2, 9, 3, 16, 32)
    latents = codec.encode(frames)
    assert latents.shape == (2, 3, 4, 1, 2)
    # Wan pipeline's normalisation, written out: (mu - mean_c) / std_c over the raw diffusers posterior mean
    with torch.no_grad():
        mu = vae.encode(frames.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mean
    expected = (mu - torch.tensor(MEAN).view(1, 4, 1, 1, 1)) / torch.tensor(STD).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(latents, expected.permute(0, 2, 1, 3, 4))
    # decode denormalises before the VAE: decode(encode(x)) == VAE decode of the raw mu, mapped to [0, 1]
    decoded = codec.decode(latents)
    assert decoded.shape == frames.shape
    with torch.no_grad():
        raw = vae.decode(mu).sample.permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(decoded, (raw + 1) / 2, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in codec.parameters())


def test_wan_codec_rejects_stats_of_another_size():
    vae = _tiny_wan_vae()
    vae.register_to_config(latents_mean=[0.0] * 16)
    with pytest.raises(ValueError, match="latents_mean"):
        WanVideoCodec(vae)


def test_pixel_codec_patchify_is_exactly_invertible():
    codec = PixelVideoCodec(patch_size=2)
    frames = torch.rand(2, 5, 3, 8, 12)
    latents = codec.encode(frames)
    assert latents.shape == (2, 5, 12, 4, 6)
    # space-to-depth written out: channel (c, i, j) of cell (y, x) is pixel (2y + i, 2x + j) of colour c
    assert latents[1, 3, 2 * 4 + 1 * 2 + 0, 2, 5] == frames[1, 3, 2, 2 * 2 + 1, 2 * 5 + 0] * 2 - 1
    torch.testing.assert_close(codec.decode(latents), frames, atol=1e-6, rtol=0)


def test_pixel_codec_pooling_is_causal_and_exact_on_constant_groups():
    codec = PixelVideoCodec(patch_size=2, temporal_stride=4, pool=2)
    assert codec.spatial_stride == 4 and codec.num_latent_frames(9) == 3
    # a video constant over each causal group {0}, {1..4}, {5..8} and over 2x2 pixel blocks
    groups = torch.rand(1, 3, 3, 4, 4)
    frames = torch.cat((groups[:, :1], groups[:, 1:2].expand(-1, 4, -1, -1, -1), groups[:, 2:].expand(-1, 4, -1, -1, -1)), 1)
    frames = frames.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    latents = codec.encode(frames)
    assert latents.shape == (1, 3, 12, 2, 2)
    torch.testing.assert_close(codec.decode(latents), frames, atol=1e-6, rtol=0)
    # on a general video decode gives the group means: a moving frame 1 changes only latent 1
    changed = frames.clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])
    diff = (codec.encode(changed) - latents).abs().flatten(2).amax(-1)[0]
    assert diff[0] == 0 and diff[1] > 0 and diff[2] == 0
