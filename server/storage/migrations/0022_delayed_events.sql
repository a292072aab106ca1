-- Delayed events (MSC4140): events a local user asked to be sent later,
-- kept until they are sent or cancelled so that they survive a restart.
-- state_key is NULL for message events. send_ts is when the event is due
-- (restart moves it to now + delay_ms). processed is 1 once sending began
-- (timeout or the send action): cancel and restart no longer find the row,
-- and a process that stops before deleting it sends it again on start,
-- under the transaction ID delay_id, so it is sent once (storage of the
-- event and of the ID are one transaction). txn_id is the client's
-- transaction ID of a PUT /send, so a retried request gets the same
-- delay_id. created_pos is the event stream position when it was
-- scheduled: a state event of another user's newer than it cancels it.
CREATE TABLE delayed_events (
    delay_id     TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    state_key    TEXT,
    content      TEXT NOT NULL,
    delay_ms     BIGINT NOT NULL,
    send_ts      BIGINT NOT NULL,
    created_pos  BIGINT NOT NULL,
    txn_id       TEXT,
    processed    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX delayed_events_due ON delayed_events (processed, send_ts);
CREATE INDEX delayed_events_user ON delayed_events (user_id, send_ts);
CREATE INDEX delayed_events_state ON delayed_events (room_id, event_type, state_key);
CREATE UNIQUE INDEX delayed_events_txn ON delayed_events (user_id, device_id, room_id, txn_id);
