"""MMAudioCodec (mel VAE + BigVGAN) and OobleckCodec: tiny random VAE / vocoder saved in their
public layouts and loaded back through the real loaders, exact lengths and rates, the MMAudio mel
front end against a direct transcription, latent normalisation, meta builds."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from avgen.codecs import AudioCodec, MMAudioCodec, OobleckCodec
from avgen.codecs.bigvgan import BIGVGAN_PRESETS
from avgen.codecs.mel import mel_filterbank

TINY = {
    "vae": {"hidden_dim": 8},
    "vocoder": {"upsample_initial_channel": 64, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]]},
}


@pytest.fixture(scope="module")
def codecs():
    return {mode: MMAudioCodec(mode, overrides=TINY) for mode in ("16k", "44k")}


@pytest.mark.parametrize("mode,sr,hop,channels", [("16k", 16000, 512, 20), ("44k", 44100, 1024, 40)])
def test_rates_and_round_trip_lengths(codecs, mode, sr, hop, channels):
    codec = codecs[mode]
    assert isinstance(codec, AudioCodec)
    assert (codec.sample_rate, codec.hop_length, codec.latent_channels) == (sr, hop, channels)
    assert codec.latent_rate == pytest.approx(sr / hop)  # 31.25 Hz / 43.07 Hz
    assert not any(p.requires_grad for p in codec.parameters())
    for num_samples in (1, hop - 1, hop, 3 * hop + 17, 5 * hop):
        wave = 0.3 * torch.sin(torch.arange(num_samples) * 0.05).repeat(2, 1)
        latents = codec.encode(wave)
        assert latents.shape == (2, -(-num_samples // hop), channels) == (2, codec.num_latents(num_samples), channels)
        assert torch.isfinite(latents).all()
        audio = codec.decode(latents)
        assert audio.shape == (2, latents.shape[1] * hop) == (2, codec.num_samples(latents.shape[1]))
        assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    assert codec.encode(torch.zeros(1, 0)).shape == (1, 0, channels)
    assert codec.decode(torch.zeros(1, 0, channels)).shape == (1, 0)


@pytest.mark.parametrize("mode,n_fft,hop,n_mels,fmax,log", [("16k", 1024, 256, 80, 8000.0, torch.log10), ("44k", 2048, 512, 128, 22050.0, torch.log)])
def test_log_mel_matches_mmaudio_mel_converter(codecs, mode, n_fft, hop, n_mels, fmax, log):
    codec = codecs[mode]
    wave = torch.randn(2, 8 * hop, generator=torch.Generator().manual_seed(0)) * 0.2
    # MelConverter: reflect pad (n_fft - hop) / 2, stft center=False, sqrt(|X|^2 + 1e-9), mel, clamp 1e-5, log
    pad = (n_fft - hop) // 2
    x = F.pad(wave[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True)
    magnitude = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    expected = log(torch.clamp(mel_filterbank(codec.sample_rate, n_fft, n_mels, 0.0, fmax) @ magnitude, min=1e-5))
    got = codec.log_mel(wave)
    assert got.shape == (2, n_mels, 8)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_latent_normalisation_and_stats_file(tmp_path, codecs):
    wave = 0.2 * torch.randn(1, 4096, generator=torch.Generator().manual_seed(1))
    raw = codecs["16k"].encode(wave)
    mean, std = torch.linspace(-1, 1, 20), torch.linspace(0.5, 2.0, 20)
    torch.save({"latent_mean": mean.view(1, 1, 20), "latent_std": std.view(1, 1, 20), "other": torch.ones(3)}, tmp_path / "net.pth")
    for codec in (
        MMAudioCodec("16k", overrides=TINY, latent_mean=mean.tolist(), latent_std=std.tolist()),
        MMAudioCodec("16k", overrides=TINY, latent_stats=str(tmp_path / "net.pth")),
    ):
        normalised = codec.encode(wave)
        torch.testing.assert_close(normalised, (raw - mean) / std)
        torch.testing.assert_close(codec.decode(normalised), codecs["16k"].decode(raw), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="3 values but the VAE has 20"):
        MMAudioCodec("16k", overrides=TINY, latent_mean=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        MMAudioCodec("16k", overrides=TINY, latent_std=0.0)


def test_posterior_sample_differs_from_mean(codecs):
    wave = 0.2 * torch.randn(2, 4096, generator=torch.Generator().manual_seed(2))
    sampling = MMAudioCodec("16k", overrides=TINY, posterior="sample")
    mean = codecs["16k"].encode(wave)
    torch.manual_seed(0)
    a = sampling.encode(wave)
    torch.manual_seed(0)
    assert torch.equal(a, sampling.encode(wave))
    assert not torch.allclose(a, mean)
    logvar = sampling.vae.encode(sampling.log_mel(wave))[1].transpose(1, 2)
    eps = (a - mean) / torch.exp(0.5 * logvar)  # must be the standard normal draw
    assert abs(eps.mean().item()) < 0.3 and abs(eps.std().item() - 1) < 0.3


def save_public_layouts(tmp_path, source: MMAudioCodec):
    """The source codec's weights written as MMAudio / NVIDIA publish them."""
    vae_state = dict(source.vae.state_dict())
    vae_state["data_mean"] = vae_state["data_mean"].view(1, -1, 1)  # MMAudio stores the (1, n_mels, 1) view
    vae_state["data_std"] = vae_state["data_std"].view(1, -1, 1)
    torch.save(vae_state, tmp_path / "v1-44-tiny.pth")
    vocoder_dir = tmp_path / "bigvgan_tiny"
    vocoder_dir.mkdir()
    config = dict(BIGVGAN_PRESETS["nvidia/bigvgan_v2_44khz_128band_512x"], **TINY["vocoder"])
    (vocoder_dir / "config.json").write_text(json.dumps(config))
    state = {}
    for key, value in source.vocoder.state_dict().items():
        if key.endswith(".weight") and value.ndim == 3:  # weight-normalised as in NVIDIA's files
            norm = value.flatten(1).norm(dim=1).view(-1, 1, 1)
            state[key[:-7] + ".weight_g"], state[key[:-7] + ".weight_v"] = norm, value
        else:
            state[key] = value
    torch.save({"generator": state}, vocoder_dir / "bigvgan_generator.pt")
    return tmp_path / "v1-44-tiny.pth", vocoder_dir


