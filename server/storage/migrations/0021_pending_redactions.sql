-- Redactions received before the events they redact (spec: "Redactions":
-- a server applies a redaction once it has both events). Each row waits
-- for event redacts to arrive; by_power records whether the redaction's
-- sender could redact anyone's events in the state before it (otherwise it
-- applies only to events of the sender's own server).
CREATE TABLE pending_redactions (
    redacts       TEXT NOT NULL,
    redaction_id  TEXT NOT NULL,
    room_id       TEXT NOT NULL,
    sender        TEXT NOT NULL,
    by_power      INTEGER NOT NULL,
    PRIMARY KEY (redacts, redaction_id)
);
