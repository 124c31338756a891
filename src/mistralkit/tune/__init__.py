"""Fine-tuning: training data (data.py), loss masks (masks.py)."""
