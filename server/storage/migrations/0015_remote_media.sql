-- The remote media cache: copies of other servers' media fetched over
-- federation (Synapse's remote_media_cache). Files live under
-- media_store_path named by file_id (remote_content/ab/cd/efgh...), a
-- random name of this server's: a remote media ID is never a path, and a
-- copy fetched again after a purge gets a file of its own.
CREATE TABLE remote_media (
    media_origin    TEXT NOT NULL,             -- the server name of the mxc:// URI
    media_id        TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size            BIGINT NOT NULL,
    upload_name     TEXT NOT NULL DEFAULT '',
    created_ts      BIGINT NOT NULL,           -- when it was fetched
    last_access_ts  BIGINT NOT NULL,
    sha256          TEXT NOT NULL,             -- hex of the content
    file_id         TEXT NOT NULL,
    quarantined_by  TEXT,                      -- admin user ID; NULL: not quarantined
    authenticated   INTEGER NOT NULL DEFAULT 0, -- served only by the authenticated endpoints
    PRIMARY KEY (media_origin, media_id)
);
CREATE INDEX remote_media_access ON remote_media (last_access_ts);
