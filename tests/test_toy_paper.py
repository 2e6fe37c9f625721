"""The plug-in contract, proven by a test-only paper (tests/toy_paper/) that changes no file of avgen.

Through the ``avgen`` command: ``avgen fit`` trains it and ``avgen generate`` takes its own option
(``--noise_scale``, declared by its options dataclass), once in the console script with the paper on
PYTHONPATH; ``--help`` lists the option, ``avgen summary`` counts the paper (fit, help and summary run
in-process ``avgen.cli.main``, the console script's entry), and the checkpoint reloads as the toy paper's
model (``weights_only=True``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

TESTS = Path(__file__).resolve().parent
CONFIG = str(TESTS / "toy_paper" / "tiny.yaml")
AVGEN = str(Path(sys.executable).parent / "avgen")
pytestmark = pytest.mark.slow


def avgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([AVGEN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from avgen.cli import main

    root = tmp_path_factory.mktemp("toy")
    main(["fit", "--config", CONFIG, f"--trainer.default_root_dir={root}"])  # toy_paper imports from tests/ (conftest)
    return next(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))


def test_fit_and_reload_through_the_contract(trained):
    sys.path.insert(0, str(TESTS))
    try:
        from avgen.checkpoints import load_model
        from toy_paper.module import ToyPaper

        model = load_model(trained)
        assert type(model).__name__ == ToyPaper.__name__ and type(model).__module__ == "toy_paper.module"
        checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == 6
        for key, value in model.state_dict().items():
            assert torch.equal(value, checkpoint["state_dict"][key]), key
    finally:
        sys.path.remove(str(TESTS))


def test_generate_takes_the_papers_own_option(trained, tmp_path, capsys):
    from avgen.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--config", CONFIG, "--help"])
    help_text = capsys.readouterr().out
    assert "--noise_scale" in help_text and "standard deviation of the initial noise" in help_text
    outputs = {}
    for scale in ("1.0", "0.0"):
        out = tmp_path / f"scale{scale}"
        args = ["generate", "--config", CONFIG, "--ckpt_path", str(trained), "--output_dir", str(out),
                "--noise_scale", scale, "--num_steps", "2", "--seed", "1", f"--trainer.default_root_dir={tmp_path}"]
        if scale == "1.0":
            avgen(*args, cwd=tmp_path)  # once through the console script
        else:
            main(args)
        files = sorted(out.glob("*.wav"))
        assert len(files) == 2
        outputs[scale] = [sf.read(str(f), dtype="float32")[0] for f in files]
    for a, b in zip(outputs["1.0"], outputs["0.0"]):
        assert a.shape == b.shape == (16000,)
        assert not np.allclose(a, b)  # the option reached the sampler


def test_summary_counts_the_toy_paper(capsys):
    from avgen.cli import main

    main(["summary", "--config", CONFIG])
    out = capsys.readouterr().out
    total = int(re.search(r"total parameters: ([\d,]+)", out).group(1).replace(",", ""))
    sys.path.insert(0, str(TESTS))
    try:
        import toy_paper.network  # noqa: F401  (registers toy-s, toy-m)
        from avgen.models import create_network, list_networks

        assert {"toy-s", "toy-m"} <= set(list_networks("toy-*"))
        network = create_network("toy-s", device="meta")
        assert total == sum(p.numel() for p in network.parameters())  # MelCodec has no weights
    finally:
        sys.path.remove(str(TESTS))
