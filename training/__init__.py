"""Training: the reward-data store, TRL trainers, GGUF LoRA export, the job runner. No Qt."""
