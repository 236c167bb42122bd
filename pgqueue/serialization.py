"""Turning a task call into JSON, with errors that name the argument at fault.

Arguments are stored as JSON: strings, numbers, booleans, None, lists and dicts
with string keys. Tuples arrive as lists. Anything else is refused at enqueue
time, before anything is written, with the argument's name, the path inside it
and its type.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any, Callable, Mapping, Sequence

from . import errors

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    return _encoder.encode(value)


def encode_meta(meta: Mapping[str, Any]) -> str:
    """A job's metadata as JSON text, or a clear error."""
    try:
        text = dumps(dict(meta))
    except (TypeError, ValueError) as exc:
        raise errors.ConfigurationError(f"meta must hold JSON values only: {exc}") from None
    if has_non_string_keys(dict(meta)) or has_nul(text):
        raise errors.ConfigurationError("meta must be a JSON object: string keys, no NUL characters")
    return check_encodable(text, "meta")


def has_nul(text: str) -> bool:
    """Whether JSON text may hold a NUL character (PostgreSQL's jsonb cannot store one)."""
    return "\\u0000" in text


def check_encodable(text: str, what: str) -> str:
    """Refuse text the database cannot store (lone surrogates: undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errors.ArgumentNotSerializable(
            f"{what} holds a string that is not valid Unicode ({exc.reason}), "
            "typically a file name or bytes decoded with errors='surrogateescape': pass it as valid "
            "text, e.g. name.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')"
        ) from None
    return text


class CallCheck:
    """Checks that a call fits a task's signature (caught at enqueue, not at run time).

    Positional-only calls, the common case of bulk enqueues, are checked by counting;
    anything else goes through ``inspect.Signature.bind``.
    """

    def __init__(self, func: Callable[..., Any], task_name: str) -> None:
        self.task_name = task_name
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            self.signature = None
            return
        params = list(self.signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._min = sum(1 for p in positional if p.default is p.empty)
        self._max = None if any(p.kind is p.VAR_POSITIONAL for p in params) else len(positional)
        self._counting = not any(
            p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params
        )

    def __call__(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        if self.signature is None:
            return
        if not kwargs and self._counting and self._min <= len(args) and (
                self._max is None or len(args) <= self._max):
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise errors.InvalidArguments(
                f"task {self.task_name!r} cannot be called with these arguments: {exc}"
            ) from None


_CONTAINERS = (dict, list, tuple)


def has_non_string_keys(value: Any) -> bool:
    """Whether a dict inside ``value`` has a key that is not a string. JSON would turn
    ``{1: "a"}`` into ``{"1": "a"}`` without a word: the task would get other data.
    (Iterative, and empty containers are skipped: 20,000 argument tuples of a bulk enqueue
    cost a loop, not 20,000 calls.)"""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict or isinstance(item, dict):
            for key, child in item.items():
                if type(key) is not str:
                    return True
                if child and isinstance(child, _CONTAINERS):
                    stack.append(child)
        else:
            for child in item:
                if child and isinstance(child, _CONTAINERS):
                    stack.append(child)
    return False


def encode_call(func: Callable[..., Any], task_name: str, args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """JSON texts of the positional and keyword arguments, or a precise error."""
    try:
        encoded = dumps(list(args)), dumps(dict(kwargs))
    except (TypeError, ValueError):
        encoded = None
    else:
        if not (has_non_string_keys(args) or has_non_string_keys(dict(kwargs))
                or has_nul(encoded[0]) or has_nul(encoded[1])):
            for text in encoded:
                check_encodable(text, f"an argument of task {task_name!r}")
            return encoded
    names = _parameter_names(func, len(args))
    for index, value in enumerate(args):
        _check(task_name, names[index], value)
    for key, value in kwargs.items():
        if "\x00" in key:
            raise errors.ArgumentNotSerializable(
                f"keyword argument {key!r} of task {task_name!r} has a NUL character in its name")
        _check(task_name, repr(key), value)
    if encoded is not None:
        # A false alarm: a string holding the six characters \u0000, not a NUL.
        for text in encoded:
            check_encodable(text, f"an argument of task {task_name!r}")
        return encoded
    # Should not be reached: report the whole call.
    raise errors.ArgumentNotSerializable(f"the arguments of task {task_name!r} cannot be stored as JSON")


def _parameter_names(func: Callable[..., Any], count: int) -> list[str]:
    names: list[str] = []
    try:
        for param in inspect.signature(func).parameters.values():
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                names.append(repr(param.name))
            elif param.kind is param.VAR_POSITIONAL:
                break
    except (TypeError, ValueError):
        pass
    return [names[i] if i < len(names) else f"#{i}" for i in range(count)]


def _check(task_name: str, argument: str, value: Any) -> None:
    problem = _first_problem(value, "")
    if problem is None:
        return
    path, bad = problem
    where = f"argument {argument}{path}" if path else f"argument {argument}"
    if isinstance(bad, float):
        what = f"the float {bad!r}, which JSON cannot represent"
    elif isinstance(bad, _Nul):
        what = (f"a string with a NUL character ({bad.text[:30]!r}), which PostgreSQL cannot store "
                "in JSON: remove it, or send the bytes encoded (base64)")
    elif isinstance(bad, _BadKey):
        what = (f"a dict key of type {type(bad.key).__name__}, which JSON would turn into a "
                f"string ({bad.key!r} -> {str(bad.key)!r})")
    else:
        what = f"of type {type(bad).__module__}.{type(bad).__qualname__}".replace("builtins.", "")
        what = f"a value {what}, which cannot be stored as JSON"
    if isinstance(bad, _Nul):
        raise errors.ArgumentNotSerializable(f"{where} of task {task_name!r} is {what}")
    raise errors.ArgumentNotSerializable(
        f"{where} of task {task_name!r} is {what}: pass JSON-compatible values "
        "(str, int, float, bool, None, list, dict with str keys), e.g. an id or an ISO date string"
    )


class _BadKey:
    def __init__(self, key: Any) -> None:
        self.key = key


class _Nul:
    def __init__(self, text: str) -> None:
        self.text = text


def _first_problem(value: Any, path: str) -> tuple[str, Any] | None:
    if isinstance(value, str):
        return (path, _Nul(value)) if "\x00" in value else None
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _first_problem(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}]", _BadKey(key)
            if "\x00" in key:
                return f"{path}[{key!r}]", _Nul(key)
            found = _first_problem(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return path, value
