"""Every registered network preset builds on the meta device, satisfies the network contract, and the
papers' sizes count what the papers say."""

from __future__ import annotations

import pytest
import torch

from avgen.models import FlowNetwork, create_network, list_networks, network_preset

# Parameter counts the papers / public checkpoints give (MMAudio's counted from its state dicts).
KNOWN_COUNTS = {
    "mmaudio-s-16k": 157_283_604,  # MMAudio small_16k (reference/mmaudio_state_dict_shapes.json)
    "mmaudio-l-44k": 1_030_002_088,  # MMAudio-L-44.1kHz, FoleyGenEx's paper size
}


@pytest.mark.parametrize("name", list_networks())
def test_every_preset_builds_on_meta_and_has_the_network_contract(name):
    network = create_network(name, device="meta")
    assert isinstance(network, FlowNetwork)
    assert all(p.device.type == "meta" for p in network.parameters())
    count = sum(p.numel() for p in network.parameters())
    if name in KNOWN_COUNTS:
        assert count == KNOWN_COUNTS[name]


def test_overrides_and_unknown_names():
    small = create_network("mmaudio-s-16k", device="meta", hidden_dim=64, num_heads=4)
    assert small.hidden_dim == 64
    assert network_preset("omnisonic-xl").kwargs["hidden_dim"] == 1152
    with pytest.raises(KeyError, match="unknown network preset 'nope'.*mmaudio-l-44k"):
        create_network("nope")
