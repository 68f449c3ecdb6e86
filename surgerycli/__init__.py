"""surgery: sink divergence and the Surgery defense against harmful fine-tuning."""
