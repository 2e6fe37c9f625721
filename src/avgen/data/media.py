"""Reading and writing real media: audio with soundfile, video with PyAV.

Every failure is a :class:`MediaError` that names the file, the reason and the fix, so datasets can
raise it or turn it into a counted skip (``on_error``). Decoding never returns a silently wrong
tensor: wrong rates are resampled (polyphase, scipy ``resample_poly``) or rejected, short videos are
padded with their last frame *and reported*, and truncated files fail loudly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly

MIN_SAMPLE_RATE = 8000  # below this a clip cannot hold what a 16 kHz model is trained on
MAX_SAMPLE_RATE = 384000


class MediaError(ValueError):
    """A media file that cannot be used: names the file, the reason and the fix."""

    def __init__(self, path: str | Path, reason: str, fix: str) -> None:
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason}. Fix: {fix}")


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


@dataclass
class AudioClip:
    waveform: torch.Tensor  # (S,) float32 mono at the requested rate, padded/cropped to the duration
    valid_length: int  # samples of real audio in ``waveform`` (the rest is padding)
    source_seconds: float  # length of the whole source file
    source_sample_rate: int
    source_channels: int = 1  # channels of the file (more than one: averaged to mono, reported by datasets)


def resample(x: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling along the last axis (Kaiser-windowed sinc FIR)."""
    if orig_rate == target_rate:
        return x
    g = math.gcd(int(orig_rate), int(target_rate))
    return resample_poly(x, int(target_rate) // g, int(orig_rate) // g, axis=-1)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file; :class:`MediaError` if missing, unreadable or at an unsupported rate."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "audio file does not exist", "check the path (relative paths are resolved "
                         "against the manifest's folder) or remove the row")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError for anything it cannot parse
        raise MediaError(path, f"unreadable audio ({e})", "convert it to WAV/FLAC, e.g. "
                         "`ffmpeg -i in -ar 16000 out.wav`, or remove the row") from e
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise MediaError(path, f"unsupported sample rate {info.samplerate} Hz (supported "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)", "re-record or resample the source to "
                         "at least 8 kHz, or remove the row")
    if info.frames <= 0:
        raise MediaError(path, "audio file has no samples", "remove the row or replace the file")
    declared = _declared_data_bytes(info)
    if declared is not None:
        raise MediaError(path, f"truncated audio: the header declares {declared[0]} bytes of samples but the file "
                         f"holds only {declared[1]}", "re-export or re-download the file, or remove the row")
    return info


