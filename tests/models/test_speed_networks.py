"""The speed changes keep every paper network's function (issue 15).

* FoleyGenEx = MMAudio: the optimised network against the transcription of MMAudio's forward
  (tests/models/test_mmaudio_fidelity.py) in fp32 there, under bf16 autocast here (loose);
* no mask (None) equals an all-valid mask for FoleyGenEx, AudioGen-Omni and OmniSonic, and the
  shared recipe passes None exactly when every frame is valid;
* ``gradient_checkpointing`` gives the same gradients; ``compile: true`` compiles the declared
  blocks of the network and its EMA copy in ``configure_model`` and sampling's whole per-step function once.
"""

from __future__ import annotations

import pytest
import torch

from avgen.nn.blocks import declared_blocks
from avgen.training import BlockFSDPStrategy
from avgen.training.fsdp import block_wrap_policy_for

from .test_audiogen_omni_network import _inputs as omni_inputs
from .test_audiogen_omni_network import _network as omni_network
from .test_base_module import perturb, synthetic_batch, tiny_model
from .test_mmaudio_fidelity import F_CLIP, SYNC_TOKENS, T, TOY, avgen_conditions, features, predict_flow, preprocess
from .test_mmaudio_fidelity import imported, mmaudio_state  # noqa: F401  (fixtures)
from .test_omnisonic_network import make_conditions as omnisonic_conditions
from .test_omnisonic_network import make_network as omnisonic_network

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread (tests/conftest.py)


def assert_matches(got, expected, tol=1e-5):
    torch.testing.assert_close(got, expected, rtol=0.0, atol=tol * max(1.0, expected.abs().max().item()))


# ----------------------------------------------------------------------------- FoleyGenEx / MMAudio
@torch.no_grad()
def test_foleygenex_bf16_velocity_matches_mmaudio_transcription_under_autocast(mmaudio_state, imported):  # noqa: F811
    clip, sync, text = features()
    x = torch.randn(2, T, TOY["latent"], generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.3, 0.8])
    fp32 = predict_flow(mmaudio_state, x, t, preprocess(mmaudio_state, clip, sync, text, T))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = predict_flow(mmaudio_state, x, t, preprocess(mmaudio_state, clip, sync, text, T)).float()
        got = imported.predict_velocity(x, t, avgen_conditions(imported, clip, sync, text, True)).float()
    scale = fp32.abs().max()
    assert (expected - fp32).abs().max() > 1e-4 * scale  # bf16 really ran
    assert (got - expected).abs().max() <= 4e-2 * scale, (got - expected).abs().max() / scale
    assert (got - fp32).abs().max() <= 4e-2 * scale


@torch.no_grad()
def test_foleygenex_no_mask_equals_all_valid_mask(imported):  # noqa: F811
    clip, sync, text = features()
    cond = avgen_conditions(imported, clip, sync, text, True)
    x, t = torch.randn(2, T, TOY["latent"]), torch.tensor([0.2, 0.9])
    assert_matches(imported.predict_velocity(x, t, cond, None),
                   imported.predict_velocity(x, t, cond, torch.ones(2, T, dtype=torch.bool)), tol=2e-6)


# ----------------------------------------------------------------------------- AudioGen-Omni
@torch.no_grad()
def test_audiogen_omni_no_mask_equals_all_valid_mask():
    net = omni_network()
    inputs, x, t = omni_inputs(frames=(20, 20))
    cond = net.preprocess_conditions(**inputs)
    assert bool(inputs["latent_mask"].all())
    assert_matches(net.predict_velocity(x, t, cond, None), net.predict_velocity(x, t, cond, inputs["latent_mask"]),
                   tol=2e-6)


@pytest.mark.parametrize("family", ["foleygenex", "audiogen_omni"])
def test_gradient_checkpointing_gives_equal_gradients(family):
    if family == "audiogen_omni":
        plain, ckpt = omni_network(), omni_network(gradient_checkpointing=True)
        inputs, x, t = omni_inputs(frames=(20, 14))

        def loss(net):
            return net.predict_velocity(x, t, net.preprocess_conditions(**inputs), inputs["latent_mask"]).square().mean()
    else:
        plain, ckpt = tiny_model().network, tiny_model(gradient_checkpointing=True).network
        perturb(plain)
        clip, sync, text = torch.randn(2, 8, plain.semantic_dim), torch.randn(2, 8, plain.sync_dim), torch.randn(
            2, plain.text_length, plain.text_dim)
        x, t = torch.randn(2, 12, plain.latent_channels), torch.tensor([0.3, 0.7])
        flags = torch.ones(2, dtype=torch.bool)

        def loss(net):
            return net(x, t, clip, sync, text, flags, flags).square().mean()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.gradient_checkpointing and not plain.gradient_checkpointing
    grads = []
    for net in (plain.train(), ckpt.train()):
        net.zero_grad()
        loss(net).backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


