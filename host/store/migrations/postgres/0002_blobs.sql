-- Content-addressed binary blobs (plug-in components, later workload images).
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY, -- sha256:<hex> of data
    data   BYTEA NOT NULL
);
