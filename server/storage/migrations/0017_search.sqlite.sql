-- Full-text search over room events (POST /search; storage/search.go).
-- One row per searchable event (live, accepted, with a content.body,
-- name or topic string), rowid = the event's stream_ordering. unicode61
-- with diacritics folded, then the Porter stemmer, so that "messages"
-- finds "message" as PostgreSQL's english configuration does. The text is
-- stored (not contentless) so highlight() can mark what matched.
-- Existing events are indexed by the migration's Go step
-- (indexExistingEvents).
CREATE VIRTUAL TABLE event_search USING fts5(value, tokenize = 'porter unicode61 remove_diacritics 2');
-- The rows of events persisted since the last batch, waiting to be moved
-- into event_search: FTS5 pays most of an insert once per transaction,
-- so sends queue their rows here and batches move them (searchQueue).
CREATE TABLE event_search_pending (
    stream_ordering INTEGER PRIMARY KEY,       -- the event's
    value           TEXT NOT NULL
);
