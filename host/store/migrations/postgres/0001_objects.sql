-- Kapsel object store, PostgreSQL schema 1.
-- One row per live object; one row per change (the watch log, compacted).
CREATE TABLE kapsel_meta (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    revision  BIGINT NOT NULL, -- the global revision: the latest change's
    compacted BIGINT NOT NULL  -- changes at or below this revision are gone
);
INSERT INTO kapsel_meta (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE objects (
    resource  TEXT   NOT NULL, -- store key of the kind: pods, tokens.kapsel.io
    namespace TEXT   NOT NULL, -- '' for cluster-scoped kinds
    name      TEXT   NOT NULL,
    revision  BIGINT NOT NULL, -- revision of the last change to this object
    data      TEXT   NOT NULL, -- the object as JSON, resourceVersion included
    PRIMARY KEY (resource, namespace, name)
);
CREATE INDEX objects_by_namespace ON objects (namespace);

CREATE TABLE changes (
    revision  BIGINT PRIMARY KEY,
    type      TEXT   NOT NULL, -- ADDED, MODIFIED, DELETED
    resource  TEXT   NOT NULL,
    namespace TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    data      TEXT   NOT NULL, -- the object after the change (before it, for DELETED)
    previous  TEXT             -- the object before a MODIFIED change
);
CREATE INDEX changes_by_resource ON changes (resource, revision);
