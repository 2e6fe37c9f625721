"""HarmonyNetwork (spec §1.4): zero-initialised GLDI starts at (Wan, audio-only), references act, rows are
independent, gradient checkpointing is exact, Wan weights load into the video branch, paper-size counts."""

from __future__ import annotations

import pytest
import torch

from avgen.models import create_network
from avgen.models.harmony import HarmonyNetwork, WanVideoNetwork, load_wan_state_dict, read_wan_checkpoint, ti2v_inputs
from avgen.models.harmony.video_network import WanVideoConditions, wan_timestep

pytestmark = pytest.mark.usefixtures("single_thread")  # many tiny ops: thread hand-offs cost more than they save

TINY = dict(
    video_latent_channels=4, video_dim=24, video_ffn_dim=32, video_num_heads=2, video_num_layers=2,
    video_text_dim=8, video_text_len=6, video_freq_dim=16,
    audio_latent_channels=3, audio_dim=16, audio_ffn_dim=32, audio_num_heads=2, audio_num_layers=2,
    audio_prompt_dim=8, audio_freq_dim=16, speech_vocab_size=20, speech_dim=8, speech_max_positions=64,
    speech_num_blocks=1,
)
B, T_A, L_R, FRAMES, H, W = 3, 10, 3, 3, 4, 4


def _network(randomize_gldi: bool = False, **overrides) -> HarmonyNetwork:
    torch.manual_seed(0)
    network = HarmonyNetwork(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # non-zero heads so that outputs carry the whole network
        for head in (network.audio.head, network.video.head) if network.video is not None else (network.audio.head,):
            head.weight.normal_(std=0.5)
            head.bias.normal_(std=0.5)
        if randomize_gldi:
            for p in network.gldi.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
    return network


def _conditions(network, *, reference=True, image=True, generator_seed=1):
    g = torch.Generator().manual_seed(generator_seed)
    prompt_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    ids = torch.tensor([[3, 4, 5, -1], [1, 2, -1, -1], [7, 8, 9, 10]])
    kwargs = dict(
        audio_prompt_features=torch.randn(B, 4, 8, generator=g), audio_prompt_mask=prompt_mask,
        transcript_ids=ids, audio_length=T_A,
    )
    if reference:
        kwargs.update(reference_latent=torch.randn(B, L_R, 3, generator=g),
                      reference_mask=torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool))
    if network.has_video:
        kwargs.update(video_text_features=torch.randn(B, 5, 8, generator=g),
                      video_text_mask=torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool))
        if image:
            kwargs.update(image_latent=torch.randn(B, 1, 4, H, W, generator=g))
    return network.preprocess_conditions(**kwargs)


def _latents(seed=2):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(B, T_A, 3, generator=g)
    video = torch.randn(B, FRAMES, 4, H, W, generator=g)
    audio_mask = torch.arange(T_A)[None] < torch.tensor([T_A, 7, 9])[:, None]
    frame_lengths = torch.tensor([FRAMES, 2, 3])
    return audio, video, audio_mask, frame_lengths


