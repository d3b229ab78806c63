"""The leadership report, the model report and card, the funnel forecast, plots and HTML."""
