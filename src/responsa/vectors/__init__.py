"""Vector stores and the file_search tool.

- `chunking.py`: a file's text (text, Markdown, HTML, PDF, code) cut into overlapping chunks.
- `embed.py`: embedders: an engine's `/embeddings`, or the embedded all-MiniLM-L6-v2 (`minilm.py`).
- `ingest.py`: the background worker that turns attached files into chunks, with leases.
- `search.py`: hybrid search: the store's full-text index and dense vectors, fused by rank.
- `api.py`: the Vector Stores API routes; `tool.py`: the `file_search` tool kind.

Rows live in the main store (store/sqlite_vectors.py, store/postgres_vectors.py).
"""