def test_public_checkpoints_load_back_through_real_loaders(tmp_path):
    source = MMAudioCodec("44k", overrides=TINY, init_seed=3)
    vae_file, vocoder_dir = save_public_layouts(tmp_path, source)
    loaded = MMAudioCodec("44k", vae_pretrained=str(vae_file), vocoder_pretrained=str(vocoder_dir), overrides={"vae": TINY["vae"]})
    assert loaded.load_reports["vae"].ok and loaded.load_reports["vocoder"].ok
    fresh = MMAudioCodec("44k", overrides=TINY, init_seed=4)
    wave = 0.3 * torch.randn(1, 3000, generator=torch.Generator().manual_seed(5))
    latents = source.encode(wave)
    torch.testing.assert_close(loaded.encode(wave), latents)
    torch.testing.assert_close(loaded.decode(latents), source.decode(latents), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fresh.encode(wave), latents)  # the weights did come from the files
    with pytest.raises(ValueError, match="does not match"):
        MMAudioCodec("16k", vae_pretrained=str(vae_file), overrides=TINY)  # a 44k VAE into the 16k codec


def test_meta_build_allocates_nothing_and_reads_nothing():
    with torch.device("meta"):
        codec = MMAudioCodec("44k", vae_pretrained="not/a/file.pth", vocoder_pretrained="nvidia/bigvgan_v2_44khz_128band_512x")
    state = codec.state_dict()  # every parameter and persistent buffer
    assert len(state) > 100 and all(t.is_meta for t in state.values())
    # the only real tensors: the mel front end's derived filterbank constants (non-persistent, < 2 MB)
    real = {name: b for name, b in codec.named_buffers() if not b.is_meta}
    assert set(real) <= {"mel.mel_basis", "mel.mel_pinv"}
    assert sum(b.numel() * b.element_size() for b in real.values()) < 2**21
    assert codec.load_reports == {}
    # 44.1 kHz VAE (hidden 512, 128 mels -> 40) and BigVGAN-v2 (122M)
    assert codec.vae.encoder.conv_in.weight.shape == (512, 128, 3)
    assert codec.vae.decoder.conv_in.weight.shape == (2048, 40, 3)
    assert abs(sum(p.numel() for p in codec.vocoder.parameters()) / 1e6 - 122) < 1


