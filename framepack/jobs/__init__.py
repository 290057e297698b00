"""The request model shared by every face, plus job queue and state."""
