package timeline

import (
	"context"
	"errors"
	"fmt"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// Join persists a local user's join to a room through another server
// (origin): the room's state before the join and its auth chain, as the
// send_join answer gives them, then the join event itself as the room's
// newest live event. The state's events (often thousands) are checked and
// written in chunks outside the room lock, so other rooms' sends go on;
// the lock is taken for the join's own write only.
func (t *Timeline) Join(ctx context.Context, origin string, rv *rooms.RoomVersion, join *rooms.Event, state, authChain []*rooms.Event) (*storage.Event, error) {
	roomID := join.RoomID()
	if join.Type() != rooms.TypeMember || join.Membership() != rooms.MembershipJoin {
		return nil, fmt.Errorf("timeline: join: %s is not a join event", join.ID())
	}
	var create *rooms.Event
	for _, e := range append(state, authChain...) {
		if e.IsCreate() {
			create = e
		}
	}
	if create == nil {
		return nil, errors.New("timeline: join: the state has no m.room.create event")
	}
	err := t.store.CreateRoom(ctx, &storage.Room{RoomID: roomID, RoomVersion: rv.ID, Creator: create.Sender()})
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		return nil, err
	}
	rc, err := t.receiver(ctx, origin, Live, roomID)
	if err != nil {
		return nil, err
	}
	if rc.rv != rv {
		return nil, fmt.Errorf("timeline: join: room %s is of version %s here, not %s", roomID, rc.rv.ID, rv.ID)
	}
	sb, err := rc.stateFrom(ctx, state, authChain)
	if err != nil {
		return nil, err
	}
	res, err := rc.receive(ctx, join, sb)
	if err != nil {
		return nil, err
	}
	if res.Status != Accepted && res.Status != Known {
		return nil, fmt.Errorf("timeline: join event %s %s: %w", join.ID(), res.Status, res.Err)
	}
	return t.store.EventByID(ctx, join.ID())
}
