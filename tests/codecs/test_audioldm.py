"""AudioLDM mel-VAE + SpeechT5HifiGan codec, with a tiny VAE and vocoder saved to a temp dir."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import get_window
from diffusers import AutoencoderKL
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from avgen.codecs.audioldm import AudioLDMCodec
from avgen.codecs.mel import mel_filterbank

SR, N_FFT, HOP, N_MELS = 8000, 64, 16, 16
SCALE = 0.5


def _vocoder_config(**kw):
    base = dict(model_in_dim=N_MELS, sampling_rate=SR, upsample_initial_channel=16, upsample_rates=[4, 4],
                upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                normalize_before=False)
    return SpeechT5HifiGanConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def audioldm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_audioldm")
    torch.manual_seed(0)
    AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, latent_channels=4, norm_num_groups=4,
                  scaling_factor=SCALE).save_pretrained(os.path.join(path, "vae"))
    SpeechT5HifiGan(_vocoder_config()).save_pretrained(os.path.join(path, "vocoder"))
    return str(path)


def _codec(path, **kw):
    return AudioLDMCodec(path, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_mels=N_MELS,
                         f_max=SR / 2, **kw)


def test_layout_rates_and_round_trip_shapes(audioldm_dir):
    codec = _codec(audioldm_dir)
    assert codec.latent_map_channels == 4 and codec.latent_frequency_bins == N_MELS // 4
    assert codec.latent_channels == 4 * (N_MELS // 4)
    assert codec.hop_length == HOP * 4 and codec.latent_rate == SR / (HOP * 4)
    assert codec.scaling_factor == SCALE
    for n in (1, 63, 64, 65, 1000):
        x = 0.1 * torch.randn(2, n)
        z = codec.encode(x)
        assert z.shape == (2, codec.num_latents(n), codec.latent_channels)
        y = codec.decode(z)
        assert y.shape == (2, codec.num_samples(z.shape[1])) and y.shape[1] >= n
        assert torch.isfinite(y).all()


def test_encode_is_the_scaled_vae_mode_of_the_log_mel_image(audioldm_dir):
    # avgen's earlier front end, kept as options: no normalisation, MelCodec's framing
    codec = _codec(audioldm_dir, peak_normalize=None, frame_alignment="melcodec")
    x = 0.1 * torch.randn(1, 300)
    # direct transcription: zero-pad to a latent-frame multiple (300 -> 320 = 5 x 64), STFT with (n_fft-hop)/2 reflect padding,
    # Hann window, magnitude, Slaney mel, log(clamp(., 1e-5)), image (B, 1, frames, mels)
    padded = torch.nn.functional.pad(x, (0, 20))
    side = (N_FFT - HOP) // 2
    framed = torch.nn.functional.pad(padded[:, None], (side, N_FFT - HOP - side), mode="reflect")[:, 0]
    spec = torch.stft(framed, N_FFT, HOP, window=torch.hann_window(N_FFT), center=False, return_complex=True)
    mel = mel_filterbank(SR, N_FFT, N_MELS, 0.0, SR / 2) @ torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    image = torch.log(mel.clamp(min=1e-5)).transpose(1, 2)[:, None]
    assert image.shape == (1, 1, 320 // HOP, N_MELS)
    vae = AutoencoderKL.from_pretrained(audioldm_dir, subfolder="vae").eval()
    z_map = vae.encode(image).latent_dist.mode() * SCALE  # (1, 4, 5, 4)
    expected = z_map.permute(0, 2, 1, 3).reshape(1, z_map.shape[2], -1)  # b t (c f)
    torch.testing.assert_close(codec.encode(x), expected, atol=1e-4, rtol=1e-4)


def test_scaling_factor_is_applied_both_ways(audioldm_dir):
    codec = _codec(audioldm_dir)
    x = 0.1 * torch.randn(1, 256)
    z = codec.encode(x)
    codec.scaling_factor = 2 * SCALE
    torch.testing.assert_close(codec.encode(x), 2 * z)
    # decode divides by the factor: scaling latents and factor together leaves the mel unchanged
    torch.testing.assert_close(codec.decode_mel(2 * z), _codec(audioldm_dir).decode_mel(z), atol=1e-5, rtol=1e-5)
    vae = AutoencoderKL.from_pretrained(audioldm_dir, subfolder="vae").eval()
    expected = vae.decode(codec.to_latent_map(z) / SCALE).sample[:, 0]
    torch.testing.assert_close(_codec(audioldm_dir).decode_mel(z), expected, atol=1e-5, rtol=1e-5)


def test_flat_and_map_layouts_are_inverse_and_channel_major(audioldm_dir):
    codec = _codec(audioldm_dir)
    c, f = codec.latent_map_channels, codec.latent_frequency_bins
    z_map = torch.randn(2, c, 7, f)
    flat = codec.from_latent_map(z_map)
    assert flat.shape == (2, 7, c * f)
    assert flat[1, 3, 2 * f + 1] == z_map[1, 2, 3, 1]
    torch.testing.assert_close(codec.to_latent_map(flat), z_map)
    torch.testing.assert_close(codec.from_latent_map(codec.to_latent_map(flat)), flat)
    with pytest.raises(ValueError, match="latent map"):
        codec.from_latent_map(torch.randn(2, c + 1, 7, f))


def test_frozen_and_mismatched_vocoder_is_rejected(audioldm_dir, tmp_path):
    codec = _codec(audioldm_dir)
    codec.train()
    assert not codec.training and all(not p.requires_grad for p in codec.parameters())
    os.symlink(os.path.join(audioldm_dir, "vae"), tmp_path / "vae")
    SpeechT5HifiGan(_vocoder_config(sampling_rate=16000)).save_pretrained(tmp_path / "vocoder")
    with pytest.raises(ValueError, match="vocoder runs at 16000"):
        _codec(str(tmp_path))


def test_paper_codec_builds_on_meta_with_the_paper_layout():
    with torch.device("meta"):
        codec = AudioLDMCodec()
    assert all(p.is_meta for p in codec.parameters())
    assert codec.hop_length == 640 and codec.latent_map_channels == 8 and codec.latent_frequency_bins == 16
    num = codec.num_latents(int(10.24 * 16000))  # 10.24 s -> 1024 mel frames -> 256 latent frames
    assert num == 256
    assert codec.to_latent_map(torch.zeros(1, num, codec.latent_channels)).shape == (1, 8, 256, 16)


def audioldm_log_mel(wav: np.ndarray, target_frames: int) -> torch.Tensor:
    """AudioLDM's ``wav_to_fbank`` after loading (``audioldm/audio/tools.py`` + ``stft.py``), transcribed:
    normalize_wav -> pad_wav -> clip -> TacotronSTFT.mel_spectrogram -> _pad_spec. -> (frames, n_mels)."""
    wav = wav - np.mean(wav)  # normalize_wav
    wav = wav / (np.max(np.abs(wav)) + 1e-8) * 0.5
    segment = np.zeros((1, target_frames * HOP))  # pad_wav
    segment[:, : wav.shape[-1]] = wav
    y = torch.clip(torch.FloatTensor(segment[0]).unsqueeze(0), -1, 1)  # get_mel_from_wav
    fourier = np.fft.fft(np.eye(N_FFT))  # STFT.__init__: windowed Fourier basis
    cutoff = N_FFT // 2 + 1
    basis = np.vstack([np.real(fourier[:cutoff, :]), np.imag(fourier[:cutoff, :])])[:, None, :]
    forward_basis = torch.FloatTensor(basis) * torch.from_numpy(get_window("hann", N_FFT, fftbins=True)).float()
    x = F.pad(y.view(1, 1, -1).unsqueeze(1), (N_FFT // 2, N_FFT // 2, 0, 0), mode="reflect").squeeze(1)
    out = F.conv1d(x, forward_basis, stride=HOP)  # STFT.transform
    magnitude = torch.sqrt(out[:, :cutoff] ** 2 + out[:, cutoff:] ** 2)
    mel = torch.matmul(mel_filterbank(SR, N_FFT, N_MELS, 0.0, SR / 2), magnitude)
    fbank = torch.log(torch.clamp(mel, min=1e-5))[0].T  # dynamic_range_compression, (frames + 1, n_mels)
    return fbank[:target_frames]  # _pad_spec crops the extra frame


def test_default_front_end_equals_audioldm_preprocessing_on_a_peaking_clip(audioldm_dir):
    codec = _codec(audioldm_dir)
    assert codec.peak_normalize == 0.5 and codec.frame_alignment == "audioldm"
    gen = torch.Generator().manual_seed(3)
    t = torch.arange(600) / SR
    clip = 0.05 + 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.1 * torch.randn(600, generator=gen)
    clip = clip / clip.abs().max() * 0.9  # peaks at 0.9, with a DC offset
    frames = codec.num_latents(600) * 4
    expected = audioldm_log_mel(clip.double().numpy(), frames)
    mel = codec.log_mel(clip[None])[0]
    assert mel.shape == expected.shape == (frames, N_MELS)
    torch.testing.assert_close(mel, expected, atol=2e-4, rtol=1e-4)
    # the VAE sees AudioLDM's image
    vae = AutoencoderKL.from_pretrained(audioldm_dir, subfolder="vae").eval()
    z_map = vae.encode(expected[None, None]).latent_dist.mode() * SCALE
    torch.testing.assert_close(codec.encode(clip[None]), codec.from_latent_map(z_map), atol=1e-4, rtol=1e-4)
    # what each option changes: normalisation lowers a 0.9 peak's log-mel by about log(0.9 / 0.5);
    # MelCodec framing moves the frames half a hop, so the images differ
    raw = _codec(audioldm_dir, peak_normalize=None).log_mel(clip[None])[0]
    shift = (raw - mel)[mel > -6].median().item()
    assert abs(shift - np.log(0.9 / 0.5)) < 0.05, shift
    half_hop = _codec(audioldm_dir, frame_alignment="melcodec").log_mel(clip[None])[0]
    assert (half_hop - mel).abs().max() > 0.1


def test_normalisation_uses_valid_samples_only_and_keeps_padding_zero(audioldm_dir):
    codec = _codec(audioldm_dir)
    clip = 0.2 + 0.7 * torch.sin(torch.linspace(0, 20, 400))
    padded = F.pad(clip, (0, 200))[None]
    out = codec.normalize_waveform(padded, torch.tensor([400]))
    torch.testing.assert_close(out[0, :400], codec.normalize_waveform(clip[None])[0])
    assert (out[0, 400:] == 0).all()
    assert abs(out[0, :400].abs().max().item() - 0.5) < 1e-6 and abs(out[0, :400].mean().item()) < 1e-6
    # encode passes the lengths on: the image is that of the normalised clip followed by zeros
    expected = _codec(audioldm_dir, peak_normalize=None).log_mel(F.pad(codec.normalize_waveform(clip[None]), (0, 200)))
    torch.testing.assert_close(codec.log_mel(padded, torch.tensor([400])), expected)
    vae = AutoencoderKL.from_pretrained(audioldm_dir, subfolder="vae").eval()
    z_map = vae.encode(expected[:, None]).latent_dist.mode() * SCALE
    torch.testing.assert_close(codec.encode(padded, torch.tensor([400])), codec.from_latent_map(z_map), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(codec.encode(padded), codec.encode(padded, torch.tensor([400])), atol=1e-3)
    with pytest.raises(ValueError, match="frame_alignment"):
        _codec(audioldm_dir, frame_alignment="centre")
