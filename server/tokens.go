package server

import (
	"fmt"
	"strconv"
	"strings"

	"hearth/server/matrix"
)

// Pagination and sync tokens are opaque to clients. Two shapes exist:
//
//	s<events>_<aux>   a stream token: a position in the event stream and in
//	                  the aux stream (account data, receipts). /sync's
//	                  next_batch; also accepted by /messages and /members.
//	t<depth>_<events> a topological token: a point in a room's DAG order,
//	                  used by /messages to page history in depth order.

// streamToken is a point in the server's streams.
type streamToken struct {
	Events int64
	Aux    int64
}

func (t streamToken) String() string { return fmt.Sprintf("s%d_%d", t.Events, t.Aux) }

// parseSyncToken parses an s-token; bad tokens are 400 M_INVALID_PARAM.
func parseSyncToken(tok string) (streamToken, error) {
	if !strings.HasPrefix(tok, "s") {
		return streamToken{}, matrix.InvalidParam("invalid stream token %q", tok)
	}
	ev, aux, _ := strings.Cut(tok[1:], "_")
	e, err1 := strconv.ParseInt(ev, 10, 64)
	a := int64(0)
	var err2 error
	if aux != "" {
		a, err2 = strconv.ParseInt(aux, 10, 64)
	}
	if err1 != nil || err2 != nil || e < 0 || a < 0 {
		return streamToken{}, matrix.InvalidParam("invalid stream token %q", tok)
	}
	return streamToken{Events: e, Aux: a}, nil
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
