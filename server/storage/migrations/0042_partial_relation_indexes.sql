-- The two indexes of events by relation keep only the events that have
-- one. Every read through them asks for a relation by equality or IN
-- (relations.go, sync_batch.go: relates_to = , rel_type = 'm.thread'),
-- which implies the index's WHERE on both engines, so the planners still
-- take them; a message without a relation, most of them, no longer adds
-- an entry to either: two B-tree inserts and 0.7 of the pages SQLite
-- wrote per message with ten senders in one room (docs/push.md).
DROP INDEX IF EXISTS events_relations;
CREATE INDEX events_relations ON events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
DROP INDEX IF EXISTS events_room_rel;
CREATE INDEX events_room_rel ON events (room_id, rel_type, relates_to, stream_ordering) WHERE rel_type IS NOT NULL;