# libsndfile logs a RIFF/WAV data chunk that runs past the end of the file as
# "data : <declared> (should be <present>)" and then quietly reads only the bytes present, which
# would turn a half-copied file into a shorter clip. A declared size of 0 or 0xFFFFFFFF is a
# streamed WAV (size unknown when written), not a truncation.
_DATA_CHUNK = re.compile(r"^\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMED_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


def _declared_data_bytes(info: sf._SoundFileInfo) -> tuple[int, int] | None:
    """(declared, present) data bytes of a truncated WAV-family file, None when the file is whole."""
    match = _DATA_CHUNK.search(getattr(info, "extra_info", "") or "")
    if match is None:
        return None
    declared, present = int(match.group(1)), int(match.group(2))
    if declared in _STREAMED_SIZES or declared <= present:
        return None
    return declared, present


def load_audio(
    path: str | Path,
    sample_rate: int,
    duration: float | None = None,
    start: float = 0.0,
    expected_sample_rate: int | None = None,
    silence_threshold: float | None = None,
) -> AudioClip:
    """Decode ``[start, start + duration)`` seconds of ``path`` as mono float32 at ``sample_rate``.

    Multi-channel audio is averaged to mono (``source_channels`` tells callers, which report it). The result is padded with zeros (or cropped) to exactly
    ``round(duration * sample_rate)`` samples; ``valid_length`` says how much is real.
    ``expected_sample_rate`` (a manifest's declared rate) must match the file's header.
    ``silence_threshold``: raise if the clip's peak is below it (a silent clip).
    """
    info = audio_info(path)
    rate = int(info.samplerate)
    if expected_sample_rate is not None and int(expected_sample_rate) != rate:
        raise MediaError(path, f"header says {rate} Hz but the manifest declares {expected_sample_rate} Hz",
                         "fix the manifest's sample_rate column (or drop it: audio is resampled automatically)")
    first = int(round(start * rate))
    if first >= info.frames:
        raise MediaError(path, f"start={start} s is beyond the end of the audio ({info.frames / rate:.3f} s)",
                         "fix the row's start column")
    last = info.frames if duration is None else min(info.frames, first + int(math.ceil(duration * rate)))
    try:
        data, _ = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except Exception as e:
        raise MediaError(path, f"audio could not be decoded ({e}); the file may be truncated",
                         "re-encode or replace the file, or remove the row") from e
    if data.shape[0] == 0:
        raise MediaError(path, "decoded no audio samples (truncated file?)", "replace the file or remove the row")
    if data.shape[0] < last - first:  # the header promised more frames than the file holds
        raise MediaError(path, f"truncated audio: decoded {data.shape[0]} of the {last - first} frames the header "
                         "declares", "re-export or re-download the file, or remove the row")
    if not np.isfinite(data).all():
        raise MediaError(path, "audio contains NaN or Inf samples", "re-encode the file or remove the row")
    mono = data.mean(axis=1)
    mono = resample(mono, rate, sample_rate).astype(np.float32)
    if silence_threshold is not None and float(np.abs(mono).max()) < silence_threshold:
        raise MediaError(path, f"silent clip (peak {float(np.abs(mono).max()):.2e} < {silence_threshold:.0e})",
                         "remove the row, or set skip_silent=False to keep silent clips")
    valid = mono.shape[0]
    if duration is not None:
        target = int(round(duration * sample_rate))
        valid = min(valid, target)
        mono = np.pad(mono[:target], (0, target - valid))
    return AudioClip(torch.from_numpy(np.ascontiguousarray(mono)), valid, info.frames / rate, rate, int(info.channels))


def read_audio_track(path: str | Path) -> tuple[np.ndarray, int]:
    """The first audio stream of a container (mp4, mkv, ...) as mono float32 at its own rate, via PyAV.

    For videos whose sound exists only inside the container (VGGSound, LRS2/3, Greatest Hits);
    :class:`MediaError` when the file is missing, cannot be decoded or has no (or an empty) audio stream.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "video file does not exist", "check the path or remove the row")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "the file has no audio stream", "use a copy with its audio track, or drop it")
            stream = container.streams.audio[0]
            rate = int(stream.rate)
            mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(stream) for f in mono.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in mono.resample(None)]
    except MediaError:
        raise
    except Exception as e:  # av.error.*: truncated or not a media file
        raise MediaError(path, f"audio track could not be decoded ({type(e).__name__}: {e})",
                         "re-download or re-encode the file, or drop it") from e
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise MediaError(path, "the audio stream holds no samples", "re-download the file, or drop it")
    return audio, rate


def write_wav(path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write mono (S,) or (C, S) float audio as 16-bit PCM WAV."""
    a = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    a = a.T if a.ndim == 2 else a
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(a, -1.0, 1.0), int(sample_rate), subtype="PCM_16")
    return path


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------

_DECODE_FIX = "re-encode it (e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`) or remove the row"


@dataclass
class VideoClip:
    streams: list[torch.Tensor]  # one (F_i, 3, size_i, size_i) float32 in [0, 1] per requested (fps, size)
    padded_frames: list[int]  # frames per stream repeated from the last decoded one (video shorter than clip)
    source_seconds: float


def _open(path: Path):
    import av

    if not path.is_file():
        raise MediaError(path, "video file does not exist", "check the path (relative paths are resolved against "
                         "the manifest's folder) or remove the video column of this row")
    try:
        container = av.open(str(path))
    except Exception as e:  # av.error.* (InvalidDataError for truncated mp4s without a moov atom)
        raise MediaError(path, f"unreadable video ({type(e).__name__}: {e}); the file may be truncated",
                         _DECODE_FIX) from e
    if not container.streams.video:
        container.close()
        raise MediaError(path, "file has no video stream", "point the row's video column at a video file")
    return container


