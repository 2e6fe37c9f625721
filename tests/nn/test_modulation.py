"""adaLN-Zero: identity at init, frame-aligned parameters per frame; upsampling; final layer."""

import torch
from torch import nn

from avgen.nn import AdaLNZero, FinalLayer, modulate, upsample_to_length


def test_adaln_zero_starts_at_zero_and_modulate_is_identity():
    ada = AdaLNZero(16, 8, num_params=6)
    params = ada(torch.randn(3, 8))
    assert len(params) == 6
    for p in params:
        assert p.shape == (3, 1, 16) and torch.count_nonzero(p) == 0
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(modulate(x, params[0], params[1]), x)


def test_modulate_formula():
    x, shift, scale = torch.randn(2, 4, 3), torch.randn(2, 1, 3), torch.randn(2, 4, 3)
    torch.testing.assert_close(modulate(x, shift, scale), x + x * scale + shift)


def test_frame_aligned_parameters_vary_per_frame_and_match_direct():
    ada = AdaLNZero(6, 4, num_params=2)
    with torch.no_grad():
        ada.adaLN_modulation[-1].weight.normal_()
        ada.adaLN_modulation[-1].bias.normal_()
    c = torch.randn(2, 7, 4)
    shift, scale = ada(c)
    assert shift.shape == (2, 7, 6)
    linear = ada.adaLN_modulation[-1]
    direct = nn.functional.silu(c) @ linear.weight.T + linear.bias
    torch.testing.assert_close(shift, direct[..., :6])
    torch.testing.assert_close(scale, direct[..., 6:])
    assert not torch.allclose(shift[:, 0], shift[:, 1])
    # a global condition gives one set broadcast over frames
    g_shift, _ = ada(c[:, 0])
    torch.testing.assert_close(g_shift[:, 0], shift[:, 0])


def test_upsample_nearest_exact_matches_index_formula():
    x = torch.randn(2, 192, 3)
    up = upsample_to_length(x, 250)
    # nearest-exact: source index floor((i + 0.5) * L_in / L_out)
    idx = [min(int((i + 0.5) * 192 / 250), 191) for i in range(250)]
    torch.testing.assert_close(up, x[:, idx])


def test_final_layer_outputs_zero_at_init():
    for kernel in (1, 7):
        layer = FinalLayer(16, 5, kernel_size=kernel)
        out = layer(torch.randn(2, 9, 16), torch.randn(2, 9, 16))
        assert out.shape == (2, 9, 5) and torch.count_nonzero(out) == 0
