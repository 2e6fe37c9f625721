"""Per-block hooks of avgen.nn.blocks: checkpointing, torch.compile, FSDP wrapping by declared block class."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avgen.nn import JointBlock, StreamBlock, StreamInput, StreamSpec
from avgen.nn.blocks import (
    block_classes,
    compile_blocks,
    declared_blocks,
    fsdp_auto_wrap_policy,
    fsdp_block_classes,
    run_block,
)
from avgen.nn.rope import rope_angles, rope_rotation

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread (tests/conftest.py)


class TwoStreamNet(nn.Module):
    """A joint block (which holds StreamBlocks) then a single StreamBlock: nested declared classes."""

    block_classes = (JointBlock, StreamBlock)

    def __init__(self, checkpointing: bool = False):
        super().__init__()
        self.checkpointing = checkpointing
        self.joint = nn.ModuleList([JointBlock(16, 2, [StreamSpec("a", kernel_size=3), StreamSpec("b")])])
        self.single = nn.ModuleList([StreamBlock(16, 2, kernel_size=3)])
        self.out = nn.Linear(16, 4)
        with torch.no_grad():  # off the adaLN-Zero init so every path carries gradient
            for name, p in self.named_parameters():
                p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("norm.weight") else 0.3 * torch.randn_like(p))

    def forward(self, a, b, c, mask=None):
        rotation = rope_rotation(rope_angles(torch.arange(float(a.shape[1])), 8))
        for block in self.joint:
            a, b = run_block(block, [StreamInput(a, c, rotation, mask), StreamInput(b, c)],
                             checkpointing=self.checkpointing)
        for block in self.single:
            a = run_block(block, a, c, rotation, mask, checkpointing=self.checkpointing)
        return self.out(a)


def _inputs(length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, length, 16, generator=g), torch.randn(2, 3, 16, generator=g), torch.randn(2, 1, 16, generator=g)


def test_declared_blocks_are_the_outermost_instances_and_a_missing_declaration_is_explained():
    net = TwoStreamNet()
    assert declared_blocks(net) == [net.joint[0], net.single[0]]  # not the StreamBlocks inside the joint block
    assert fsdp_block_classes(net) == {JointBlock, StreamBlock}
    with pytest.raises(ValueError, match="block_classes"):
        block_classes(nn.Linear(2, 2))


def test_checkpointing_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    plain = TwoStreamNet()
    ckpt = TwoStreamNet(checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    a, b, c = _inputs()
    grads = []
    for net in (plain, ckpt):
        net.zero_grad()
        loss = net(a, b, c).square().mean()
        loss.backward()
        # stream b's update is never read after the last block: its FFN gets no gradient in either run
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-6, msg=name)
    assert sum(bool(g.abs().sum() > 0) for g in grads[0].values()) > 20  # a live comparison
    # it really recomputes: the checkpointed forward keeps fewer saved tensors
    saved = []
    for net in (plain, ckpt):
        count = [0]
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.__setitem__(0, count[0] + 1) or t, lambda t: t):
            net(a, b, c).sum()
        saved.append(count[0])
    assert saved[1] < saved[0], saved


class OneBlockNet(nn.Module):
    """The smallest network with a declared block: tracing cost is what a compile test pays (~4 s here)."""

    block_classes = (StreamBlock,)

    def __init__(self):
        super().__init__()
        self.block = StreamBlock(16, 2, kernel_size=3)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(0.3 * torch.randn_like(p))

    def forward(self, a, c):
        return self.block(a, c, rope_rotation(rope_angles(torch.arange(float(a.shape[1])), 8)))


def test_compiled_blocks_give_the_same_outputs_and_keep_state_dict_keys():
    """torch.compile with the aot_eager backend (AOT-autograd graphs, no code generation: inductor compiles
    the same graphs and takes ~90 s per block on this shared CPU; bench/bench_speed.py runs it)."""
    torch.manual_seed(1)
    net = OneBlockNet().eval()
    keys = list(net.state_dict())
    a, _, c = _inputs()
    with torch.no_grad():
        expected = net(a, c)
        compile_blocks(net, backend="aot_eager")
        compile_blocks(net, backend="aot_eager")  # idempotent: configure_model may run it again
        got = net(a, c)
    assert net.block._compiled_call_impl is not None
    # eager RoPE is a complex multiply, traced RoPE the real form (avgen.nn.rope): equal to fp32 rounding
    # of the output's scale (~1e3 with these perturbed weights; both are ~5e-4 from an fp64 forward)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6 * expected.abs().max().item())
    assert list(net.state_dict()) == keys


def test_fsdp_policy_wraps_exactly_the_declared_blocks_of_every_network():
    net, ema = TwoStreamNet(), TwoStreamNet()
    root = nn.ModuleDict({"network": net, "ema": ema})
    policy = fsdp_auto_wrap_policy(net, ema)
    wrapped = policy._run_policy(root, set(), {"sharding_strategy": "FULL_SHARD"})  # torch's own policy traversal
    expected = declared_blocks(net) + declared_blocks(ema)
    assert set(map(id, wrapped)) - {id(root)} == set(map(id, expected))
    assert not any(isinstance(m, StreamBlock) and m in [*net.joint[0].children()] for m in wrapped)
