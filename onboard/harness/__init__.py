"""The engine: specs, sessions, data, runner, results. Nothing model-specific lives here."""
