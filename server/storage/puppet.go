package storage

import (
	"context"
	"database/sql"
)

// CreatePuppetToken issues an access token for userID on behalf of admin,
// with no device (Synapse's admin "login as user"). expiresTS 0: never.
func (s *Store) CreatePuppetToken(ctx context.Context, userID, admin, token string, expiresTS int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := insertTokens(ctx, tx, NewLogin{UserID: userID, DeviceID: "", AccessToken: token, AccessExpiresTS: expiresTS, PuppetBy: admin})
		return err
	})
}
