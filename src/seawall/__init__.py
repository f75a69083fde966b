"""seawall: detect unsafe LLM responses, restore safety to fine-tuned models, measure both."""

__version__ = "0.1.0"
