-- Thread subscriptions (MSC4306): a user's subscription to a thread, by
-- its root event. stream_id is the aux stream position of the last change
-- (clients see it as bump_stamp; sliding sync's MSC4308 extension and the
-- pagination endpoint read changes by it). subscribed is 0 after an
-- unsubscription, which is kept so that an automatic subscription caused by
-- an event the user had already seen when unsubscribing is refused:
-- unsubscribed_at_pos and unsubscribed_at_depth are the room's newest event
-- stream position and depth at that moment (depth for events that arrived
-- as history, whose positions are not live).
CREATE TABLE thread_subscriptions (
    user_id               TEXT NOT NULL,
    room_id               TEXT NOT NULL,
    root_id               TEXT NOT NULL,
    subscribed            INTEGER NOT NULL,
    automatic             INTEGER NOT NULL,
    stream_id             BIGINT NOT NULL,
    unsubscribed_at_pos   BIGINT,
    unsubscribed_at_depth BIGINT,
    PRIMARY KEY (user_id, room_id, root_id)
);
CREATE INDEX thread_subscriptions_stream ON thread_subscriptions (user_id, stream_id);
CREATE INDEX thread_subscriptions_root ON thread_subscriptions (room_id, root_id);
