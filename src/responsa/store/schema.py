"""The versioned schema, one list of migrations per database engine.

A migration is applied once, in order, inside a transaction, and recorded in
`schema_version`. Add new steps at the end of both lists; never edit an applied one.
"""

from __future__ import annotations

SQLITE: list[str] = [
    # 1: responses, items, events, files, secrets
    """
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        background INTEGER NOT NULL DEFAULT 0,
        previous_response_id TEXT,
        body BLOB NOT NULL,
        run_request BLOB,
        lease_owner TEXT,
        lease_until INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX responses_expires ON responses (expires_at);
    CREATE INDEX responses_running ON responses (lease_owner) WHERE status IN ('queued', 'in_progress');
    CREATE TABLE items (
        response_id TEXT NOT NULL,
        kind INTEGER NOT NULL,          -- 0 input, 1 output
        position INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (response_id, kind, position)
    ) WITHOUT ROWID;
    CREATE INDEX items_by_id ON items (owner, item_id);
    CREATE TABLE events (
        response_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (response_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        mime_type TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX files_owner ON files (owner, created_at);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
    # 2: background responses with store=false (kept only while they run, plus a short window)
    """
    ALTER TABLE responses ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: API keys made by `responsa keys` (a hash of each secret, never the secret), and the
    # requests each made in the current minute, for its limit
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        project TEXT,
        owner TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        rotated_at INTEGER,
        revoked_at INTEGER,
        requests_per_minute INTEGER
    );
    CREATE TABLE key_usage (
        key_id TEXT NOT NULL,
        minute INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        PRIMARY KEY (key_id, minute)
    ) WITHOUT ROWID;
    """,
    # 4: conversations and their items; a response remembers the conversation it runs on
    """
    ALTER TABLE responses ADD COLUMN conversation_id TEXT;
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        metadata BLOB NOT NULL,
        next_position INTEGER NOT NULL DEFAULT 0,  -- the position of the next item appended
        revision INTEGER NOT NULL DEFAULT 0,       -- bumped when an item is deleted: older copies are stale
        busy_response TEXT,                        -- the response running on it (it appends when it ends)
        busy_until INTEGER                         -- until when that response's lease holds
    );
    CREATE INDEX conversations_expires ON conversations (expires_at);
    CREATE INDEX conversations_busy ON conversations (busy_response) WHERE busy_response IS NOT NULL;
    CREATE TABLE conversation_items (
        conversation_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (conversation_id, position)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX conversation_items_by_id ON conversation_items (conversation_id, item_id);
    """,
    # quotas and usage: more limits per key (JSON) and per project, the windows that count
    # requests and tokens against them, the streams and background runs each holds, and the usage
    # of each key per model and day
    """
    ALTER TABLE api_keys ADD COLUMN limits TEXT;
    CREATE TABLE project_limits (
        project TEXT PRIMARY KEY,
        limits TEXT NOT NULL
    );
    CREATE TABLE rate_windows (
        scope TEXT NOT NULL,            -- key:<id> or project:<name>
        span INTEGER NOT NULL,          -- the window's length, ms
        started INTEGER NOT NULL,       -- ms since the epoch
        requests INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        PRIMARY KEY (scope, span)
    ) WITHOUT ROWID;
    CREATE TABLE quota_slots (
        scope TEXT PRIMARY KEY,         -- streams:key:<id>, background:project:<name>, ...
        slots TEXT NOT NULL             -- JSON: {slot id: held until, ms}
    ) WITHOUT ROWID;
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key TEXT NOT NULL,
        project TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        PRIMARY KEY (day, key, project, model)
    ) WITHOUT ROWID;
    """,
    # 6: listing responses newest first (GET /responses, the console): per owner, and every
    # owner's for the admin key; the responses continuing one (the console's chain view); a key's
    # conversations newest first (the console)
    """
    CREATE INDEX responses_owner_created ON responses (owner, created_at, id);
    CREATE INDEX responses_created ON responses (created_at, id);
    CREATE INDEX responses_previous ON responses (previous_response_id) WHERE previous_response_id IS NOT NULL;
    CREATE INDEX conversations_owner_created ON conversations (owner, created_at, id);
    """,
    # 7: vector stores: their files, the chunks (full-text indexed) and vectors, file batches
    """
    CREATE TABLE vector_stores (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        metadata BLOB NOT NULL,
        expires_after_days INTEGER,
        last_active_at INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 0    -- bumped when its chunks change (cached vectors go stale)
    );
    CREATE INDEX vector_stores_owner ON vector_stores (owner, created_at);
    CREATE TABLE vector_store_files (
        vector_store_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        seq INTEGER NOT NULL,                 -- attach order, the list cursor
        filename TEXT NOT NULL,
        status TEXT NOT NULL,
        last_error BLOB,
        attributes BLOB NOT NULL,
        chunking BLOB NOT NULL,
        usage_bytes INTEGER NOT NULL DEFAULT 0,
        batch_id TEXT,
        lease_owner TEXT,                     -- the process ingesting it, and until when (see vectors/ingest.py)
        lease_until INTEGER,
        PRIMARY KEY (vector_store_id, file_id)
    );
    CREATE INDEX vector_store_files_pending ON vector_store_files (lease_until) WHERE status = 'in_progress';
    CREATE INDEX vector_store_files_batch ON vector_store_files (batch_id) WHERE batch_id IS NOT NULL;
    CREATE TABLE vector_chunks (
        id INTEGER PRIMARY KEY,
        vector_store_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB                        -- float32, unit length; NULL without an embedder
    );
    CREATE INDEX vector_chunks_file ON vector_chunks (vector_store_id, file_id, position);
    CREATE VIRTUAL TABLE vector_chunks_fts USING fts5(text, content='vector_chunks', content_rowid='id',
                                                      tokenize='porter unicode61');
    CREATE TABLE vector_file_batches (
        id TEXT PRIMARY KEY,
        vector_store_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        cancelled INTEGER NOT NULL DEFAULT 0
    );
    """,
    # vector stores past their expiry are removed by the expiry sweep: first the store, its files and
    # batches (at once), then its chunks a bounded batch at a time; this lists stores whose chunks remain
    """
    CREATE TABLE vector_store_purges (vector_store_id TEXT PRIMARY KEY);
    CREATE INDEX vector_stores_expiring ON vector_stores (last_active_at) WHERE expires_after_days IS NOT NULL;
    """,
]

POSTGRES: list[str] = [
    """
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        background BOOLEAN NOT NULL DEFAULT FALSE,
        previous_response_id TEXT,
        body BYTEA NOT NULL,
        run_request BYTEA,
        lease_owner TEXT,
        lease_until BIGINT,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX responses_expires ON responses (expires_at);
    CREATE INDEX responses_running ON responses (lease_owner) WHERE status IN ('queued', 'in_progress');
    CREATE TABLE items (
        response_id TEXT NOT NULL,
        kind SMALLINT NOT NULL,
        position INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (response_id, kind, position)
    );
    CREATE INDEX items_by_id ON items (owner, item_id);
    CREATE TABLE events (
        response_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (response_id, seq)
    );
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        mime_type TEXT NOT NULL,
        data BYTEA NOT NULL
    );
    CREATE INDEX files_owner ON files (owner, created_at);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    """,
    """
    ALTER TABLE responses ADD COLUMN ephemeral BOOLEAN NOT NULL DEFAULT FALSE;
    """,
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        project TEXT,
        owner TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        rotated_at BIGINT,
        revoked_at BIGINT,
        requests_per_minute INTEGER
    );
    CREATE TABLE key_usage (
        key_id TEXT NOT NULL,
        minute BIGINT NOT NULL,
        requests INTEGER NOT NULL,
        PRIMARY KEY (key_id, minute)
    );
    """,
    """
    ALTER TABLE responses ADD COLUMN conversation_id TEXT;
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        metadata BYTEA NOT NULL,
        next_position INTEGER NOT NULL DEFAULT 0,  -- the position of the next item appended
        revision INTEGER NOT NULL DEFAULT 0,       -- bumped when an item is deleted: older copies are stale
        busy_response TEXT,                        -- the response running on it (it appends when it ends)
        busy_until BIGINT                          -- until when that response's lease holds
    );
    CREATE INDEX conversations_expires ON conversations (expires_at);
    CREATE INDEX conversations_busy ON conversations (busy_response) WHERE busy_response IS NOT NULL;
    CREATE TABLE conversation_items (
        conversation_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (conversation_id, position)
    );
    CREATE UNIQUE INDEX conversation_items_by_id ON conversation_items (conversation_id, item_id);
    """,
    """
    ALTER TABLE api_keys ADD COLUMN limits TEXT;
    CREATE TABLE project_limits (
        project TEXT PRIMARY KEY,
        limits TEXT NOT NULL
    );
    CREATE TABLE rate_windows (
        scope TEXT NOT NULL,
        span BIGINT NOT NULL,
        started BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        tokens BIGINT NOT NULL,
        PRIMARY KEY (scope, span)
    );
    CREATE TABLE quota_slots (
        scope TEXT PRIMARY KEY,
        slots JSONB NOT NULL
    );
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key TEXT NOT NULL,
        project TEXT NOT NULL,
        model TEXT NOT NULL,
        requests BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (day, key, project, model)
    );
    """,
    # 6: listing responses newest first (GET /responses, the console): per owner, and every
    # owner's for the admin key; the responses continuing one (the console's chain view); a key's
    # conversations newest first (the console)
    """
    CREATE INDEX responses_owner_created ON responses (owner, created_at, id);
    CREATE INDEX responses_created ON responses (created_at, id);
    CREATE INDEX responses_previous ON responses (previous_response_id) WHERE previous_response_id IS NOT NULL;
    CREATE INDEX conversations_owner_created ON conversations (owner, created_at, id);
    """,
    """
    CREATE TABLE vector_stores (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        metadata BYTEA NOT NULL,
        expires_after_days INTEGER,
        last_active_at BIGINT NOT NULL,
        version BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX vector_stores_owner ON vector_stores (owner, created_at);
    CREATE TABLE vector_store_files (
        vector_store_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        seq BIGSERIAL,
        filename TEXT NOT NULL,
        status TEXT NOT NULL,
        last_error BYTEA,
        attributes BYTEA NOT NULL,
        chunking BYTEA NOT NULL,
        usage_bytes BIGINT NOT NULL DEFAULT 0,
        batch_id TEXT,
        lease_owner TEXT,
        lease_until BIGINT,
        PRIMARY KEY (vector_store_id, file_id)
    );
    CREATE INDEX vector_store_files_pending ON vector_store_files (lease_until) WHERE status = 'in_progress';
    CREATE INDEX vector_store_files_batch ON vector_store_files (batch_id) WHERE batch_id IS NOT NULL;
    CREATE TABLE vector_chunks (
        id BIGSERIAL PRIMARY KEY,
        vector_store_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        embedding BYTEA,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
    );
    CREATE INDEX vector_chunks_file ON vector_chunks (vector_store_id, file_id, position);
    CREATE INDEX vector_chunks_tsv ON vector_chunks USING GIN (tsv);
    CREATE TABLE vector_file_batches (
        id TEXT PRIMARY KEY,
        vector_store_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        cancelled BOOLEAN NOT NULL DEFAULT FALSE
    );
    """,
    """
    CREATE TABLE vector_store_purges (vector_store_id TEXT PRIMARY KEY);
    CREATE INDEX vector_stores_expiring ON vector_stores (last_active_at) WHERE expires_after_days IS NOT NULL;
    """,
]

assert len(SQLITE) == len(POSTGRES), "every migration needs both dialects"
LATEST = len(SQLITE)
