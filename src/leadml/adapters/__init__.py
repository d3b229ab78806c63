"""Every outside system: file and SQL sources, score sinks, MLflow tracking."""
