-- The local media repository. Files live under media_store_path, named by
-- media ID (local_content/ab/cd/efgh...); this table holds their metadata.
-- A row created by POST /_matrix/media/v1/create has pending = 1 until its
-- content is uploaded.
CREATE TABLE local_media (
    media_id        TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,             -- uploader
    content_type    TEXT NOT NULL DEFAULT '',
    size            BIGINT NOT NULL DEFAULT 0,
    upload_name     TEXT NOT NULL DEFAULT '',
    created_ts      BIGINT NOT NULL,
    last_access_ts  BIGINT NOT NULL,
    sha256          TEXT NOT NULL DEFAULT '',  -- hex of the content
    quarantined_by  TEXT,                      -- admin user ID; NULL: not quarantined
    protected       INTEGER NOT NULL DEFAULT 0, -- safe from quarantine and age-based deletion
    authenticated   INTEGER NOT NULL DEFAULT 0, -- served only by the authenticated endpoints
    pending         INTEGER NOT NULL DEFAULT 0, -- created, content not yet uploaded
    expires_ts      BIGINT                     -- pending: upload deadline
);
CREATE INDEX local_media_user ON local_media (user_id, created_ts);
CREATE INDEX local_media_created ON local_media (created_ts);
