"""Running a model: loading it (checkpoint, official file, export), the predictor protocol, the prediction loop."""
