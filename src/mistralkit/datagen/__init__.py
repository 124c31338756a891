"""``mistralkit datagen``: an instruction server that builds balanced fine-tuning data from a spec."""