def test_zero_initialised_gldi_starts_at_plain_wan_and_the_audio_only_branch():
    network = _network()
    conditions = _conditions(network)
    audio, video, audio_mask, frame_lengths = _latents()
    t_a, t_v = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.3, 0.6, 0.1])
    plain = WanVideoNetwork(**{k[len("video_"):]: v for k, v in TINY.items() if k.startswith("video_")}).eval()
    plain.load_state_dict(network.video.state_dict())
    with torch.no_grad():
        v_audio, v_video = network(audio, t_a, conditions, video_x=video, video_t=t_v, audio_mask=audio_mask,
                                   video_frame_lengths=frame_lengths)
        audio_only, none = network(audio, t_a, conditions, audio_mask=audio_mask)
        x_cond, t_tokens = ti2v_inputs(video, t_v, conditions.image_latent)
        expected_video = plain.predict_velocity(x_cond, t_tokens, WanVideoConditions(conditions.video_context),
                                                frame_lengths=frame_lengths)
    assert none is None and v_audio.shape == audio.shape and v_video.shape == video.shape
    assert torch.equal(v_video, expected_video)  # bit-equal: GLDI adds exact zeros
    assert torch.equal(v_audio, audio_only)
    assert v_audio.abs().amin() > 0 and v_video.abs().mean() > 0.1
    # ... and a network built without a video branch holds the same audio branch
    audio_net = HarmonyNetwork(**{**TINY, "with_video": False}).eval()
    assert audio_net.video is None and audio_net.gldi is None and not audio_net.has_video
    audio_net.audio.load_state_dict(network.audio.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(audio_net(audio, t_a, _conditions(audio_net), audio_mask=audio_mask)[0], audio_only)


def test_non_zero_gldi_couples_the_branches_and_the_baseline_differs():
    network = _network(randomize_gldi=True)
    conditions = _conditions(network)
    audio, video, audio_mask, frame_lengths = _latents()
    t = torch.tensor([0.2, 0.5, 0.9])
    kwargs = dict(video_t=t, audio_mask=audio_mask, video_frame_lengths=frame_lengths)
    with torch.no_grad():
        v_audio, v_video = network(audio, t, conditions, video_x=video, **kwargs)
        audio_only, _ = network(audio, t, conditions, audio_mask=audio_mask)
        other_audio = network(audio + torch.randn_like(audio), t, conditions, video_x=video, **kwargs)[1]
        baseline = _network(randomize_gldi=True, gldi="off")
        b_audio, b_video = baseline(audio, t, _conditions(baseline), video_x=video, **kwargs)
    assert not torch.allclose(v_audio, audio_only, atol=1e-4)  # V2A acts
    assert not torch.allclose(other_audio, v_video, atol=1e-4)  # A2V acts
    assert not torch.allclose(b_video, v_video, atol=1e-4) and not torch.allclose(b_audio, v_audio, atol=1e-4)


def test_reference_tokens_are_clean_change_the_target_and_never_reach_the_output():
    network = _network(randomize_gldi=True)
    audio, video, audio_mask, frame_lengths = _latents()
    t = torch.tensor([0.2, 0.5, 0.9])
    with_ref, without = _conditions(network), _conditions(network, reference=False)
    other_ref = _conditions(network, generator_seed=5)
    kwargs = dict(video_x=video, video_t=t, audio_mask=audio_mask, video_frame_lengths=frame_lengths)
    with torch.no_grad():
        a_ref, v_ref = network(audio, t, with_ref, **kwargs)
        a_none, _ = network(audio, t, without, **kwargs)
        a_other, _ = network(audio, t, other_ref, **kwargs)
        state = network._embed_audio(audio, t, with_ref, audio_mask)
        e_clean = network.audio.time_embedding(torch.zeros(1, 1))
        e0_clean = network.audio.time_projection(e_clean).unflatten(-1, (6, -1))
        e0_target = network.audio.time_projection(network.audio.time_embedding(wan_timestep(t)[:, None])).unflatten(-1, (6, -1))
    assert a_ref.shape == (B, T_A, 3)  # output on the target tokens only
    assert not torch.allclose(a_ref, a_none, atol=1e-4) and not torch.allclose(a_ref, a_other, atol=1e-4)
    # R tokens at avgen t = 1 (Wan timestep 0); A, S, P at t_a
    torch.testing.assert_close(state.e0[:, :L_R], e0_clean.expand(B, L_R, 6, -1))
    torch.testing.assert_close(state.e0[:, L_R:], e0_target.expand(B, state.x.shape[1] - L_R, 6, -1))
    # RoPE positions: R at -l_r..-1 (own length), A and S at 0..T_a-1
    assert state.lengths == (L_R, T_A, T_A, 4)
    first_pair = state.angles[:, 0, :, 0]  # angle of the first pair = the position (frequency 1)
    torch.testing.assert_close(first_pair[1, :L_R], torch.tensor([-3.0, -2.0, -1.0]))
    torch.testing.assert_close(first_pair[0, :2], torch.tensor([-2.0, -1.0]))
    torch.testing.assert_close(first_pair[0, L_R : L_R + T_A], torch.arange(T_A).float())
    torch.testing.assert_close(first_pair[0, L_R + T_A : L_R + 2 * T_A], torch.arange(T_A).float())
    assert torch.all(state.angles[:, :, -4:] == 0)  # P: no RoPE


def test_rows_with_different_times_equal_separate_forwards():
    network = _network(randomize_gldi=True)
    conditions = _conditions(network)
    audio, video, audio_mask, frame_lengths = _latents()
    t_a, t_v = torch.tensor([0.2, 1.0, 0.7]), torch.tensor([1.0, 0.4, 0.7])  # CTS-style: a clean modality per row
    with torch.no_grad():
        batched = network(audio, t_a, conditions, video_x=video, video_t=t_v, audio_mask=audio_mask,
                          video_frame_lengths=frame_lengths)
        for b in range(B):
            row = slice(b, b + 1)
            single = type(conditions)(**{k: None if v is None else v[row] for k, v in vars(conditions).items()})
            alone = network(audio[row], t_a[row], single, video_x=video[row], video_t=t_v[row],
                            audio_mask=audio_mask[row], video_frame_lengths=frame_lengths[row])
            torch.testing.assert_close(batched[0][row], alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batched[1][row], alone[1], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        network = _network(randomize_gldi=True, gradient_checkpointing=checkpointing).train()
        conditions = _conditions(network)
        audio, video, audio_mask, frame_lengths = _latents()
        t = torch.tensor([0.2, 0.5, 0.9])
        v_audio, v_video = network(audio, t, conditions, video_x=video, video_t=t, audio_mask=audio_mask,
                                   video_frame_lengths=frame_lengths)
        (v_audio.pow(2).mean() + v_video.pow(2).mean()).backward()
        grads.append({n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("gldi.") for k in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_wan_weights_load_into_the_video_branch(tmp_path):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(3)
    reference = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=8, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=1e-6, rope_max_seq_len=32,
    ).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    reference.save_pretrained(tmp_path / "transformer")
    state, config = read_wan_checkpoint(tmp_path)
    network = _network()
    report = load_wan_state_dict(network.video, state)
    assert report.ok and config["num_attention_heads"] == 2
    conditions = _conditions(network, image=False)
    audio, video, _, _ = _latents()
    t = torch.tensor([0.2, 0.5, 0.9])
    text = torch.zeros(B, 6, 8)  # what the Wan pipeline hands the transformer: masked, zero-padded to text_len
    g = torch.Generator().manual_seed(1)  # replay _conditions' draws: caption, reference, video prompt
    torch.randn(B, 4, 8, generator=g), torch.randn(B, L_R, 3, generator=g)
    features = torch.randn(B, 5, 8, generator=g)
    with torch.no_grad():
        _, v_video = network(audio, t, conditions, video_x=video, video_t=t)
        mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
        text[:, :5] = features * mask[..., None]
        v_wan = reference(video.permute(0, 2, 1, 3, 4), 1000.0 * (1.0 - t), text, return_dict=False)[0]
    torch.testing.assert_close(v_video, -v_wan.permute(0, 2, 1, 3, 4), atol=1e-5, rtol=1e-5)


def test_paper_size_counts_match_the_spec():
    network = create_network("harmony", device="meta")
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(network.video) == 4_999_787_712  # Wan2.2-TI2V-5B (spec §1.4.1)
    assert count(network.gldi) == 30 * 113_338_368  # 3 x (4 (D^2 + D) + norms) per layer (spec §1.4.3)
    assert abs(count(network.audio) - 4.40e9) / 4.40e9 < 0.01  # spec §3
    assert abs(count(network) - 12.8e9) / 12.8e9 < 0.02
    audio_only = create_network("harmony-audio", device="meta")
    assert audio_only.video is None and count(audio_only) == count(network.audio)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="video_num_layers .* must equal"):
        HarmonyNetwork(**{**TINY, "video_num_layers": 3})
    with pytest.raises(ValueError, match="audio_mmdit must be one of"):
        HarmonyNetwork(**{**TINY, "audio_mmdit": "sd3"})
    with pytest.raises(ValueError, match="rope_align"):
        HarmonyNetwork(**{**TINY, "rope_align": "scaled"})


def test_dual_stream_audio_blocks_with_tied_weights_equal_single_blocks():
    """``audio_mmdit: dual`` (SD3 two-stream): with the text stream's weights equal to the audio stream's, one
    joint attention over [R | A] + [S | P] is the single-stream block; untied text weights change the output."""
    single = _network(randomize_gldi=True)
    dual = _network(randomize_gldi=True, audio_mmdit="dual")
    state = {k: v for k, v in single.state_dict().items() if not k.startswith("audio.blocks.")}
    for i, block in enumerate(single.audio.blocks):
        for stream in ("audio", "text"):
            for name, value in block.state_dict().items():
                state[f"audio.blocks.{i}.{stream}.{name}"] = value
    dual.load_state_dict(state)
    conditions = _conditions(single)
    audio, video, audio_mask, frame_lengths = _latents()
    t = torch.tensor([0.2, 0.5, 0.9])
    kwargs = dict(video_x=video, video_t=t, audio_mask=audio_mask, video_frame_lengths=frame_lengths)
    with torch.no_grad():
        expected = single(audio, t, conditions, **kwargs)
        tied = dual(audio, t, conditions, **kwargs)
        for out, ref in zip(tied, expected):
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        dual.audio.blocks[0].text.ffn.fc1.weight.add_(0.5 * torch.randn_like(dual.audio.blocks[0].text.ffn.fc1.weight))
        untied = dual(audio, t, conditions, **kwargs)
    assert not torch.allclose(untied[0], expected[0], atol=1e-4)
    count = sum(p.numel() for p in create_network("harmony", device="meta", audio_mmdit="dual").audio.parameters())
    assert abs(count - 8.18e9) / 8.18e9 < 0.01  # spec §3: 4.40B + 30 x 125.9M text stream


@pytest.mark.parametrize("mmdit", ["single", "dual"])
def test_parameters_of_fsdp_units_are_used_only_inside_their_forward(mmdit):
    """FSDP gathers a unit's parameters around its ``forward`` only. Simulate that: the units' parameters are
    NaN except while their forward runs; the output must not change (no part is called around forward)."""
    from avgen.models.harmony import DualStreamWanBlock, GLDILayer, WanBlock

    network = _network(randomize_gldi=True, audio_mmdit=mmdit)
    conditions = _conditions(network)
    audio, video, audio_mask, frame_lengths = _latents()
    t = torch.tensor([0.2, 0.5, 0.9])
    kwargs = dict(video_x=video, video_t=t, audio_mask=audio_mask, video_frame_lengths=frame_lengths)
    with torch.no_grad():
        expected = network(audio, t, conditions, **kwargs)
    unit_types = (WanBlock, GLDILayer) if mmdit == "single" else (DualStreamWanBlock, GLDILayer)
    units = [m for name, m in network.named_modules() if isinstance(m, unit_types) and ".text" not in name
             and not (mmdit == "dual" and isinstance(m, WanBlock))]
    saved = {}
    for unit in units:
        saved[unit] = [p.detach().clone() for p in unit.parameters()]
        for p in unit.parameters():
            p.data.fill_(float("nan"))
        unit.register_forward_pre_hook(lambda m, args: [p.data.copy_(s) for p, s in zip(m.parameters(), saved[m])] and None)
        unit.register_forward_hook(lambda m, args, out: [p.data.fill_(float("nan")) for p in m.parameters()] and None)
    with torch.no_grad():
        gathered = network(audio, t, conditions, **kwargs)
    for out, ref in zip(gathered, expected):
        torch.testing.assert_close(out, ref)


def test_a_padded_short_clip_equals_the_clip_alone():
    """Row 1 lasts 7 audio latents and 2 video frames: padded in the batch, it equals itself run unpadded (the
    GLDI windows use its own T_v / T_a, the padding is masked everywhere)."""
    network = _network(randomize_gldi=True)
    audio, video, audio_mask, frame_lengths = _latents()
    t = torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        batched = network(audio, t, _conditions(network), video_x=video, video_t=t, audio_mask=audio_mask,
                          video_frame_lengths=frame_lengths)
        cond = _conditions(network)
        row = type(cond)(**{k: None if v is None else v[1:2] for k, v in vars(cond).items()})
        short = network.preprocess_conditions(  # the transcript embedded for 7 latents only
            audio_prompt_features=torch.zeros(1, 4, 8), transcript_ids=torch.tensor([[1, 2]]), audio_length=7)
        row.speech, row.speech_mask = short.speech, short.speech_mask
        alone = network(audio[1:2, :7], t[1:2], row, video_x=video[1:2, :2], video_t=t[1:2])
    torch.testing.assert_close(batched[0][1, :7], alone[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1][1, :2], alone[1][0], atol=1e-5, rtol=1e-5)


def _forward_with_raw_angles(network, audio_x, audio_t, conditions, **kwargs):
    """HarmonyNetwork.forward before the RoPE rotations were precomputed: the raw angles go to every attention."""
    audio = network._embed_audio(audio_x, audio_t, conditions, kwargs.get("audio_mask"))
    if kwargs.get("video_x") is None:
        return -network.audio.final_layer(network.audio.run_blocks(audio), audio), None
    video = network._embed_video(kwargs["video_x"], kwargs["video_t"], conditions, kwargs.get("video_frame_lengths"))
    geometry = network._geometry(video, audio)
    a, v = audio.x, video.tokens
    for index in range(len(network.gldi)):
        a, v = network.layer_pair(index, a, v, audio, video, geometry)
    return -network.audio.final_layer(a, audio), -network.video.final_layer(v, video.e, video.grid)


class _TrigCounter(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func in (torch.ops.aten.cos.default, torch.ops.aten.sin.default)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mmdit, gldi", [("single", "on"), ("dual", "off")])
def test_rope_rotations_are_computed_once_per_forward_with_the_same_outputs(mmdit, gldi):
    network = _network(randomize_gldi=True, audio_mmdit=mmdit, gldi=gldi)
    conditions = _conditions(network)
    audio, video, audio_mask, frame_lengths = _latents()
    t_a, t_v = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.3, 0.6, 0.1])
    joint = dict(video_x=video, video_t=t_v, audio_mask=audio_mask, video_frame_lengths=frame_lengths)
    with torch.no_grad():
        for kwargs in (joint, dict(audio_mask=audio_mask)):  # both branches with GLDI, and the audio branch alone
            got = network(audio, t_a, conditions, **kwargs)
            expected = _forward_with_raw_angles(network, audio, t_a, conditions, **kwargs)
            for g, e in zip(got, expected):
                assert (g is None and e is None) or torch.equal(g, e)
        # cos / sin: the time embeddings and one rotation per RoPE site, whatever the depth (not one per attention)
        counts = []
        for layers in (2, 4):
            deeper = _network(randomize_gldi=True, audio_mmdit=mmdit, gldi=gldi,
                              video_num_layers=layers, audio_num_layers=layers)
            with _TrigCounter() as counter:
                deeper(audio, t_a, _conditions(deeper), **joint)
            counts.append(counter.calls)
    assert counts[0] == counts[1]


def test_ti2v_times_per_frame_equal_times_per_token():
    """The TI2V video times embedded once per latent frame (what Harmony passes) equal Wan's per-token embedding."""
    network = _network()
    conditions = _conditions(network)
    _, video, _, frame_lengths = _latents()
    t = torch.tensor([0.3, 0.6, 0.1])
    per_token_x, per_token = ti2v_inputs(video, t, conditions.image_latent)
    per_frame_x, per_frame = ti2v_inputs(video, t, conditions.image_latent, per_frame=True)
    assert torch.equal(per_frame_x, per_token_x) and per_frame.shape == (B, FRAMES)
    assert torch.equal(per_frame.repeat_interleave((H // 2) * (W // 2), dim=1), per_token)
    wan_conditions = WanVideoConditions(conditions.video_context)
    with torch.no_grad():
        by_frame = network.video.embed(per_frame_x, wan_timestep(per_frame), wan_conditions, frame_lengths=frame_lengths)
        by_token = network.video.embed(per_token_x, wan_timestep(per_token), wan_conditions, frame_lengths=frame_lengths)
        assert by_frame.e0.shape == by_token.e0.shape == (B, FRAMES * (H // 2) * (W // 2), 6, TINY["video_dim"])
        torch.testing.assert_close(by_frame.e, by_token.e, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(by_frame.e0, by_token.e0, rtol=1e-6, atol=1e-6)
        assert not torch.equal(by_frame.e0[:, 0], by_frame.e0[:, -1])  # the clean first frame has its own time
        torch.testing.assert_close(network.video.predict_velocity(per_frame_x, per_frame, wan_conditions),
                                   network.video.predict_velocity(per_token_x, per_token, wan_conditions),
                                   rtol=1e-6, atol=1e-6)
