-- UIA sessions expire by age (server/uia.go); the index keeps the periodic
-- sweep from scanning the table.
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);
