-- The presence sweep (server/presence.go) publishes as offline, across the
-- server, the users who are not offline but have been quiet too long. It
-- used to be done per /sync over everyone sharing a room with the syncing
-- user; this keeps the sweep's read to the users it may find.
CREATE INDEX presence_active ON presence (last_active_ts) WHERE state <> 'offline';
