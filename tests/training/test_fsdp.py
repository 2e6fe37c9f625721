"""FSDP2 (avgen.training.BlockFullyShardStrategy): what does not need two processes. The sharded 2-rank
training itself (units, equality with DDP, exact resume, weights_only checkpoint) is in
tests/reliability/test_paper_scale.py, folded into the suite's one 2-process launch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from avgen.training import BlockFullyShardStrategy
from tests.models.harmony.test_network import _conditions, _latents, _network

REPO = Path(__file__).resolve().parents[2]


def test_harmony_calls_every_unit_equally_often_with_or_without_reference_audio():
    """FSDP gathers a unit's parameters once per call of its forward, a collective every rank must join: a
    batch with reference audio and one without (two ranks) must call each unit the same number of times,
    or the ranks' all-gathers mismatch (gloo: "Received data size doesn't match expected size")."""
    from avgen.nn.blocks import declared_blocks

    network = _network(randomize_gldi=True)
    audio, video, audio_mask, frame_lengths = _latents()
    t = torch.tensor([0.2, 0.5, 0.9])
    calls: Counter = Counter()
    for index, block in enumerate(declared_blocks(network)):
        block.register_forward_pre_hook(lambda module, args, index=index: calls.update([index]))
    counts = []
    for reference in (True, False):
        calls.clear()
        with torch.no_grad():
            network(audio, t, _conditions(network, reference=reference), video_x=video, video_t=t,
                    audio_mask=audio_mask, video_frame_lengths=frame_lengths)
        counts.append(dict(calls))
    assert counts[0] == counts[1] and len(counts[0]) == len(declared_blocks(network))


def test_strategy_options_are_checked():
    strategy = BlockFullyShardStrategy(param_dtype="bf16", reduce_dtype="fp32", reshard_after_forward=False)
    policy = strategy.mp_policy
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
    assert strategy._save_distributed_checkpoint is False  # one checkpoint file by default
    assert BlockFullyShardStrategy().mp_policy.param_dtype is None
    with pytest.raises(ValueError, match="param_dtype must be one of"):
        BlockFullyShardStrategy(param_dtype="bf17")


def test_harmony_paper_config_names_the_fsdp2_strategy():
    strategy = yaml.safe_load((REPO / "configs/harmony/paper.yaml").read_text())["trainer"]["strategy"]
    assert strategy["class_path"] == "avgen.training.BlockFullyShardStrategy"
    built = BlockFullyShardStrategy(**strategy["init_args"])
    assert built.checkpoint_blocks and built.mp_policy.param_dtype == torch.bfloat16


def test_scalar_parameters_stay_out_of_units_when_frozen_and_are_refused_when_trained():
    """fully_shard cannot split a 0-dim parameter (SpeechT5's positional ``alpha``): a frozen one stays a plain
    tensor outside the unit; a trainable one would go un-averaged across ranks, so it is refused by name."""
    from transformers import SpeechT5Config, SpeechT5ForTextToSpeech

    from avgen.conditioning.speech import KNOWN_CONFIGS, TINY_SPEECHT5
    from avgen.training.fsdp import _scalars

    encoder = SpeechT5ForTextToSpeech(SpeechT5Config(**KNOWN_CONFIGS[TINY_SPEECHT5])).speecht5.encoder
    with pytest.raises(ValueError, match=r"trainable scalar parameters \['prenet.encode_positions.alpha'\] of "
                                         r"speech_encoder.*freeze them"):
        _scalars(encoder, "speech_encoder")
    encoder.requires_grad_(False)
    assert _scalars(encoder) == {encoder.prenet.encode_positions.alpha}
