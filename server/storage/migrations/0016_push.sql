-- Push notifications (Client-Server API, "Push Notifications"):
-- push rules, the notifications their evaluation produced, and pushers.

-- The push rules a user defined. priority orders the rules of one kind,
-- highest first (Synapse's priority within a priority class).
CREATE TABLE push_rules (
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,            -- override, content, room, sender, underride
    rule_id    TEXT NOT NULL,
    priority   BIGINT NOT NULL,
    pattern    TEXT,                     -- content rules
    conditions TEXT,                     -- JSON array: override and underride rules
    actions    TEXT NOT NULL,            -- JSON array
    enabled    INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to a server-default rule: NULL keeps the default.
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled INTEGER,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- One row per event that notified a local user (the rules' actions
-- included "notify"), at the event's stream position. thread_id is 'main'
-- or a thread root's event ID (spec: "Receiving notifications").
-- cum_notif and cum_highlight are running totals per (user, room, thread)
-- including this row, so the unread count after a read receipt is one
-- subtraction: the total at the newest row minus the total at the last
-- row the receipt covers, two index seeks however many notifications a
-- room has piled up.
CREATE TABLE push_notifications (
    user_id         TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    highlight       INTEGER NOT NULL,
    actions         TEXT NOT NULL,
    ts              BIGINT NOT NULL,
    cum_notif       BIGINT NOT NULL,
    cum_highlight   BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX push_notifications_thread ON push_notifications (user_id, room_id, thread_id, stream_ordering);

-- The newest notification per (user, room, thread): its position and the
-- running totals there.
CREATE TABLE push_thread_heads (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    cum_notif       BIGINT NOT NULL,
    cum_highlight   BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
CREATE INDEX push_thread_heads_room ON push_thread_heads (room_id, thread_id);

-- The event stream position up to which push rules have been evaluated.
-- Events already stored when this table is made are never evaluated.
CREATE TABLE push_position (
    id              INTEGER PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
INSERT INTO push_position (id, stream_ordering) SELECT 1, COALESCE(MAX(stream_ordering), 0) FROM events;

-- Pushers (spec: POST /pushers/set): one per (app_id, pushkey, user).
-- device_id is the device that set it: the pusher goes with the device.
-- last_stream_ordering is the position up to which the user's
-- notifications were delivered; failing_since the time the gateway
-- started failing.
CREATE TABLE pushers (
    id                   {{.AutoID}},
    user_id              TEXT NOT NULL,
    device_id            TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    app_id               TEXT NOT NULL,
    pushkey              TEXT NOT NULL,
    pushkey_ts           BIGINT NOT NULL,
    app_display_name     TEXT NOT NULL,
    device_display_name  TEXT NOT NULL,
    profile_tag          TEXT NOT NULL,
    lang                 TEXT NOT NULL,
    data                 TEXT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    last_success         BIGINT,
    failing_since        BIGINT
);
CREATE UNIQUE INDEX pushers_key ON pushers (app_id, pushkey, user_id);
CREATE INDEX pushers_user ON pushers (user_id);

-- A user's receipts across rooms: notification counts and badges read
-- them per user.
CREATE INDEX receipts_user ON receipts (user_id, room_id);
