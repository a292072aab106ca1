package server

import (
	"context"
	"net/http"
)

// FederationAuth wraps h in s's X-Matrix check, so tests can put it in
// front of a handler of their own (a PUT with a body) over HTTP.
func FederationAuth(s *Server, h http.Handler) http.Handler { return s.federationAuth(h) }

// OriginFrom is the origin federationAuth authenticated.
func OriginFrom(ctx context.Context) string { return originFrom(ctx) }
