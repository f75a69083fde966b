"""Evaluation: harmful-response rate per judge, over-refusal, task utility, the experiment runner and reports."""
