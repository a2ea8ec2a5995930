"""PPO and PPO-ptx against a reward model (InstructGPT's RL stage).

``rollout -> shape rewards -> advantages -> PPO epochs``: :mod:`rollout` samples responses and
gathers log-probs, reference log-probs, values and scores; :mod:`advantages` shapes per-token
rewards and computes GAE; :mod:`loss` holds the clipped policy and value losses; :mod:`kl_control`
the fixed and adaptive KL coefficients; :mod:`ptx` the pretraining term; :mod:`train` the loop.
"""
