"""Scoring as pure functions, the pandas and Spark engines, requests and the MLflow pyfunc."""
