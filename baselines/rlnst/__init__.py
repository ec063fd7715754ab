"""RL-NST pixel-space image and video models.

Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement
Learning" (IJCAI 2023).
Ported from the public RL-I2IT code (github.com/lesley222/HJAILab-OPEN, folders
``RL-I2IT/RL-I2IT-ImageStyleTransfer`` and ``RL-I2IT/RL-I2IT-VideoStyleTranfer``).
Import from the submodules: ``models``, ``agent``, ``train``, ``inference``.
"""
