-- The order one-time keys were uploaded in: /keys/claim hands out the
-- oldest first (MSC4225, in the spec since v1.15: "keys SHOULD be returned
-- in the order they were uploaded"), so a client that uploads more keys
-- while an old one is still pending on some sender keeps them in step.
-- Every key of one upload gets the same number, the device's next upload
-- the next one; keys stored before this column share 0 and come first.
ALTER TABLE one_time_keys ADD COLUMN upload_seq BIGINT NOT NULL DEFAULT 0;
