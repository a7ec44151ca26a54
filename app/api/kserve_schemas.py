"""Request and response bodies of the Open Inference Protocol (KServe v2) endpoints, JSON form."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.settings import MAX_LIST_ITEMS

MAX_TENSORS = 8


class KServeError(BaseModel):
    error: str = Field(
        ..., description="What went wrong (the protocol's error shape, which tritonclient reads)."
    )


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(..., description="-1: any size.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(..., description="The version being served.")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(..., description="Not the protocol's: model kind and label order.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=64)
    shape: list[int] = Field(..., max_length=8)
    datatype: str = Field(..., max_length=16, description="BYTES (UTF-8 text): the only type accepted.")
    data: list[Any] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="The elements, flat or nested in row-major order (absent when sent as binary data).",
    )
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=64)
    parameters: dict[str, Any] | None = Field(None, description="Accepted; outputs always come back as JSON.")


class InferRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "req-1",
                    "inputs": [
                        {
                            "name": "text",
                            "shape": [2],
                            "datatype": "BYTES",
                            "data": ["Battery died after two days.", "Great sound, fits well."],
                        }
                    ],
                }
            ]
        },
    )

    id: str | None = Field(None, max_length=128, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(None, description="Accepted and ignored.")
    inputs: list[InferInput] = Field(..., min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestedOutput] | None = Field(None, max_length=MAX_TENSORS)


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] = Field(..., description="Row-major.")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    model: str = Field(..., description="Not the protocol's: the service's own name of the model.")
    version: str
    outputs: list[OutputTensor]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "review-sentiment",
                    "model_version": "1",
                    "id": "req-1",
                    "model": "review-sentiment",
                    "version": "1",
                    "outputs": [
                        {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.96, 0.04]}
                    ],
                }
            ]
        }
    )
