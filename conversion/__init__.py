"""Offline conversion: fine-tuned Hugging Face checkpoints -> validated, compressed ONNX versions in model_store/."""
