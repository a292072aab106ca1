package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"hearth/server/matrix"
	"hearth/server/rooms"
)

// Server keys (Server-Server API, "Retrieving server keys"): this server's
// own keys, and the notary endpoints through which other servers ask it
// for a third server's keys. The key ring (server/federation) does the
// fetching and checking; these handlers add this server's signature.

// notaryParallelism bounds the key lookups one notary request runs at
// once: a joining server may ask about hundreds of servers in one request.
const notaryParallelism = 8

// GET /_matrix/key/v2/server
// GET /_matrix/key/v2/server/{keyId} (the key ID, from older versions of
// the spec, is ignored: every key is returned, as Synapse does)
func (s *Server) getServerKeys(w http.ResponseWriter, r *http.Request) error {
	raw, err := s.keys.OwnServerKeys()
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, json.RawMessage(raw))
}

// GET /_matrix/key/v2/query/{serverName}
// GET /_matrix/key/v2/query/{serverName}/{keyId} (older spec versions)
func (s *Server) getKeyQuery(w http.ResponseWriter, r *http.Request) error {
	server, err := pathParam(r, "serverName")
	if err != nil {
		return err
	}
	minValid, err := s.minimumValidUntil(r.URL.Query().Get("minimum_valid_until_ts"))
	if err != nil {
		return err
	}
	q := notaryQuery{server: server, minValidTS: minValid}
	keyID, err := pathParam(r, "keyId")
	if err != nil {
		return err
	}
	if keyID != "" {
		q.keyIDs = []string{keyID}
	}
	keys, err := s.notaryKeys(r.Context(), []notaryQuery{q})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"server_keys": keys})
}

// POST /_matrix/key/v2/query
func (s *Server) postKeyQuery(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.ServerKeys == nil {
		return matrix.MissingParam("server_keys is required")
	}
	now := s.now().UnixMilli()
	queries := make([]notaryQuery, 0, len(req.ServerKeys))
	for server, criteria := range req.ServerKeys {
		// "If no key IDs are given to be queried, the notary server should
		// query for all keys." Without minimum_valid_until_ts, the
		// notary's current time is used.
		q := notaryQuery{server: server, minValidTS: now}
		for id, c := range criteria {
			q.keyIDs = append(q.keyIDs, id)
			if c.MinimumValidUntilTS != nil {
				q.minValidTS = max(q.minValidTS, *c.MinimumValidUntilTS)
			}
		}
		queries = append(queries, q)
	}
	keys, err := s.notaryKeys(r.Context(), queries)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"server_keys": keys})
}

// notaryQuery is one server a notary request asks about.
type notaryQuery struct {
	server     string
	keyIDs     []string
	minValidTS int64
}

// notaryKeys answers notary queries: each server's latest key response
// (fetched again when it will not do), with this server's signature added
// beside the origin's (spec: "The notary server must sign the keys
// returned by the queried servers"). Servers with no known keys are left
// out; the list is empty, never null.
func (s *Server) notaryKeys(ctx context.Context, queries []notaryQuery) ([]json.RawMessage, error) {
	results := make([][]json.RawMessage, len(queries))
	errs := make([]error, len(queries))
	sem := make(chan struct{}, notaryParallelism)
	var wg sync.WaitGroup
	for i, q := range queries {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			raws, err := s.keys.NotaryKeys(ctx, q.server, q.keyIDs, q.minValidTS)
			if err != nil {
				errs[i] = err
				return
			}
			for _, raw := range raws {
				if q.server != s.cfg.ServerName {
					if raw, err = rooms.SignJSON(raw, s.roomsKey()); err != nil {
						// Stored as received and checked then: not expected.
						logFrom(ctx, s.log).Warn("notary: cannot sign stored key response", "server", q.server, "err", err)
						continue
					}
				}
				results[i] = append(results[i], json.RawMessage(raw))
			}
		})
	}
	wg.Wait()
	out := []json.RawMessage{}
	for i := range queries {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out = append(out, results[i]...)
	}
	return out, nil
}

// minimumValidUntil parses minimum_valid_until_ts; absent: now.
func (s *Server) minimumValidUntil(v string) (int64, error) {
	if v == "" {
		return s.now().UnixMilli(), nil
	}
	ts, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, matrix.InvalidParam("minimum_valid_until_ts must be an integer")
	}
	return ts, nil
}