def video_info(path: str | Path) -> dict[str, float]:
    """Cheap probe (header only): frame rate, duration (s), width, height."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            seconds = float("nan")
        return {"fps": rate, "duration": seconds, "width": stream.width, "height": stream.height}
    finally:
        container.close()


def _to_size(frames: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """(F, 3, H, W) -> (F, 3, out_h, out_w): centre crop to the target aspect ratio, then resize.

    ``size`` is a side (square output) or (height, width).
    """
    out_h, out_w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    _, _, h, w = frames.shape
    crop_h, crop_w = (h, round(h * out_w / out_h)) if w * out_h >= h * out_w else (round(w * out_h / out_w), w)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    frames = frames[:, :, top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) != (out_h, out_w):
        frames = F.interpolate(frames, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    return frames.clamp_(0.0, 1.0)



def load_video(
    path: str | Path,
    fps: Sequence[float],
    sizes: Sequence[int | Sequence[int]],
    duration: float,
    start: float = 0.0,
) -> VideoClip:
    """Decode ``[start, start + duration)`` of ``path`` once and sample it at each requested rate.

    ``sizes``: per stream a side (centre-cropped square) or (height, width) (centre crop to that
    aspect ratio). Frame k of a stream at ``fps`` is the source frame *shown* at ``start + k / fps`` (the last frame
    whose timestamp is not after it). Times past the video's end repeat the last frame; the count is
    returned in ``padded_frames`` so callers can report (or skip) short videos.
    """
    path = Path(path)
    container = _open(path)
    end = start + duration
    times: list[float] = []
    images: list[np.ndarray] = []
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25.0)
        if start > 1.0 and stream.time_base is not None:
            container.seek(int(start / float(stream.time_base)), stream=stream, backward=True)
        for i, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else i / rate
            if t > end + 1.0 / rate:
                break
            if times and t < start:  # keep only the last frame before ``start`` (it is shown at ``start``)
                times.clear()
                images.clear()
            times.append(float(t))
            images.append(frame.to_ndarray(format="rgb24"))
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(path, f"video could not be decoded ({type(e).__name__}: {e}); the file may be truncated",
                         _DECODE_FIX) from e
    finally:
        container.close()
    if not images:
        raise MediaError(path, f"no decodable video frames in [{start}, {end}) s (truncated or too short?)",
                         _DECODE_FIX)
    stamps = np.asarray(times)
    frame_seconds = float(np.median(np.diff(stamps))) if stamps.size > 1 else 1.0 / rate
    covered_until = stamps[-1] + frame_seconds  # the last frame stays on screen for one frame period
    all_frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    streams, padded = [], []
    for target_fps, size in zip(fps, sizes):
        count = max(int(round(duration * target_fps)), 1)
        targets = start + np.arange(count) / target_fps
        idx = np.clip(np.searchsorted(stamps, targets + 1e-4, side="right") - 1, 0, len(images) - 1)
        padded.append(int((targets >= covered_until - 1e-4).sum()))
        chosen = all_frames[torch.from_numpy(idx)].float().div_(255.0)
        streams.append(_to_size(chosen, size))
    return VideoClip(streams, padded, float(covered_until))


def _video_codec() -> str:
    import av

    for name in ("libx264", "h264", "mpeg4"):
        if name in av.codecs_available:
            return name
    raise RuntimeError("PyAV has no H.264 or MPEG-4 encoder; install a PyAV wheel with FFmpeg encoders")


def write_mp4(
    path: str | Path,
    frames: torch.Tensor,
    fps: float,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
) -> Path:
    """Write (F, 3, H, W) frames in [0, 1] as an H.264 (or MPEG-4) mp4, optionally muxing mono audio (AAC).

    Odd frame sizes are edge-padded by one pixel (yuv420p needs even sides).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video = (frames.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    _, h, w, _ = video.shape
    if h % 2 or w % 2:
        video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    codec = _video_codec()
    with av.open(str(path), mode="w") as container:
        vs = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        if codec == "libx264":
            vs.options = {"crf": "12", "preset": "veryfast"}
        else:
            vs.bit_rate = 4_000_000
        astream = None
        if audio is not None:
            if sample_rate is None:
                raise ValueError("write_mp4: pass sample_rate together with audio")
            astream = container.add_stream("aac", rate=int(sample_rate))
            astream.layout = "mono"
        for image in video:
            for packet in vs.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        if astream is not None:
            a = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
            a = np.clip(a.reshape(1, -1), -1, 1).astype(np.float32)
            chunk = 1024  # AAC frame size
            for i in range(0, a.shape[1], chunk):
                piece = np.ascontiguousarray(a[:, i : i + chunk])
                af = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
                af.sample_rate = int(sample_rate)
                af.pts = i
                for packet in astream.encode(af):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def write_video_with_audio(
    directory: str | Path,
    sample_id: str,
    frames: torch.Tensor,
    fps: float,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
) -> tuple[Path, Path]:
    """The one output writer of joint audio-video generation: ``<id>.mp4`` + ``<id>.wav`` in ``directory``.

    The mp4 holds the (F, 3, H, W) frames in [0, 1] at ``fps`` (H.264 when PyAV has it, else
    MPEG-4) with the mono ``audio`` muxed in as AAC; the wav holds the same audio losslessly (AAC
    pads and rounds, so metrics should read the wav). Returns (mp4 path, wav path).
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"write_video_with_audio({sample_id!r}): frames must be (F, 3, H, W), got {tuple(frames.shape)}")
    directory = Path(directory)
    audio = audio.detach().cpu().float().reshape(-1) if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32).reshape(-1)
    mp4 = write_mp4(directory / f"{sample_id}.mp4", frames, fps, audio=audio, sample_rate=sample_rate)
    wav = write_wav(directory / f"{sample_id}.wav", audio, sample_rate)
    return mp4, wav
