"""A test-only paper: the plug-in contract of avgen, worked through in about 150 lines.

A new paper is one subpackage and one config folder; it changes no file of avgen. It brings:

1. ``network.py``: a plain ``nn.Module`` with the network contract (``preprocess_conditions`` once per
   sample -> a small conditions dataclass; ``predict_velocity(x_t, t, conditions, latent_mask)`` per
   ODE step), ending with its size presets (``register_network``).
2. ``tasks.py`` (here inside ``module.py``): its sampling options (a ``SamplingOptions`` subclass;
   every field becomes an ``avgen generate`` flag) and its ``GenerationInterface``.
3. ``module.py``: a ``FlowMatchingModule`` subclass that builds the network from a preset, encodes
   conditions once per batch (``encode_conditions``), builds each guidance branch's conditions
   (``make_conditions``) and names its interface (``generation = ...``).
4. a config (``tiny.yaml``) naming the module by its class path.

``tests/test_toy_paper.py`` runs ``avgen fit``, ``avgen generate --noise_scale ...``, ``avgen summary``
and a checkpoint reload with it.
"""
