"""Real-dataset preparation: face tracking and crops, audio, pose and blink annotations."""
