"""IntraDA for the Hugging Face ecosystem: models, processor, losses, ranking and metrics."""
