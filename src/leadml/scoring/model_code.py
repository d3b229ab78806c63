"""The code MLflow logs as the leadml model (models-from-code): an empty pyfunc whose
``load_context`` reads the scorer from the model's data files. Never imported by leadml."""

import mlflow.models

from leadml.scoring.pyfunc import LeadScorerModel

mlflow.models.set_model(LeadScorerModel())
