"""Leaderboard judges (issue 10): independent, calibrated scorers of final outputs, trained on data no method or
annotator sees. `core` holds the four registered judges, `models` the linear heads, `features` the cached frozen
embeddings, `calibration` Platt/temperature scaling and ECE, `refusal` the string-matching baseline. See docs/judges.md."""
