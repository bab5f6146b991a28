"""Training logic: one LightningModule per DAWN stage, shared callbacks, the LightningCLI."""
