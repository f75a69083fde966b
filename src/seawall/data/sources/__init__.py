"""Importing this package registers every dataset of shared/data with `seawall.data.DATASETS`."""

from seawall.data.sources import instructions, prompts, responses, tasks, texts

__all__ = ["instructions", "prompts", "responses", "tasks", "texts"]
