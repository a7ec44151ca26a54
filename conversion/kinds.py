"""Names shared by every conversion step and by the model store manifest."""

from typing import Literal

ModelKind = Literal["sequence-classification", "cross-encoder", "bi-encoder"]
Task = Literal["sentiment", "ranking", "embedding"]
Precision = Literal["fp32", "fp16", "int8"]

TASK_OF_KIND: dict[str, Task] = {
    "sequence-classification": "sentiment",
    "cross-encoder": "ranking",
    "bi-encoder": "embedding",
}
