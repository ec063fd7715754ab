"""RLMiniStyler: Feng et al., "Light-weight RL Style Agent for Arbitrary Sequential Neural Style Generation",
IJCAI 2025.

One small model (about 0.37 M parameters) stylizes any style image step by
step. Ported from the public code (github.com/fengxiaoming520/RLMiniStyler,
``rl/nets.py``, ``rl/agent.py``, ``rl/env.py``). Import from the submodules:
``models``, ``losses``, ``agent``, ``train``, ``inference``.
"""
