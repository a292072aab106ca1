package server

import (
	"encoding/base64"
	"net/http"
	"sort"
	"unicode/utf8"

	"hearth/server/matrix"
)

// Mutual rooms (spec v1.19, "Mutual Rooms"; MSC2666): the rooms the caller
// and another user are both joined to. Clients show them on a user's
// profile ("you are both in ...").

// mutualRoomsBatch is how many rooms one answer lists (Synapse's 100).
const mutualRoomsBatch = 100

// GET /_matrix/client/v1/mutual_rooms
// GET /_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms
//
// The batch token is the last room ID of the previous batch, base64url:
// room IDs sort stably, so the next batch starts after it, and it stays
// valid for as long as the client wants. A room joined after the first
// batch is listed only if it sorts later, which the spec allows.
func (s *Server) getMutualRooms(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	q := r.URL.Query()
	if len(q["user_id"]) > 1 || len(q["from"]) > 1 {
		return matrix.InvalidParam("user_id and from may be given once")
	}
	other := q.Get("user_id")
	if other == "" {
		return matrix.MissingParam("user_id is required")
	}
	if !matrix.ValidUserID(other) {
		return matrix.InvalidParam("user_id is not a valid user ID")
	}
	if other == me.UserID {
		return matrix.InvalidParam("you cannot ask for the rooms you share with yourself")
	}
	after := ""
	if from := q.Get("from"); from != "" {
		b, err := base64.RawURLEncoding.DecodeString(from)
		if err != nil || !utf8.Valid(b) || len(b) == 0 {
			return matrix.InvalidParam("from is not a batch token of this endpoint")
		}
		after = string(b)
	}
	rooms, err := s.store.MutualRooms(r.Context(), me.UserID, other)
	if err != nil {
		return err
	}
	count := len(rooms)
	rooms = rooms[sort.SearchStrings(rooms, after+"\x00"):]
	body := map[string]any{"count": count}
	batch := mutualRoomsBatch
	if s.mutualBatch > 0 {
		batch = s.mutualBatch
	}
	if len(rooms) > batch {
		rooms = rooms[:batch]
		body["next_batch"] = base64.RawURLEncoding.EncodeToString([]byte(rooms[len(rooms)-1]))
	}
	if rooms == nil {
		rooms = []string{}
	}
	body["joined"] = rooms
	return writeJSON(w, http.StatusOK, body)
}
