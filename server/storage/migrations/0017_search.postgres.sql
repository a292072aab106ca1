-- Full-text search over room events (POST /search; storage/search.go).
-- One row per searchable event (live, accepted, with a content.body,
-- name or topic string): its tsvector in the english configuration, as
-- Synapse, and the columns a search filters and orders on. The GIN index takes new rows into its pending list; a list
-- smaller than the default 4 MB bounds the work of the insert that has
-- to merge it (a send's latency) at the price of merging more often.
-- Existing events are indexed by the migration's Go step
-- (indexExistingEvents).
CREATE TABLE event_search (
    stream_ordering  BIGINT PRIMARY KEY,       -- the event's
    -- The event's, so that a search reads only the index (its GIN part)
    -- to filter, count and order; events are read for the page alone.
    room_id          TEXT NOT NULL,
    type             TEXT NOT NULL,
    sender           TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    vector           TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector) WITH (gin_pending_list_limit = 512);
