"""Fine-tuning: training data (data.py); the loss masks are formats/layout.py, shared with evaluate."""
