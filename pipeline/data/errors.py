"""Errors raised while reading a dataset.

Two levels, on purpose:

* :class:`DataError` is fatal: the dataset as a whole cannot be used (malformed JSON, a
  missing top-level key, an annotation pointing at a category that does not exist, a hostile
  ZIP, nothing left to train on). The message names the file, the entry and what to do.
* Per-file problems (a missing or corrupt image, a box outside its image) are *warnings*:
  the one image or annotation is skipped, the message is appended to ``Dataset.warnings``
  and logged, and the rest of the dataset loads. One bad file among thousands should not
  cost a user their run, but it must never vanish silently either.
"""

from __future__ import annotations


class DataError(ValueError):
    """The dataset cannot be loaded; the message says which file, which entry, and the fix.

    Example::

        shelf.zip: annotations.json: annotation 17 refers to category 9, which is not in
        "categories" (known ids: 1, 2, 3); add the category or fix the annotation
    """


def os_reason(exc: OSError) -> str:
    """An OS error without its file name: the path may be the server's (a temporary folder),
    which a user must not see, and the message already names the file in the user's terms."""
    return exc.strerror or type(exc).__name__
