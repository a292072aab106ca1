package timeline

import (
	"context"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"slices"
	"strings"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// What the Server-Server API asks of a room this server is in: templates
// for other servers' membership events, relayed memberships, and the state
// and auth chains at events.

// Proto answers make_join, make_leave and make_knock: the unsigned event
// for sender (a user of another server) on the room's head, with the
// room's version. The auth rules must allow it now (*rooms.AuthError).
func (t *Timeline) Proto(ctx context.Context, roomID, typ string, stateKey *string, sender string, content any) (jsontext.Value, *rooms.RoomVersion, error) {
	unlock := t.lock(roomID)
	defer unlock()
	h, err := t.head(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	proto, err := h.builder.Proto(typ, stateKey, sender, content)
	return proto, h.rv, err
}

// ReceiveRelayed checks and persists a membership event another server
// asked this one to accept (send_join, send_leave, send_knock): a live
// event like those of Receive, which this server then sends on to the
// room's other servers.
func (t *Timeline) ReceiveRelayed(ctx context.Context, origin string, pdu *rooms.Event) (Result, error) {
	rc, err := t.receiver(ctx, origin, Live, pdu.RoomID())
	if err != nil {
		return Result{}, err
	}
	rc.relay = true
	res, err := rc.receive(ctx, pdu, nil)
	if err != nil {
		return res, err
	}
	return res, rc.flushOutliers(ctx)
}

// ErrNotInTimeline is returned for events this server has only as
// outliers (or not at all): it knows no state at them.
var ErrNotInTimeline = errors.New("timeline: event is not in the room's timeline here")

// StateBefore returns the room state before a stored event, and the event.
func (t *Timeline) StateBefore(ctx context.Context, eventID string) (rooms.StateMap, *storage.Event, error) {
	se, err := t.store.EventByID(ctx, eventID)
	if err != nil {
		return nil, nil, err
	}
	if se.Outlier {
		return nil, se, ErrNotInTimeline
	}
	state, err := t.store.StateGroup(ctx, se.StateGroup)
	if err != nil {
		return nil, nil, err
	}
	if se.IsState() && !se.Rejected {
		// The group is the state after the event: put back what it
		// replaced.
		k := storage.StateKey{Type: se.Type, StateKey: *se.StateKey}
		if se.ReplacesState != "" {
			state[k] = se.ReplacesState
		} else {
			delete(state, k)
		}
	}
	return state, se, nil
}

// maxAuthChain bounds an auth chain walk.
const maxAuthChain = 100_000

// AuthChain returns every event in the auth chains of the given events
// (their auth events, theirs, and so on), the given events excluded unless
// one is in another's chain. From v12 an event's auth_events never list
// the create event, which authorises it all the same (its ID is the room
// ID's): the chain of any other event includes it, as other servers
// expect of /event_auth, /state and send_join.
func (t *Timeline) AuthChain(ctx context.Context, rv *rooms.RoomVersion, ids []string) ([]*storage.Event, error) {
	seen := map[string]bool{}
	var out []*storage.Event
	frontier := ids
	for len(frontier) > 0 {
		evs, err := t.store.EventsByID(ctx, frontier)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, se := range evs {
			e, err := rooms.ParseStored(rv, se.JSON, se.EventID)
			if err != nil {
				return nil, fmt.Errorf("timeline: parse %s: %w", se.EventID, err)
			}
			auth := e.AuthEventIDs()
			if rv.RoomIDFromCreateEvent && !e.IsCreate() {
				auth = append(slices.Clone(auth), "$"+strings.TrimPrefix(e.RoomID(), "!"))
			}
			for _, a := range auth {
				if !seen[a] {
					seen[a] = true
					next = append(next, a)
				}
			}
		}
		if len(seen) > maxAuthChain {
			return nil, fmt.Errorf("timeline: auth chain of more than %d events", maxAuthChain)
		}
		frontier = next
	}
	var chain []string
	for id := range seen {
		chain = append(chain, id)
	}
	evs, err := t.store.EventsByID(ctx, chain)
	if err != nil {
		return nil, err
	}
	out = append(out, evs...)
	return out, nil
}

// Build builds, signs and authorises a local event on the room's head
// without persisting it: an invite of another server's user, which that
// server must sign too before it enters the room (ReceiveRelayed then).
func (t *Timeline) Build(ctx context.Context, roomID string, ne NewEvent) (*rooms.Event, error) {
	unlock := t.lock(roomID)
	defer unlock()
	h, err := t.head(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if h.room.Blocked && !ne.IgnoreBlock {
		return nil, ErrRoomBlocked
	}
	return h.builder.Fork().Append(ne.Type, ne.StateKey, ne.Sender, ne.Content)
}
