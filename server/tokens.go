package server

import (
	"fmt"
	"strconv"
	"strings"

	"hearth/server/matrix"
)

// Pagination and sync tokens are opaque to clients. Two shapes exist:
//
//	s<events>_<aux>[_<typing>]
//	                  a stream token: a position in the event stream, in
//	                  the aux stream (account data, receipts, to-device,
//	                  device lists, presence) and in the in-memory typing
//	                  stream (typing.go). /sync's next_batch; also accepted
//	                  by /messages and /members. Tokens without the typing
//	                  part, from before it existed, still parse (typing 0).
//	t<depth>_<events> a topological token: a point in a room's DAG order,
//	                  used by /messages to page history in depth order.

// streamToken is a point in the server's streams.
type streamToken struct {
	Events int64
	Aux    int64
	// Typing counts typing changes since this process started; it is
	// not persisted, so a token from before a restart may be ahead of it
	// (/sync clamps it like the others).
	Typing int64
}

func (t streamToken) String() string {
	if t.Typing == 0 {
		return fmt.Sprintf("s%d_%d", t.Events, t.Aux)
	}
	return fmt.Sprintf("s%d_%d_%d", t.Events, t.Aux, t.Typing)
}

// parseSyncToken parses an s-token; bad tokens are 400 M_INVALID_PARAM.
func parseSyncToken(tok string) (streamToken, error) {
	if !strings.HasPrefix(tok, "s") {
		return streamToken{}, matrix.InvalidParam("invalid stream token %q", tok)
	}
	ev, rest, _ := strings.Cut(tok[1:], "_")
	aux, typing, _ := strings.Cut(rest, "_")
	e, err1 := strconv.ParseInt(ev, 10, 64)
	var a, ty int64
	var err2, err3 error
	if aux != "" {
		a, err2 = strconv.ParseInt(aux, 10, 64)
	}
	if typing != "" {
		ty, err3 = strconv.ParseInt(typing, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || e < 0 || a < 0 || ty < 0 {
		return streamToken{}, matrix.InvalidParam("invalid stream token %q", tok)
	}
	return streamToken{Events: e, Aux: a, Typing: ty}, nil
}

// topoToken is a point in a room's (depth, stream) order.
type topoToken struct {
	Depth  int64
	Events int64
}

func (t topoToken) String() string { return fmt.Sprintf("t%d_%d", t.Depth, t.Events) }

// parseStreamToken returns the event-stream position of either token shape.
func parseStreamToken(tok string) (int64, error) {
	if strings.HasPrefix(tok, "t") {
		t, err := parseTopoToken(tok)
		return t.Events, err
	}
	st, err := parseSyncToken(tok)
	return st.Events, err
}

// parseTopoToken parses a t-token.
func parseTopoToken(tok string) (topoToken, error) {
	d, ev, ok := strings.Cut(strings.TrimPrefix(tok, "t"), "_")
	depth, err1 := strconv.ParseInt(d, 10, 64)
	pos, err2 := strconv.ParseInt(ev, 10, 64)
	if !strings.HasPrefix(tok, "t") || !ok || err1 != nil || err2 != nil {
		return topoToken{}, matrix.InvalidParam("invalid pagination token %q", tok)
	}
	return topoToken{Depth: depth, Events: pos}, nil
}
