-- The DAG's edges are keyed by their event's stream position instead of
-- its ID: (stream_ordering, prev_event_id), on SQLite WITHOUT ROWID, and
-- without room_id or its index. Keyed by a random event ID, every
-- message's edge went into a leaf page of its own wherever the ID sorted,
-- and SQLite rebalanced that page with its neighbours when full: 6 pages
-- written per group commit of about four messages, 1.5 a message, with
-- ten senders in one room (docs/push.md counts them); the rowid table and
-- event_edges_room (room_id) were 0.7 more. Positions only grow, so a
-- commit's edges now go to the right end of one tree.
--
-- Reads by event go through the events' unique index (PrevEvents), reads
-- by room through events_room_stream (BackwardExtremities, PurgeRoom).
-- events.stream_ordering is final when the edges are written: a
-- de-outliered event takes its new position in the same transaction.
CREATE TABLE event_edges_new (
    stream_ordering BIGINT NOT NULL,           -- the event's (events.stream_ordering)
    prev_event_id   TEXT NOT NULL,
    PRIMARY KEY (stream_ordering, prev_event_id)
){{if eq .Name "sqlite"}} WITHOUT ROWID{{end}};
INSERT INTO event_edges_new (stream_ordering, prev_event_id)
    SELECT e.stream_ordering, ed.prev_event_id FROM event_edges ed JOIN events e ON e.event_id = ed.event_id;
DROP TABLE event_edges;
ALTER TABLE event_edges_new RENAME TO event_edges;
-- PostgreSQL's key keeps the name it was made with: give it the table's.
{{if eq .Name "postgres"}}ALTER TABLE event_edges RENAME CONSTRAINT event_edges_new_pkey TO event_edges_pkey;{{end}}
