-- OpenID tokens (spec: "OpenID"): a user hands one to a third party (a
-- widget, a call's focus), which asks this server whose it is over
-- federation (/openid/userinfo). Stored hashed, as access tokens are.
CREATE TABLE openid_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    expires_ts  BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
