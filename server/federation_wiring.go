package server

import (
	"context"
	"encoding/json"
	"net/http"

	"hearth/config"
	"hearth/server/federation"
	"hearth/server/timeline"
)

// Federation's parts, built from the config: the transport that finds and
// dials other servers, the signed client on top of it, the sender of this
// server's events, and the fetcher the room pipeline asks for missing
// events.

// federationHTTP is the HTTP client for other servers' APIs, or nil when
// the config cannot make one (config.Validate reports why at start).
func (s *Server) federationHTTP() *http.Client {
	tr, err := federation.NewTransportFromConfig(s.cfg)
	if err != nil {
		s.log.Error("federation disabled: cannot build its transport", "err", err)
		return nil
	}
	s.fedTransport = tr
	return &http.Client{Transport: tr}
}

// trustedKeyServers converts trusted_key_servers for the key ring.
func trustedKeyServers(cfg *config.Config) []federation.TrustedKeyServer {
	out := make([]federation.TrustedKeyServer, 0, len(cfg.TrustedKeyServers))
	for _, t := range cfg.TrustedKeyServers {
		out = append(out, federation.TrustedKeyServer{ServerName: t.ServerName, VerifyKeys: t.Keys()})
	}
	return out
}

// startFederation builds the client, the sender and the fetcher; Run runs
// the sender.
func (s *Server) startFederation(hc *http.Client) {
	key := s.roomsKey()
	s.fedClient = &federation.Client{HTTP: hc, Web: s.fedTransport.WebClient(), Sign: func(req *http.Request, destination string, content []byte) error {
		return federation.SignRequest(req, key, s.cfg.ServerName, destination, content)
	}}
	s.fedSender = federation.NewSender(federation.SenderOptions{Store: s.store, ServerName: s.cfg.ServerName,
		Send: s.fedClient.SendTransaction, Log: s.log, Now: s.now, Allowed: s.fedTransport.Allowed, Outbox: fedOutbox{s},
		Observe: s.metrics.Transaction})
	s.timeline.SetFetcher(federation.Fetcher{Client: s.fedClient})
	s.timeline.Observe(senderObserver{s.fedSender})
	s.timeline.Observe(deviceListObserver{s})
}

// senderObserver tells the sender about every event that entered a room.
type senderObserver struct{ s *federation.Sender }

func (o senderObserver) EventPersisted(p *timeline.Persisted) {
	changed := p.Event.Type == "m.room.member"
	for _, c := range p.Changes {
		changed = changed || c.Key.Type == "m.room.member"
	}
	o.s.EventPersisted(p.Event.RoomID, changed)
}

// sendEDU sends an ephemeral event about a room (typing, a receipt) to the
// other servers in it. Best effort: EDUs are not persisted.
func (s *Server) sendEDU(roomID, typ string, content any) {
	if s.fedSender == nil {
		return
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return
	}
	// A detached context: the request that caused the EDU may end first.
	servers, err := s.store.JoinedServers(context.Background(), roomID)
	if err != nil {
		s.log.Warn("federation: cannot list the servers of a room for an EDU", "room_id", roomID, "err", err)
		return
	}
	s.fedSender.SendEDUs(servers, federation.EDU{Type: typ, Content: raw})
}
