-- The federation sender's position is set when the store opens, at the
-- newest event then, as the push evaluator's is (0016). It was set by the
-- sender's first read of it, in its own goroutine: an event persisted
-- before that read (a room made and a message sent while the sender was
-- still starting) was behind the position it then took, and never sent.
-- A position stored already stays. (WHERE true: SQLite's parser needs it
-- between a SELECT and ON CONFLICT.)
INSERT INTO federation_sender_position (id, position)
    SELECT 1, COALESCE(MAX(stream_ordering), 0) FROM events WHERE true
    ON CONFLICT (id) DO NOTHING;
