"""The Qt desktop application: widgets, workers and wiring over diptych.models and diptych.training."""