def test_bad_inputs(codecs):
    with pytest.raises(ValueError, match="mode must be one of"):
        MMAudioCodec("22k")
    with pytest.raises(ValueError, match="upsample_rates must multiply to 256"):
        MMAudioCodec("16k", overrides={"vae": {"hidden_dim": 8}, "vocoder": dict(TINY["vocoder"], upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8])})
    with pytest.raises(ValueError, match=r"\(B, S\) mono waveform"):
        codecs["16k"].encode(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match=r"\(B, T, 20\) latents"):
        codecs["16k"].decode(torch.zeros(1, 5, 40))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MMAudioCodec("16k", vae_pretrained="missing-v1-16.pth", overrides=TINY)


# ---- Oobleck -----------------------------------------------------------------------------------
OOBLECK_TINY = dict(encoder_hidden_size=8, downsampling_ratios=[2, 4], channel_multiples=[1, 2], decoder_channels=8, decoder_input_channels=4, audio_channels=2)


def test_oobleck_saved_and_loaded_with_mono_handling(tmp_path):
    from diffusers import AutoencoderOobleck

    torch.manual_seed(0)
    AutoencoderOobleck(**OOBLECK_TINY).save_pretrained(tmp_path / "vae")
    codec = OobleckCodec(pretrained=str(tmp_path), subfolder="vae")
    assert (codec.sample_rate, codec.hop_length, codec.latent_channels) == (44100, 8, 4)
    reference = AutoencoderOobleck.from_pretrained(tmp_path / "vae").eval()
    for num_samples in (5, 8, 29, 64):
        wave = 0.3 * torch.randn(2, num_samples, generator=torch.Generator().manual_seed(num_samples))
        latents = codec.encode(wave)
        assert latents.shape == (2, -(-num_samples // 8), 4)
        padded = F.pad(wave, (0, latents.shape[1] * 8 - num_samples))
        with torch.no_grad():
            expected = reference.encode(torch.stack([padded, padded], dim=1)).latent_dist.mode()  # mono duplicated
            stereo = reference.decode(expected).sample
        torch.testing.assert_close(latents, expected.transpose(1, 2))
        audio = codec.decode(latents)
        assert audio.shape == (2, latents.shape[1] * 8)
        torch.testing.assert_close(audio, stereo.mean(dim=1))  # stereo averaged to mono

    scaled = OobleckCodec(pretrained=str(tmp_path), subfolder="vae", latent_mean=0.5, latent_std=2.0)
    wave = 0.3 * torch.randn(1, 32)
    torch.testing.assert_close(scaled.encode(wave), (codec.encode(wave) - 0.5) / 2.0)
    with pytest.raises(FileNotFoundError, match="pass the local directory"):
        OobleckCodec(pretrained=str(tmp_path / "nowhere"), subfolder="vae")


def test_oobleck_meta_build_is_the_stable_audio_vae():
    with torch.device("meta"):
        codec = OobleckCodec()
    assert (codec.sample_rate, codec.hop_length, codec.latent_channels) == (44100, 2048, 64)
    assert all(p.is_meta for p in codec.parameters())


def test_stored_posterior_gives_encode_and_its_draws(tmp_path, codecs):
    """Shards keep the raw posterior: normalising its mean is ``encode`` (posterior="mean"); with
    posterior="sample" a draw is (mean + std * eps - latent_mean) / latent_std; stats files written by
    ``avgen precompute --stats`` load as latent_stats."""
    wave = 0.2 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(3))
    mean_c, std_c = torch.linspace(-1, 1, 20), torch.linspace(0.5, 2.0, 20)
    torch.save({"latent_mean": mean_c, "latent_std": std_c, "frames": 7}, tmp_path / "latent_stats.pt")
    codec = MMAudioCodec("16k", overrides=TINY, latent_stats=str(tmp_path / "latent_stats.pt"))
    mean, std = codec.encode_posterior(wave)
    assert mean.shape == std.shape == codec.encode(wave).shape and bool((std > 0).all())
    torch.testing.assert_close(codec.latents_from_posterior(mean, std), codec.encode(wave))
    torch.testing.assert_close(mean, codecs["16k"].encode(wave))  # raw = the unnormalised codec's latents
    sampling = MMAudioCodec("16k", overrides=TINY, posterior="sample", latent_stats=str(tmp_path / "latent_stats.pt"))
    torch.manual_seed(0)
    drawn = sampling.latents_from_posterior(mean, std)
    torch.manual_seed(0)
    eps = torch.randn_like(mean)
    torch.testing.assert_close(drawn, (mean + std * eps - mean_c) / std_c)
