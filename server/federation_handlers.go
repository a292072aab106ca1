package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"hearth/server/matrix"
	"hearth/server/rooms"
)

// The Server-Server API's HTTP handlers (routes.go, the federation
// groups): each reads its parameters and the asking server (originFrom),
// and calls the function that does the work (federation_send.go,
// federation_join.go, federation_serve.go).

// fedBody reads the request body federationAuth already checked.
func fedBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, matrix.NotJSON("could not read body: %v", err)
	}
	return b, nil
}

// answer writes a handler's result as a 200 JSON answer.
func answer(w http.ResponseWriter, v any, err error) error {
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

// PUT /_matrix/federation/v1/send/{txnId}
func (s *Server) putFederationSend(w http.ResponseWriter, r *http.Request) error {
	txnID, err := pathParam(r, "txnId")
	if err != nil {
		return err
	}
	body, err := fedBody(r)
	if err != nil {
		return err
	}
	resp, err := s.receiveTransaction(r.Context(), originFrom(r.Context()), txnID, body)
	return answer(w, resp, err)
}

// makeHandler answers make_join, make_leave and make_knock.
func (s *Server) makeHandler(membership string) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		roomID, err := pathParam(r, "roomId")
		if err != nil {
			return err
		}
		userID, err := pathParam(r, "userId")
		if err != nil {
			return err
		}
		var versions []string
		if membership != rooms.MembershipLeave {
			versions = r.URL.Query()["ver"]
			if len(versions) == 0 {
				versions = []string{"1"} // the spec's default
			}
		}
		resp, err := s.makeMembership(r.Context(), originFrom(r.Context()), roomID, userID, membership, versions)
		return answer(w, resp, err)
	}
}

// sendHandler answers send_join, send_leave (v2) and send_knock.
func (s *Server) sendHandler(membership string) apiFunc {
	return s.sendHandlerVersion(membership, false)
}

// sendHandlerV1 answers the deprecated v1 send_join and send_leave: the
// same as v2, but the answer is wrapped as [200, answer] (an error is an
// ordinary error answer), and there is no omit_members.
func (s *Server) sendHandlerV1(membership string) apiFunc {
	return s.sendHandlerVersion(membership, true)
}

func (s *Server) sendHandlerVersion(membership string, v1 bool) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		roomID, err := pathParam(r, "roomId")
		if err != nil {
			return err
		}
		eventID, err := pathParam(r, "eventId")
		if err != nil {
			return err
		}
		body, err := fedBody(r)
		if err != nil {
			return err
		}
		omit := false
		if !v1 {
			if omit, err = queryBool(r, "omit_members", false); err != nil {
				return err
			}
		}
		resp, err := s.sendMembership(r.Context(), originFrom(r.Context()), roomID, eventID, membership, body, omit)
		if err == nil && v1 {
			return writeJSON(w, http.StatusOK, []any{http.StatusOK, resp})
		}
		return answer(w, resp, err)
	}
}

// GET /_matrix/federation/v1/event/{eventId}
func (s *Server) getFederationEvent(w http.ResponseWriter, r *http.Request) error {
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	resp, err := s.fedEvent(r.Context(), originFrom(r.Context()), eventID)
	return answer(w, resp, err)
}

// stateHandler answers GET /state/{roomId} and /state_ids/{roomId}.
func (s *Server) stateHandler(idsOnly bool) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		roomID, err := pathParam(r, "roomId")
		if err != nil {
			return err
		}
		resp, err := s.fedState(r.Context(), originFrom(r.Context()), roomID, r.URL.Query().Get("event_id"), idsOnly)
		return answer(w, resp, err)
	}
}

// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
func (s *Server) getFederationEventAuth(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	resp, err := s.fedEventAuth(r.Context(), originFrom(r.Context()), roomID, eventID)
	return answer(w, resp, err)
}

// GET /_matrix/federation/v1/backfill/{roomId}
func (s *Server) getFederationBackfill(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	limit := 10
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil {
			return matrix.InvalidParam("limit must be an integer")
		}
	}
	resp, err := s.fedBackfill(r.Context(), originFrom(r.Context()), roomID, r.URL.Query()["v"], limit)
	return answer(w, resp, err)
}

// POST /_matrix/federation/v1/get_missing_events/{roomId}
func (s *Server) postFederationMissingEvents(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	body, err := fedBody(r)
	if err != nil {
		return err
	}
	resp, err := s.fedMissingEvents(r.Context(), originFrom(r.Context()), roomID, body)
	return answer(w, resp, err)
}

// GET /_matrix/federation/v1/query/directory
func (s *Server) getFederationDirectory(w http.ResponseWriter, r *http.Request) error {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return matrix.MissingParam("room_alias is required")
	}
	resp, err := s.fedQueryDirectory(r.Context(), alias)
	return answer(w, resp, err)
}

// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
func (s *Server) putFederationInvite(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	body, err := fedBody(r)
	if err != nil {
		return err
	}
	resp, err := s.receiveInvite(r.Context(), originFrom(r.Context()), roomID, eventID, body)
	return answer(w, resp, err)
}

// GET and POST /_matrix/federation/v1/publicRooms: this server's room
// directory, when allow_public_rooms_over_federation lets other servers
// see it (off by default, as in Synapse).
func (s *Server) federationPublicRooms(w http.ResponseWriter, r *http.Request) error {
	if !s.cfg.AllowPublicRoomsOverFederation {
		return matrix.Forbidden("this server does not share its room directory (allow_public_rooms_over_federation)")
	}
	var req publicRoomsRequest
	if r.Method == http.MethodPost {
		body, err := fedBody(r)
		if err != nil {
			return err
		}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &req); err != nil {
				return matrix.BadJSON("%v", err)
			}
		}
	} else {
		q := r.URL.Query()
		req.Since = q.Get("since")
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return matrix.InvalidParam("limit must be a non-negative integer")
			}
			req.Limit = n
		}
	}
	resp, err := s.publicRoomList(r.Context(), req)
	return answer(w, resp, err)
}

// GET /_matrix/federation/v1/timestamp_to_event/{roomId}
func (s *Server) getFederationTimestampToEvent(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return matrix.InvalidParam("ts must be an integer")
	}
	if d := q.Get("dir"); d != "f" && d != "b" {
		return matrix.InvalidParam("dir must be f or b")
	}
	resp, err := s.fedTimestampToEvent(r.Context(), originFrom(r.Context()), roomID, ts, q.Get("dir") == "f")
	return answer(w, resp, err)
}

// GET /_matrix/federation/v1/hierarchy/{roomId}
func (s *Server) getFederationHierarchy(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	var suggestedOnly bool
	switch v := r.URL.Query().Get("suggested_only"); v {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return matrix.InvalidParam("suggested_only must be true or false")
	}
	resp, err := s.fedHierarchyOf(r.Context(), originFrom(r.Context()), roomID, suggestedOnly)
	return answer(w, resp, err)
}
