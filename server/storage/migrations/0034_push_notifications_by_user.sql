-- Notifications keep one index keyed by user, (user_id, stream_ordering),
-- their primary key. The second, (user_id, room_id, thread_id,
-- stream_ordering), served one lookup (the running totals at a read
-- receipt), and cost every notified member a second index page dirtied
-- wherever that user's entries sit: dropping it took 45-55% of the push
-- evaluator's CPU writing a message's notifications in a 200-member room
-- (docs/push.md). The lookup now walks the primary key back from the
-- receipt, and its answers are cached (Store.cumAt).
DROP INDEX IF EXISTS push_notifications_thread;
