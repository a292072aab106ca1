-- The ACME client's state (golang.org/x/crypto/acme/autocert's Cache):
-- the account key and each certificate with its private key, keyed by
-- autocert's names ("acme_account+key", "example.org", "example.org+rsa").
-- Kept in the database so that certificates survive a reinstall of the
-- binary and a move between machines with the data.
CREATE TABLE acme_cache (
    key        TEXT PRIMARY KEY,
    data       {{.Blob}} NOT NULL,
    updated_ts BIGINT NOT NULL
);
