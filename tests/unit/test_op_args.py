"""The per-operation argument check a worker runs before its model sees a request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlsup.errors import InvalidArgument
from mlsup.kit.op_args import SIGNATURES, check_arguments
from mlsup.kit.worker import OPERATIONS

GOOD: list[tuple[str, list[Any], dict[str, Any]]] = [
    ("embed", [["a", "b"]], {}),
    ("embed", ["one"], {}),
    ("embed", [], {"texts": []}),
    ("chat", [[{"role": "user", "content": "hi"}]], {"temperature": 0}),
    ("chat.stream", [[{"role": "user", "content": "hi"}]], {"stream": True}),
    ("complete", ["abc"], {"max_tokens": 3}),
    ("generate", [], {"prompt": "abc"}),
    ("tokenize", ["abc"], {}),
    ("generate_image", ["a cat"], {"steps": 2}),
    ("transcribe", [np.zeros(16, dtype=np.float32)], {}),
    ("transcribe", ["/tmp/a.wav"], {}),
    ("run", [{"x": np.zeros(3)}], {}),
    ("some_custom_op", [object()], {}),  # not one of ours: the model checks it
]

BAD: list[tuple[str, list[Any], dict[str, Any], str]] = [
    ("embed", [np.zeros(8, dtype=np.float32)], {}, r"'texts' must be .* array of float32"),
    ("embed", [["a", 3]], {}, "'texts' must be a list of strings .*, not a list holding int"),
    ("embed", [], {}, "'texts' is missing"),
    ("embed", [["a"]], {"texts": ["b"]}, "'texts' given twice"),
    ("complete", [b"bytes"], {}, "'prompt' must be a string, not a bytes"),
    ("complete.stream", [], {"prompt": ["a"]}, "'prompt' must be a string"),
    ("chat", ["hello"], {}, "'messages' must be a list of message maps"),
    ("chat", [[{1: "x"}]], {}, "'messages' must be a list of message maps"),
    ("tokenize", [None], {}, "'text' must be a string, not a NoneType"),
    ("transcribe", [42], {}, "'audio' must be"),
]


@pytest.mark.parametrize(("op", "args", "kwargs"), GOOD)
def test_good_arguments_pass(op: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    check_arguments(op, args, kwargs)


@pytest.mark.parametrize(("op", "args", "kwargs", "message"), BAD)
def test_bad_arguments_name_the_parameter(
    op: str, args: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        check_arguments(op, args, kwargs)
    assert caught.value.context["parameter"] == SIGNATURES[op.removesuffix(".stream")].name
    assert caught.value.context["op"] == op


def test_every_served_operation_has_a_signature() -> None:
    assert set(SIGNATURES) == set(OPERATIONS)
