"""Examples that use learnthumb; run them as modules from the repository root."""
