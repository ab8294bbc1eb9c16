"""What each served operation takes as its first parameter, checked before the model sees it.

Pure: no I/O. A worker calls :func:`check_arguments` on every request, so that a mistyped
argument (a 64 MiB array sent to ``embed``, a number as a prompt) is refused at once with an
:class:`~mlsup.errors.InvalidArgument` naming the parameter, instead of being converted by
the runtime (a Python list of millions of floats) and failing somewhere inside it.

Only the first parameter of each operation is checked: it is the data; the options after it
(``temperature``, ``max_tokens``, ...) differ between runtimes and are theirs to check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlsup.errors import InvalidArgument

__all__ = ["SIGNATURES", "Parameter", "check_arguments"]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _texts(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(text, str) for text in value)
    )


def _messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(message, dict) and all(isinstance(key, str) for key in message)
        for message in value
    )


def _audio(value: Any) -> bool:
    # A waveform (a numpy array: tensors arrive as arrays), or a file path, or encoded bytes.
    return isinstance(value, str | bytes) or hasattr(value, "__array_interface__")


def _anything(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Parameter:
    """An operation's first parameter: its name, what it must be (in words), and the check."""

    name: str
    must_be: str
    accepts: Callable[[Any], bool]


#: The first parameter of every operation a worker serves (see ``mlsup.kit.worker.OPERATIONS``).
SIGNATURES: Final[dict[str, Parameter]] = {
    "chat": Parameter(
        "messages", "a list of message maps ({'role': ..., 'content': ...})", _messages
    ),
    "complete": Parameter("prompt", "a string", _text),
    "generate": Parameter("prompt", "a string", _text),
    "embed": Parameter("texts", "a list of strings (or one string)", _texts),
    "tokenize": Parameter("text", "a string", _text),
    "generate_image": Parameter("prompt", "a string", _text),
    "transcribe": Parameter("audio", "a numpy array of samples, a file path or bytes", _audio),
    "run": Parameter("inputs", "anything the model takes", _anything),
}


def describe(value: Any) -> str:
    """A short name of value's type for an error message (arrays with dtype and shape)."""
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is not None and shape is not None:
        return f"an array of {dtype} with shape {tuple(shape)}"
    if isinstance(value, list) and value:
        odd = next((item for item in value if not isinstance(item, str)), value[0])
        return f"a list holding {type(odd).__name__}"
    return f"a {type(value).__name__}"


def check_arguments(op: str, positional: Sequence[Any], keywords: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidArgument` unless ``op(*positional, **keywords)`` passes its data
    parameter once and of the right type. Operations not listed are not checked."""
    parameter = SIGNATURES.get(op.removesuffix(".stream"))
    if parameter is None:
        return
    name = parameter.name
    if positional and name in keywords:
        raise InvalidArgument(f"{op}: parameter {name!r} given twice", op=op, parameter=name)
    if not positional and name not in keywords:
        raise InvalidArgument(
            f"{op}: parameter {name!r} is missing; it must be {parameter.must_be}",
            op=op,
            parameter=name,
        )
    value = positional[0] if positional else keywords[name]
    if not parameter.accepts(value):
        raise InvalidArgument(
            f"{op}: parameter {name!r} must be {parameter.must_be}, not {describe(value)}",
            op=op,
            parameter=name,
        )
