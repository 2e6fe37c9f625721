"""GLDI (Harmony Main Eq. 5-7, spec §1.4.3) against direct per-frame / per-token transcriptions written here.

The transcriptions loop over frames and tokens, pick the window with float arithmetic
(floor(j * T_v / T_a)), rotate with complex numbers and attend with an explicit softmax, so they share
no code with the batched masked-SDPA form of ``avgen.models.harmony.gldi`` except the layer's weights.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avgen.models.harmony import GLDILayer, gldi_geometry
from avgen.nn import rope_3d_angles

pytestmark = pytest.mark.usefixtures("single_thread")  # many tiny ops: thread hand-offs cost more than they save

VIDEO_DIM, AUDIO_DIM, HEADS = 24, 16, 2  # head dims 12 and 8
GRID = (5, 2, 2)  # padded video token grid: 5 frames of 4 tokens
PER_FRAME = GRID[1] * GRID[2]
T_V = torch.tensor([5, 3])  # per-sample valid frames
T_A = torch.tensor([13, 8])  # per-sample valid audio target latents (padded to 13)
L_R = torch.tensor([3, 2])  # per-sample reference lengths (padded to 3)
VIDEO_ROPE, AUDIO_ROPE = 4, 6  # rotated channels of a head (A2V / V2A)


def _layer(mode: str = "on") -> GLDILayer:
    torch.manual_seed(0)
    layer = GLDILayer(VIDEO_DIM, AUDIO_DIM, HEADS, HEADS, mode=mode)
    with torch.no_grad():  # non-zero everything (the outputs are zero-initialised)
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return layer


def _inputs():
    torch.manual_seed(1)
    video = torch.randn(2, GRID[0] * PER_FRAME, VIDEO_DIM)
    target = torch.randn(2, int(T_A.max()), AUDIO_DIM)
    reference = torch.randn(2, int(L_R.max()), AUDIO_DIM)
    frame_of_token = torch.arange(GRID[0]).repeat_interleave(PER_FRAME)
    video_mask = frame_of_token[None] < T_V[:, None]
    audio_mask = torch.arange(int(T_A.max()))[None] < T_A[:, None]
    reference_mask = torch.arange(int(L_R.max()))[None] < L_R[:, None]
    return video, target, reference, video_mask, audio_mask, reference_mask


def _geometry(mode="on", rope_align="aligned", window=1, with_reference=True):
    _, _, _, video_mask, audio_mask, reference_mask = _inputs()
    return gldi_geometry(
        mode=mode, rope_align=rope_align, window=window, grid=GRID, video_frames=T_V, video_mask=video_mask,
        audio_lengths=T_A, audio_mask=audio_mask, num_audio=int(T_A.max()),
        reference_mask=reference_mask if with_reference else None, num_reference=int(L_R.max()) if with_reference else 0,
        video_head_dim=VIDEO_DIM // HEADS, audio_head_dim=AUDIO_DIM // HEADS,
        video_rope_dim=VIDEO_ROPE, audio_rope_dim=AUDIO_ROPE,
    )


# ------------------------------------------------------------------------------------ transcription
def _rms_across_heads(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rotate(x, positions, rotary):
    """x (L, H, dh) rotated on its first ``rotary`` channels (interleaved pairs) at ``positions`` (L,) or (L, dh/2)."""
    if positions is None:
        return x
    if positions.dim() == 2:  # explicit per-pair angles (3-D RoPE)
        angles = positions[:, : rotary // 2].double()
    else:
        freqs = 10000.0 ** (-torch.arange(0, rotary, 2, dtype=torch.float64) / rotary)
        angles = positions.double()[:, None] * freqs
    pairs = torch.view_as_complex(x[..., :rotary].double().reshape(*x.shape[:-1], rotary // 2, 2).contiguous())
    rotated = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)[:, None]).flatten(-2)
    return torch.cat((rotated.float(), x[..., rotary:]), dim=-1)


def _attend(module, queries, sources, q_pos=None, k_pos=None, rotary=None):
    """One CrossModalAttention written out: LN -> q/k/v -> RMSNorm over D -> heads -> RoPE -> softmax -> o."""
    attn = module.attn
    if sources.shape[0] == 0:
        return torch.zeros_like(queries)
    h = F.layer_norm(queries, queries.shape[-1:], module.norm_query.weight, module.norm_query.bias, 1e-6)
    s = F.layer_norm(sources, sources.shape[-1:], module.norm_source.weight, module.norm_source.bias, 1e-6)
    q = _rms_across_heads(attn.q(h), attn.norm_q.weight).unflatten(-1, (HEADS, -1))
    k = _rms_across_heads(attn.k(s), attn.norm_k.weight).unflatten(-1, (HEADS, -1))
    v = attn.v(s).unflatten(-1, (HEADS, -1))
    if rotary is not None:
        q, k = _rotate(q, q_pos, rotary), _rotate(k, k_pos, rotary)
    weights = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1]), dim=-1)
    return attn.o(torch.einsum("hqk,khd->qhd", weights, v).flatten(-2))


def _a2v_loop(layer, video, target, rope_align, window):
    """Main Eq. 5, frame by frame: frame i reads the target tokens j with floor(j T_v / T_a) in [i - w, i + w]."""
    out = torch.zeros_like(video)
    for b in range(2):
        t_v, t_a = int(T_V[b]), int(T_A[b])
        for i in range(t_v):
            js = [j for j in range(t_a) if i - window <= math.floor(j * t_v / t_a) <= i + window]
            rows = slice(i * PER_FRAME, (i + 1) * PER_FRAME)
            if rope_align == "aligned":
                q_pos, k_pos = torch.full((PER_FRAME,), float(i)), torch.tensor([j * t_v / t_a for j in js])
            else:
                q_pos, k_pos = torch.full((PER_FRAME,), float(i)), torch.tensor(js, dtype=torch.float32)
            rotary = None if rope_align == "none" else VIDEO_ROPE
            out[b, rows] = _attend(layer.audio_to_video, video[b, rows], target[b, js], q_pos, k_pos, rotary)
    return out


def _v2a_loop(layer, target, video, rope_align, window):
    """V2A, token by token: audio j reads the tokens of frames floor(j T_v / T_a) + [-w, w]; keys at i T_a / T_v."""
    out = torch.zeros_like(target)
    for b in range(2):
        t_v, t_a = int(T_V[b]), int(T_A[b])
        for j in range(t_a):
            centre = math.floor(j * t_v / t_a)
            frames = [f for f in range(centre - window, centre + window + 1) if 0 <= f < t_v]
            tokens = [f * PER_FRAME + n for f in frames for n in range(PER_FRAME)]
            key_frames = torch.tensor([f for f in frames for _ in range(PER_FRAME)], dtype=torch.float32)
            k_pos = key_frames * t_a / t_v if rope_align == "aligned" else key_frames
            rotary = None if rope_align == "none" else AUDIO_ROPE
            out[b, j] = _attend(layer.video_to_audio, target[b, j : j + 1], video[b, tokens], torch.tensor([float(j)]), k_pos, rotary)[0]
    return out


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize(("rope_align", "window"), [("aligned", 1), ("aligned", 2), ("raw", 0), ("none", 1)])
def test_local_windows_and_rescaled_rope_equal_the_per_frame_loop(rope_align, window):
    layer = _layer()
    video, target, _, video_mask, audio_mask, _ = _inputs()
    geometry = _geometry(rope_align=rope_align, window=window)
    with torch.no_grad():
        a2v = layer.video_update(video, target, geometry)
        v2a = layer.audio_update(target, video, geometry)
        torch.testing.assert_close(a2v, _a2v_loop(layer, video, target, rope_align, window), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(v2a, _v2a_loop(layer, target, video, rope_align, window), atol=2e-5, rtol=1e-4)
    # padded frames / latents get no update, and content past a sample's end never reaches it
    assert torch.all(a2v[~video_mask] == 0) and torch.all(v2a[~audio_mask] == 0)


def test_rope_alignment_matters_and_windows_are_local():
    layer = _layer()
    video, target, *_ = _inputs()
    with torch.no_grad():
        aligned = layer.video_update(video, target, _geometry(rope_align="aligned"))
        raw = layer.video_update(video, target, _geometry(rope_align="raw"))
        assert not torch.allclose(aligned, raw, atol=1e-4)
        # changing the audio of the last target latent of sample 0 moves only the last frames' update
        moved = target.clone()
        moved[0, int(T_A[0]) - 1] = torch.randn(AUDIO_DIM)  # (a constant shift would vanish in the LayerNorm)
        changed = (layer.video_update(video, moved, _geometry()) - aligned).abs().amax(-1)[0]  # (L_v,)
    changed_frames = {int(t) // PER_FRAME for t in torch.nonzero(changed > 1e-6)}
    assert changed_frames == {3, 4}  # floor(12 * 5 / 13) = 4, window 1


def test_global_style_is_full_attention_to_the_video_without_rope():
    layer = _layer()
    video, _, reference, video_mask, _, reference_mask = _inputs()
    geometry = _geometry()
    with torch.no_grad():
        ours = layer.reference_update(reference, video, geometry)
        for b in range(2):
            keys = video[b, video_mask[b]]
            expected = _attend(layer.global_style, reference[b, : int(L_R[b])], keys)
            torch.testing.assert_close(ours[b, : int(L_R[b])], expected, atol=2e-5, rtol=1e-4)
    assert _geometry(with_reference=False).global_mask is None


def test_gldi_off_is_the_full_ovi_style_cross_attention():
    layer = _layer("off")
    assert layer.global_style is None
    video, target, reference, video_mask, audio_mask, reference_mask = _inputs()
    geometry = _geometry(mode="off")
    latents = torch.cat((reference, target), dim=1)  # [R | A]
    with torch.no_grad():
        a2v = layer.video_update(video, latents, geometry)
        v2a = layer.audio_update(latents, video, geometry)
        for b in range(2):
            t_v, t_a, l_r = int(T_V[b]), int(T_A[b]), int(L_R[b])
            valid = torch.cat((reference_mask[b], audio_mask[b]))
            positions = torch.cat((torch.arange(int(L_R.max())) - l_r, torch.arange(int(T_A.max())))).float()[valid]
            scaled = positions * t_v / t_a  # Ovi: audio positions on the video timeline
            rows = video_mask[b]
            video_angles = rope_3d_angles(*GRID, VIDEO_DIM // HEADS)[rows]
            # queries: 3-D RoPE on every channel; keys: 1-D angles on the first VIDEO_ROPE channels only
            pad = torch.zeros(len(scaled), (VIDEO_DIM // HEADS) // 2)
            freqs = 10000.0 ** (-torch.arange(0, VIDEO_ROPE, 2).float() / VIDEO_ROPE)
            pad[:, : VIDEO_ROPE // 2] = scaled[:, None] * freqs
            expected = _attend(layer.audio_to_video, video[b, rows], latents[b, valid], video_angles, pad, VIDEO_DIM // HEADS)
            torch.testing.assert_close(a2v[b, rows], expected, atol=2e-5, rtol=1e-4)
            audio_angles = torch.zeros(len(scaled), (AUDIO_DIM // HEADS) // 2)
            freqs = 10000.0 ** (-torch.arange(0, AUDIO_ROPE, 2).float() / AUDIO_ROPE)
            audio_angles[:, : AUDIO_ROPE // 2] = scaled[:, None] * freqs
            key_angles = rope_3d_angles(*GRID, AUDIO_DIM // HEADS)[rows]
            expected = _attend(layer.video_to_audio, latents[b, valid], video[b, rows], audio_angles, key_angles, AUDIO_DIM // HEADS)
            torch.testing.assert_close(v2a[b, valid], expected, atol=2e-5, rtol=1e-4)
    # and it is not the local interaction: same weights, different update
    local = _layer("on")
    local.audio_to_video.load_state_dict(layer.audio_to_video.state_dict())
    with torch.no_grad():
        assert not torch.allclose(local.video_update(video, target, _geometry()), a2v, atol=1e-4)
