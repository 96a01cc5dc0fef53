"""Training: the reward-data store, TRL trainers, GGUF LoRA export, the job runner. No Qt.

Jobs never touch the network. Importing this package sets the Hugging Face libraries'
offline switches (unless already set), before any job imports transformers or TRL: their
trainers otherwise send telemetry to the model hub, and a missing file would be looked
for there. ``diptych`` (the CLI) sets the same on start, for every command.
"""

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}


def stay_offline() -> None:
    """Set the offline switches in ``os.environ`` where they are not set already."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


stay_offline()
