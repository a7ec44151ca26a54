"""The online service: FastAPI over ONNX Runtime, serving what conversion/ publishes in model_store/.

Entry point: `uvicorn --factory app.main:create_app`. Never imports torch or transformers.
"""
