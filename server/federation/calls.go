package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"hearth/server/rooms"
)

// Typed calls of the Server-Server API this server makes.

// MakeMembership asks destination for a membership event template
// (make_join, make_leave, make_knock) for userID, offering the room
// versions this server supports (make_join, make_knock).
func (c *Client) MakeMembership(ctx context.Context, destination, membership, roomID, userID string) (json.RawMessage, *rooms.RoomVersion, error) {
	q := url.Values{}
	if membership != rooms.MembershipLeave {
		for _, v := range rooms.KnownVersions() {
			q.Add("ver", v)
		}
	}
	var resp struct {
		Event       json.RawMessage `json:"event"`
		RoomVersion string          `json:"room_version"`
	}
	path := fmt.Sprintf("/_matrix/federation/v1/make_%s/%s/%s", membership, url.PathEscape(roomID), url.PathEscape(userID))
	if err := c.Do(ctx, destination, http.MethodGet, path, q, nil, &resp); err != nil {
		return nil, nil, err
	}
	v := resp.RoomVersion
	if v == "" {
		v = "1" // the spec's default when the field is absent
	}
	rv, ok := rooms.LookupVersion(v)
	if !ok {
		return nil, nil, fmt.Errorf("federation: %s offered room version %q, which this server does not support", destination, v)
	}
	if len(resp.Event) == 0 {
		return nil, nil, fmt.Errorf("federation: %s answered make_%s without an event", destination, membership)
	}
	return resp.Event, rv, nil
}

// SendJoinResponse is the answer to send_join (v2).
type SendJoinResponse struct {
	Origin         string            `json:"origin"`
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	Event          json.RawMessage   `json:"event"`
	MembersOmitted bool              `json:"members_omitted"`
}

// SendMembership sends a signed membership event (send_join and
// send_leave v2, send_knock v1, the only one the spec has) and decodes the
// answer into out (nil to ignore it).
func (c *Client) SendMembership(ctx context.Context, destination, membership string, e *rooms.Event, out any) error {
	version := "v2"
	if membership == rooms.MembershipKnock {
		version = "v1"
	}
	path := fmt.Sprintf("/_matrix/federation/%s/send_%s/%s/%s", version, membership, url.PathEscape(e.RoomID()), url.PathEscape(e.ID()))
	return c.Do(ctx, destination, http.MethodPut, path, nil, json.RawMessage(e.JSON()), out)
}

// Invite asks destination to co-sign an invite of one of its users (v2) and
// returns the event as signed by it.
func (c *Client) Invite(ctx context.Context, destination string, e *rooms.Event, inviteRoomState []json.RawMessage) (json.RawMessage, error) {
	body := map[string]any{"event": json.RawMessage(e.JSON()), "room_version": e.Version().ID, "invite_room_state": inviteRoomState}
	var resp struct {
		Event json.RawMessage `json:"event"`
	}
	path := fmt.Sprintf("/_matrix/federation/v2/invite/%s/%s", url.PathEscape(e.RoomID()), url.PathEscape(e.ID()))
	if err := c.Do(ctx, destination, http.MethodPut, path, nil, body, &resp); err != nil {
		return nil, err
	}
	return resp.Event, nil
}

// parsePDUs parses events of a room version; malformed ones are left out.
func parsePDUs(rv *rooms.RoomVersion, raws []json.RawMessage) []*rooms.Event {
	out := make([]*rooms.Event, 0, len(raws))
	for _, raw := range raws {
		if e, err := rooms.ParseEvent(rv, raw); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// Fetcher fetches events for the room pipeline (it satisfies
// timeline.Fetcher).
type Fetcher struct{ Client *Client }

// Event fetches one event (GET /_matrix/federation/v1/event/{eventId}).
func (f Fetcher) Event(ctx context.Context, server string, rv *rooms.RoomVersion, eventID string) (*rooms.Event, error) {
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := f.Client.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/event/"+url.PathEscape(eventID), nil, nil, &resp); err != nil {
		return nil, err
	}
	if len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("federation: %s answered /event with %d events", server, len(resp.PDUs))
	}
	return rooms.ParseEvent(rv, resp.PDUs[0])
}

// StateBefore fetches the room state at an event and its auth chain
// (GET /_matrix/federation/v1/state/{roomId}?event_id=).
func (f Fetcher) StateBefore(ctx context.Context, server string, rv *rooms.RoomVersion, roomID, eventID string) ([]*rooms.Event, []*rooms.Event, error) {
	var resp struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	q := url.Values{"event_id": {eventID}}
	if err := f.Client.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/state/"+url.PathEscape(roomID), q, nil, &resp); err != nil {
		return nil, nil, err
	}
	return parsePDUs(rv, resp.PDUs), parsePDUs(rv, resp.AuthChain), nil
}

// MissingEvents fetches up to limit events between earliest and latest
// (POST /_matrix/federation/v1/get_missing_events/{roomId}).
func (f Fetcher) MissingEvents(ctx context.Context, server string, rv *rooms.RoomVersion, roomID string, earliest, latest []string, limit int) ([]*rooms.Event, error) {
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	body := map[string]any{"earliest_events": earliest, "latest_events": latest, "limit": limit, "min_depth": 0}
	if err := f.Client.Do(ctx, server, http.MethodPost, "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(roomID), nil, body, &resp); err != nil {
		return nil, err
	}
	return parsePDUs(rv, resp.Events), nil
}
