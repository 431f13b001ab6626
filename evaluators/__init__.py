"""Evaluators: score models (reward, cost, truthfulness), safety metrics with CIs, TruthfulQA MC, judges."""
