package server

import (
	"hearth/server/metrics"
	"hearth/server/timeline"
)

// Metrics is the server's collectors: the metrics listener serves them and
// the dashboard's charts read them.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// registerMetrics connects the collectors to what they measure; HTTP
// requests are counted by requestLog (middleware.go), federation
// transactions by the sender (federation_wiring.go).
func (s *Server) registerMetrics() {
	m := s.metrics
	m.SyncWaiters(s.notifier.waiting.Load)
	m.Caches(s.store.Caches())
	s.store.Caches().RegisterBuffer("sync_waiters", "long-polling /sync requests parked until something changes for them", func() (int, int64) {
		return int(s.notifier.waiting.Load()), -1
	})
	m.DBPools(s.store.Pools())
	s.store.ObserveWrites(m.WriteTransaction)
	s.timeline.Observe(eventCounter{m})
	if s.fedSender != nil {
		s.store.Caches().RegisterBuffer("federation_queues", "PDUs and EDUs waiting to be sent to other servers (entries: all destinations)", func() (int, int64) {
			n := 0
			for _, q := range s.fedSender.Queues() {
				n += q.PDUs + q.EDUs
			}
			return n, -1
		})
		m.FederationQueues(func() []metrics.Queue {
			qs := s.fedSender.Queues()
			out := make([]metrics.Queue, len(qs))
			for i, q := range qs {
				out[i] = metrics.Queue{Destination: q.Destination, PDUs: q.PDUs, EDUs: q.EDUs, Sending: q.Running, CatchingUp: q.CatchUp}
			}
			return out
		})
	}
}

// eventCounter counts the events that enter rooms' timelines.
type eventCounter struct{ m *metrics.Metrics }

func (o eventCounter) EventPersisted(p *timeline.Persisted) { o.m.EventPersisted(p.Local) }
