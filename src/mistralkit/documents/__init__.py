"""Document collections (``mistralkit docs``): extraction, structured chunks, SQLite FTS5 + sqlite-vec,
hybrid retrieval, and answers whose citations are checked.

>>> from mistralkit.documents import Collection
>>> with Collection.open("notes", create=True) as notes:  # doctest: +SKIP
...     notes.add_roots(["./records"]); notes.sync()
...     [hit.chunk.path for hit in notes.search("discharge date", k=3)]
"""

from .collection import MODES, Collection, FileReport, Hit, SyncReport, list_collections, remove_collection

__all__ = ["MODES", "Collection", "FileReport", "Hit", "SyncReport", "list_collections", "remove_collection"]
