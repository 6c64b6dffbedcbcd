"""Model conversion and verification: checkpoints -> TFLite, golden checks."""
