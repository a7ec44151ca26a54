"""Offline conversion: fine-tuned Hugging Face checkpoints -> validated, compressed ONNX in model_store/."""
