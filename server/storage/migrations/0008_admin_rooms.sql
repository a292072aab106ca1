-- Room administration: blocked rooms, room deletions, reports and server
-- notices (Synapse admin API; server/admin_rooms*.go).

-- Rooms an admin blocked. Kept apart from rooms.blocked (which the event
-- pipeline reads) because a room can be blocked before this server knows
-- it, and stays blocked after it is purged.
CREATE TABLE blocked_rooms (
    room_id    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,              -- the admin who blocked it
    blocked_ts BIGINT NOT NULL
);

-- DELETE /_synapse/admin/v2/rooms/<id>: one row per deletion, so its status
-- survives a restart and an unfinished one is resumed at start.
CREATE TABLE room_deletes (
    delete_id  TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    status     TEXT NOT NULL,              -- shutting_down, purging, complete, failed
    error      TEXT NOT NULL DEFAULT '',
    params     TEXT NOT NULL,              -- the request (JSON)
    result     TEXT NOT NULL DEFAULT '{}', -- shutdown_room (JSON)
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
CREATE INDEX room_deletes_room ON room_deletes (room_id, created_ts);
CREATE INDEX room_deletes_status ON room_deletes (status);

-- Reports by users (spec: "Reporting content").
CREATE TABLE event_reports (
    id          {{.AutoID}},
    received_ts BIGINT NOT NULL,
    room_id     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,             -- the reporter
    reason      TEXT,
    score       BIGINT
);
CREATE INDEX event_reports_room ON event_reports (room_id);

CREATE TABLE room_reports (
    id          {{.AutoID}},
    received_ts BIGINT NOT NULL,
    room_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX room_reports_room ON room_reports (room_id);

CREATE TABLE user_reports (
    id             {{.AutoID}},
    received_ts    BIGINT NOT NULL,
    target_user_id TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    reason         TEXT NOT NULL
);

-- Each user's server-notices room (Synapse's m.server_notice tagged room).
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
CREATE INDEX server_notice_rooms_room ON server_notice_rooms (room_id);
