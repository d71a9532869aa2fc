"""Training adapters: thin layers that build TRL trainers from `cai` data and settings.

TRL is kept behind this package so that version differences (and a later switch from PPO to
TRL's maintained RL trainers) touch only these modules. Nothing heavy is imported here: the
CLI imports `cai.train.sft` inside its command so `cai --help` never loads torch.
"""
