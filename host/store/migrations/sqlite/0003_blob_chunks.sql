-- Blobs are written off the group commit: a big one in chunks, each its own
-- short transaction, then its row; and each row says when it was last
-- stored, so garbage collection spares blobs a write is about to reference.
ALTER TABLE blobs ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0; -- ms since the epoch of the last put
ALTER TABLE blobs ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;    -- 0: the bytes are in data; n: in blob_chunks 0..n-1

CREATE TABLE blob_chunks (
    digest    TEXT    NOT NULL, -- the blob's
    seq       INTEGER NOT NULL, -- 0, 1, …: the chunks in order
    data      BLOB    NOT NULL,
    stored_at INTEGER NOT NULL, -- ms since the epoch of the last put
    PRIMARY KEY (digest, seq)
) WITHOUT ROWID;
