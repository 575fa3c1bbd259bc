"""The lean pipeline's request class: quart-trio's, without two per-request costs.

* ``blueprints`` (read three times a request, by ``preprocess_request``,
  ``process_response`` and ``do_teardown_request``) runs an ``import`` statement
  on every read in Quart; here the helper is imported once.
* ``content_length`` (read when the request is built, for its body) looks up
  ``Content-Length`` and ``Transfer-Encoding`` with ``Headers.get``, which, for a
  header that is absent -- most requests have neither -- builds and catches a
  ``BadRequestKeyError``; here the headers are read in one pass instead.

Both give the values Quart's own would.
"""

from __future__ import annotations

from quart.helpers import _split_blueprint_path
from quart_trio.wrappers import TrioRequest
from werkzeug.sansio.utils import get_content_length
from werkzeug.utils import cached_property

__all__ = ["LeanRequest"]


class LeanRequest(TrioRequest):
    """A ``request_class`` for QuartTrio: :class:`~quart_trio.wrappers.TrioRequest`
    with ``blueprints`` and ``content_length`` computed without waste."""

    @property
    def blueprints(self) -> list[str]:
        blueprint = self.blueprint
        return [] if blueprint is None else _split_blueprint_path(blueprint)

    @cached_property
    def content_length(self) -> int | None:  # type: ignore[override]
        length = encoding = None
        for name, value in self.headers:  # the first of each, as Headers.get finds it
            lowered = name.lower()
            if lowered == "content-length":
                if length is None:
                    length = value
            elif lowered == "transfer-encoding" and encoding is None:
                encoding = value
        return get_content_length(http_content_length=length, http_transfer_encoding=encoding)
