-- event_edges_prev indexed the DAG's edges by prev event, for a lookup of
-- an event's children that no query makes: every read of event_edges goes
-- by event_id (the primary key) or by room_id (event_edges_room). Its
-- entries are keyed by a random event ID, so each message dirtied a page
-- of it wherever that ID sorted: 1.2 of the 15.9 pages SQLite wrote per
-- message with ten senders in a room (docs/push.md counts them).
DROP INDEX IF EXISTS event_edges_prev;