# ----------------------------------------------------------------------------- OmniSonic
@torch.no_grad()
def test_omnisonic_no_mask_equals_all_valid_mask():
    net = omnisonic_network()
    cond = omnisonic_conditions(net)
    x = torch.randn(3, net.latent_channels, 8, net.frequency_bins)
    t = torch.tensor([0.1, 0.5, 0.9])
    assert_matches(net.predict_velocity(x, t, cond, None),
                   net.predict_velocity(x, t, cond, torch.ones(3, 8, dtype=torch.bool)), tol=2e-6)


# ----------------------------------------------------------------------------- the shared recipe
def test_recipe_passes_no_mask_exactly_when_every_frame_is_valid():
    model = tiny_model(video_dropout=0.0, text_dropout=0.0)
    seen = []
    network_predict = model.network.predict_velocity

    def spy(x_t, t, conditions, latent_mask=None):
        seen.append(latent_mask)
        return network_predict(x_t, t, conditions, latent_mask=latent_mask)

    model.network.predict_velocity = spy
    model.training_step(synthetic_batch(num=1), 0)  # one full-length clip
    model.training_step(synthetic_batch(num=2), 0)  # clip 1 is shorter: padded frames
    assert seen[0] is None
    assert seen[1] is not None and not bool(seen[1].all())
    seen.clear()
    model.generate(synthetic_batch(num=1), num_steps=1, cfg_scale=1.0)
    assert seen == [None]


def test_compile_flag_compiles_the_blocks_for_training_and_the_whole_sampling_step_once():
    """``compile: true``: the declared blocks of network and EMA are compiled in ``configure_model`` (training);
    sampling traces ONE graph (no break on the condition dataclass; the compiled blocks inlined) for all 25
    guided Euler steps and the next sample of the same shape, equal to eager (aot_eager: traced graph, no codegen)."""
    from torch._dynamo.utils import counters

    model = tiny_model(compile=True, compile_backend="aot_eager", ema_decay=0.9).eval()
    assert model.hparams["compile"] is True
    model.configure_model()
    model.configure_model()  # Lightning calls it in every fit / validate / predict
    for network in (model.network, model.ema_network.module):
        blocks = declared_blocks(network)
        assert len(blocks) == 2 and all(b._compiled_call_impl is not None for b in blocks)
    plain = tiny_model()
    plain.configure_model()
    assert all(b._compiled_call_impl is None for b in declared_blocks(plain.network))

    perturb(model.ema_network.module)  # sampling uses the EMA network
    batch = synthetic_batch(num=1)  # every frame valid: no mask
    model.compile_network = False
    with torch.no_grad():
        expected = model.sample_latents(batch, num_steps=25, seed=3)[0]
    model.compile_network = True
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        got = model.sample_latents(batch, num_steps=25, seed=3)[0]
        assert counters["stats"]["unique_graphs"] == 1 and counters["frames"]["ok"] == 1
        assert not counters["graph_break"] and counters["stats"]["calls_captured"] > 200  # the whole network
        model.sample_latents(batch, num_steps=25, seed=4)  # another sample: no new trace
    assert counters["stats"]["unique_graphs"] == 1 and counters["frames"]["total"] == 1
    assert_matches(got, expected)
    assert expected.abs().max() > 0.1  # a live comparison


def test_block_fsdp_strategy_policy_wraps_the_blocks_of_network_and_ema():
    model = tiny_model(ema_decay=0.9)
    wrapped = block_wrap_policy_for(model)._run_policy(model, set(), {})  # torch's own policy traversal
    expected = declared_blocks(model.network) + declared_blocks(model.ema_network.module)
    assert len(expected) == 4 and set(map(id, wrapped)) - {id(model)} == set(map(id, expected))
    assert "auto_wrap_policy" not in BlockFSDPStrategy().kwargs  # filled from the model at setup
