"""What a request asks for: its parameters, decoded one way and checked.

Names and values come from the query string and, for a POST, a form body; both
are percent-decoded strictly, so that every counter name has one spelling, and
checked before the store is asked, so that a refused request changes nothing.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from quart import request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from .stores import INT64_MAX, INT64_MIN

__all__ = ["FORM_TYPE", "Params", "read_params", "decode", "counter_name", "counter_value"]

#: The one body type a form may come in (``curl -d``): percent-encoded, so every
#: name has one spelling. Multipart is refused (415): its fields carry raw bytes
#: that werkzeug decodes with replacement characters, so two names would meet.
FORM_TYPE = "application/x-www-form-urlencoded"

# ASCII digits only: str.isdigit() and int() would also take "٣", "1_000" and " 7 ".
_INTEGER = re.compile(r"[+-]?([0-9]+)")
# Control characters and Unicode line breaks: either would split the one-line body.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

Params = list[tuple[str, str]]


async def read_params() -> Params:
    """Query arguments, plus form fields for POST (``curl -d name=x localhost:8000/inc``),
    as ``(name, value)`` pairs in order: the query's first.

    Both are percent-decoded here, strictly: an escape that is not UTF-8 is refused
    (400), where werkzeug would keep it as text in a query (``c%FF``) and replace it
    in a form (``c\ufffd``), giving one counter several spellings.
    """
    current = request._get_current_object()
    params = decode(current.query_string, "query string")
    if current.method == "POST" and current.mimetype:
        mimetype = current.mimetype
        if mimetype != FORM_TYPE:
            if mimetype.startswith("multipart/"):
                raise UnsupportedMediaType(
                    f"send the form as {FORM_TYPE} (curl -d), or use the query string"
                )
            return params  # a body of another type carries no parameters
        params += decode(await current.get_data(cache=False), "form body")
    return params


def decode(raw: bytes, where: str) -> Params:
    """``name=value`` pairs, percent-decoded as UTF-8 with no replacement: exactly
    ``parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")``."""
    if raw.isascii() and b"%" not in raw and b"+" not in raw:
        # Nothing to decode (``name=i``, the usual query): parse_qsl's own split,
        # without its per-field replace and unquote.
        pairs = []
        for field in raw.decode("ascii").split("&"):
            if field:
                name, _, value = field.partition("=")
                pairs.append((name, value))
        return pairs
    try:
        return parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"{where} is not valid UTF-8 once percent-decoded") from None


def _single(params: Params, key: str) -> str:
    values = [value for name, value in params if name == key]
    if not values or values[0] == "":
        example = "?name=COUNTER" if key == "name" else "&val=INTEGER"
        raise BadRequest(f"missing {key}: give {example}")
    if len(values) > 1:
        raise BadRequest(f"{key} given {len(values)} times: give it once")
    return values[0]


def counter_name(params: Params, max_length: int) -> str:
    name = _single(params, "name")
    if len(name) > max_length:
        raise BadRequest(f"name is {len(name)} characters long; the limit is {max_length}")
    if _CONTROL.search(name):
        raise BadRequest("name must not contain control characters or line breaks")
    return name


def counter_value(params: Params) -> int:
    raw = _single(params, "val")
    match = _INTEGER.fullmatch(raw)
    if match is None:
        raise BadRequest("val must be a base-10 integer: an optional sign and ASCII digits")
    # Past 19 significant digits it is out of range; checking first also spares
    # int() a huge conversion.
    value = int(raw) if len(match[1].lstrip("0")) <= 19 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        raise BadRequest(f"val must be within the signed 64-bit range [{INT64_MIN}, {INT64_MAX}]")
    return value
