-- The federation sender's position is set when the store opens, at the
-- newest event then, as the push evaluator's is (0016). It was set by the
-- sender's first read of it, in its own goroutine: an event persisted
-- before that read (a room made and a message sent while the sender was
-- still starting) was behind the position it then took, and never sent.
INSERT INTO federation_sender_position (id, position)
    SELECT 1, COALESCE(MAX(stream_ordering), 0) FROM events
    WHERE NOT EXISTS (SELECT 1 FROM federation_sender_position);
