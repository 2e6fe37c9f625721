"""configs/foleygenex/paper.yaml builds at MMAudio-L-44.1kHz size (meta device) with the paper's recipe."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

from avgen.training import WarmupStepLR

PAPER = Path(__file__).resolve().parents[2] / "configs" / "foleygenex" / "paper.yaml"


def test_paper_config_backbone_is_within_2_percent_of_1_03b(capsys):
    from avgen.cli import main

    main(["summary", "--config", str(PAPER)])
    out = capsys.readouterr().out
    counts = {m.group(1): int(m.group(2).replace(",", "")) for m in re.finditer(r"^(\S+): ([\d,]+)$", out, re.M)}
    backbone = counts["network"] - counts["network.input_embedding"]
    assert abs(backbone - 1.03e9) / 1.03e9 < 0.02, backbone
    assert counts["network.input_embedding"] < 1e5  # FoleyGenEx's addition is tiny
    assert counts["ema_network"] == counts["network"]


def test_paper_config_recipe():
    cfg = yaml.safe_load(PAPER.read_text())
    from avgen.models import network_preset

    model = {**network_preset(cfg["model"]["init_args"]["network"]).kwargs, **cfg["model"]["init_args"]}
    assert (model["hidden_dim"], model["num_heads"], model["num_joint_blocks"], model["num_single_blocks"]) == (896, 14, 7, 14)
    assert model["cfg_scale"] == 4.5 and model["num_sampling_steps"] == 25 and model["mask_strategy"] == "full"
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["trainer"]["strategy"] == "ddp"
    assert cfg["data"]["init_args"]["batch_size"] * cfg["trainer"]["devices"] * cfg["trainer"]["num_nodes"] == 256
    opt = model["optimizer"]["init_args"]
    assert opt["lr"] == 1e-4 and opt["betas"] == [0.9, 0.95] and opt["weight_decay"] == 1e-6
    assert model["codec"]["init_args"]["vocoder_pretrained"] == "nvidia/bigvgan_v2_44khz_128band_512x"


def test_warmup_step_schedule_follows_mmaudio():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-4)
    scheduler = WarmupStepLR(optimizer, warmup_steps=10, milestones=[30, 50], gamma=0.1)
    lrs = []
    for _ in range(60):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1e-4 * min(1.0, (s + 1) / 10) * 0.1 ** ((s >= 30) + (s >= 50)) for s in range(60)]
    for got, want in zip(lrs, expected):
        assert abs(got - want) < 1e-12
