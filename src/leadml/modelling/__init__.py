"""Split, guards, models, selection, calibration, evaluation, training and the scorer (pure)."""
