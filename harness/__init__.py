"""SafeAlign Bench harness: CLI, config, registries, data, models, generation and runs.

Import-light on purpose: `bench --help` must not import torch, transformers or vllm.
"""

__version__ = "0.1.0"
