"""Schemathesis hooks for `cargo xtask contract`.

Two request parts are valid only when the server issued them, which a schema cannot say, so
generated *valid* requests (the ones the API must accept) get them the way a real client does.
Requests meant to be invalid keep whatever was generated: the API must still reject those.

- `Idempotency-Key`: a client sends a fresh key per logical request. A key generated twice
  with different bodies is rightly refused (422 `idempotency_key_reused`), and one generated
  twice with the same body replays the first answer (which may name a note deleted since).
- `cursor`: an opaque value taken from a previous page's `next_cursor`; any other string is
  rightly refused (422). Valid requests ask for the first page.
"""

import uuid

import schemathesis


def _is_positive(case):
    meta = case.meta
    return meta is None or meta.generation.mode.is_positive


@schemathesis.hook
def map_case(context, case):
    if not _is_positive(case):
        return case
    if case.headers:
        for name in list(case.headers):
            if name.lower() == "idempotency-key":
                case.headers[name] = uuid.uuid4().hex
    if case.query and "cursor" in case.query:
        del case.query["cursor"]
    return case
