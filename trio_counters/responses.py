"""The API's responses: one line of ``text/plain; charset=utf-8``, built cheaply."""

from __future__ import annotations

from typing import Any

from quart_trio.wrappers import TrioResponse
from werkzeug.datastructures import Headers
from werkzeug.utils import get_content_type

__all__ = ["TextResponse", "text"]


class TextResponse(TrioResponse):
    """Responses default to ``text/plain``: the API speaks one line of text.

    A handler's ``str`` (every answer but ``/stats`` and ``/metrics``) is made into
    the response TrioResponse would build -- the same headers in the same order --
    without its per-response lookups: the absent Content-Type header it looks for
    (an exception caught inside werkzeug), the MIME type's charset, the status text.
    """

    default_mimetype = "text/plain"

    def __init__(
        self,
        response: Any = None,
        status: int | None = None,
        headers: Any = None,
        mimetype: str | None = None,
        content_type: str | None = None,
    ) -> None:
        if type(response) is not str or headers is not None or mimetype is not None or content_type is not None:
            super().__init__(response, status, headers, mimetype, content_type)
            return
        data = response.encode()
        self.headers = Headers(((_CONTENT_TYPE, _TEXT), (_CONTENT_LENGTH, str(len(data)))))
        self.status = 200 if status is None else status
        self.timeout = Ellipsis
        self.response = self.data_body_class(data)


_CONTENT_TYPE, _CONTENT_LENGTH = "Content-Type", "Content-Length"
_TEXT = get_content_type(TextResponse.default_mimetype, "utf-8")


def text(body: str, status: int) -> TextResponse:
    """``body`` as one line, with ``status``."""
    return TextResponse(body + "\n", status=status)
