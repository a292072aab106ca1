package server

import (
	"context"
	"errors"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Account deactivation, as Synapse does it (its DeactivateAccountHandler),
// for the client API (POST /account/deactivate), the admin API (POST
// /_synapse/admin/v1/deactivate/{userId}, PUT /_synapse/admin/v2/users/...)
// and the dashboard alike: the account can no longer sign in and has no
// devices, keys, pushers or account data; it leaves every room it is in,
// its invites are rejected and its knocks withdrawn, on this server and on
// others; deactivated accounts are left out of the user directory
// (storage.SearchUserDirectory). With erase, the profile is cleared and
// the user's events are served redacted to users who were not in the
// room with them (visibility.go).

// deactivateAccount is the one deactivation path. The leaving goes on
// when the request that asked for it ends; a deactivation cut short by a
// stop is finished by the next start (resumeDeactivations).
func (s *Server) deactivateAccount(ctx context.Context, userID string, erase bool) error {
	if err := s.store.DeactivateUser(ctx, userID, erase); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("user not found")
	} else if err != nil {
		return err
	}
	// Other users' clients and servers learn that the devices are gone.
	if err := s.deviceListChanged(ctx, userID); err != nil {
		logFrom(ctx, s.log).Warn("deactivation: device list change not announced", "user_id", userID, "err", err)
	}
	if err := s.deleteUserPushers(ctx, userID); err != nil {
		return err
	}
	// Synapse removes the account's addresses: they may be registered again.
	if err := s.store.SetUserThreePIDs(ctx, userID, nil); err != nil {
		return err
	}
	s.leaveAllRooms(context.WithoutCancel(ctx), userID)
	return nil
}

// deleteUserPushers removes every pusher of the user, those of no device
// (email) included, as Synapse does on deactivation: the store deleted
// them with the devices (storage.DeactivateUser); the running pushers
// learn it here.
func (s *Server) deleteUserPushers(ctx context.Context, userID string) error {
	s.pushers.Changed(ctx, userID)
	return nil
}

// leaveAllRooms makes a deactivated user leave every room they are joined
// to, invited to or knocking on, and forget it (nobody can for them
// later), as Synapse's user parter does. A room that cannot be left is
// logged and skipped: the rest still are.
func (s *Server) leaveAllRooms(ctx context.Context, userID string) {
	ms, err := s.store.RoomsOfUser(ctx, userID, rooms.MembershipJoin, rooms.MembershipInvite, rooms.MembershipKnock)
	if err != nil {
		logFrom(ctx, s.log).Error("deactivation: cannot list the user's rooms", "user_id", userID, "err", err)
		return
	}
	done := map[string]bool{}
	for _, m := range ms {
		if done[m.RoomID] {
			continue // in current_state and out-of-room both
		}
		done[m.RoomID] = true
		if err := s.leaveRoom(ctx, userID, m.RoomID, ""); err != nil {
			logFrom(ctx, s.log).Warn("deactivation: cannot leave a room", "user_id", userID, "room_id", m.RoomID,
				"membership", m.Membership, "err", err)
			continue
		}
		if err := s.store.ForgetRoom(ctx, userID, m.RoomID); err != nil {
			logFrom(ctx, s.log).Warn("deactivation: cannot forget a room", "user_id", userID, "room_id", m.RoomID, "err", err)
		}
	}
}

// resumeDeactivations makes deactivated users who are still in rooms leave
// them: deactivations a stop cut short, and those from before deactivation
// left rooms.
func (s *Server) resumeDeactivations(ctx context.Context) {
	users, err := s.store.DeactivatedInRooms(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("deactivation: cannot list deactivated users still in rooms", "err", err)
		}
		return
	}
	for _, u := range users {
		if ctx.Err() != nil {
			return
		}
		s.log.Info("deactivation: leaving the rooms of a deactivated user", "user_id", u)
		s.leaveAllRooms(ctx, u)
	}
}
