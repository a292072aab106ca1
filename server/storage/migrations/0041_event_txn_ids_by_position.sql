-- A client transaction ID names its event by stream position rather than
-- by event ID, and is stored in its primary key's B-tree (SQLite WITHOUT
-- ROWID): every message sent was an insert into the rowid table and one
-- into the key's index, now one insert of a row the size the index entry
-- was. created_ts goes: nothing read it. EventIDByTxn and PurgeRoom go
-- through events by stream_ordering (its primary key).
CREATE TABLE event_txn_ids_new (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    txn_id          TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,           -- the event's (events.stream_ordering)
    PRIMARY KEY (user_id, device_id, scope, txn_id)
){{if eq .Name "sqlite"}} WITHOUT ROWID{{end}};
INSERT INTO event_txn_ids_new (user_id, device_id, scope, txn_id, stream_ordering)
    SELECT t.user_id, t.device_id, t.scope, t.txn_id, e.stream_ordering FROM event_txn_ids t JOIN events e ON e.event_id = t.event_id;
DROP TABLE event_txn_ids;
ALTER TABLE event_txn_ids_new RENAME TO event_txn_ids;
-- PostgreSQL's key keeps the name it was made with: give it the table's.
{{if eq .Name "postgres"}}ALTER TABLE event_txn_ids RENAME CONSTRAINT event_txn_ids_new_pkey TO event_txn_ids_pkey;{{end}}
