"""Lab recipes: align (safety SFT), degrade (harmful fine-tuning) and customize (task fine-tuning) chat models."""
