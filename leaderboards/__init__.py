"""Leaderboards over the run store, their exports (terminal, md, csv, html) and the W&B tracker.

Import-light: `bench --help` must not import wandb, matplotlib or torch; each module imports them lazily.
"""
