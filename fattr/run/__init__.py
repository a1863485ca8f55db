"""Dataset-scale attribution, the command line and the demo."""
