"""Inference: load trained models from any checkpoint format (`pipeline`), drive them with PBNet or
given signals (`pose_blink`), and turn a portrait + speech into video (`generate`) or a test split into
metrics (`evaluate`).  Above `stages/` in the layering: training code never imports this package."""
