package server

import (
	"math"
	"sync"
	"time"

	"hearth/config"
	"hearth/server/matrix"
)

// bucket is a token bucket: it holds up to burst tokens and refills at rate
// per second. Each action takes one token.
type bucket struct {
	tokens float64
	last   time.Time
}

// limiter is a set of buckets keyed by IP, user or account name, with one
// rate. Memory is bounded: full buckets carry no information and are dropped
// when the map grows.
type limiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	buckets map[string]*bucket
	now     func() time.Time
}

func newLimiter(rl config.RateLimit, now func() time.Time) *limiter {
	return &limiter{rate: rl.PerSecond, burst: math.Max(rl.BurstCount, 1), buckets: map[string]*bucket{}, now: now}
}

// take spends one token for key, or returns M_LIMIT_EXCEEDED with the wait
// until a token is available. A limiter whose rate is 0 never limits.
func (l *limiter) take(key string) error {
	if l == nil || l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.refill(key, now)
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
		return matrix.LimitExceeded(wait)
	}
	b.tokens--
	return nil
}

// check reports the limit without spending (for failed-attempt counters,
// which are only charged when an attempt fails).
func (l *limiter) check(key string) error {
	if l == nil || l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key, l.now())
	if b.tokens < 1 {
		return matrix.LimitExceeded(time.Duration((1 - b.tokens) / l.rate * float64(time.Second)))
	}
	return nil
}

// charge spends a token even if none is left.
func (l *limiter) charge(key string) { l.chargeN(key, 1) }

// chargeN spends n tokens even if fewer are left (for limits counted in
// bytes, known only once spent).
func (l *limiter) chargeN(key string, n float64) {
	if l == nil || l.rate <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(key, l.now()).tokens -= n
}

func (l *limiter) refill(key string, now time.Time) *bucket {
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) > 50_000 {
			l.gc(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
		return b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	return b
}

func (l *limiter) gc(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// limiters are the server's rate limits, from rc_login and rc_registration.
type limiters struct {
	loginAddress *limiter
	loginAccount *limiter
	loginFailed  *limiter
	registration *limiter
	// remoteMedia counts bytes fetched from other servers for a client
	// address (media_remote.go).
	remoteMedia *limiter
	// loginToken bounds login tokens per user (client_login_token.go).
	loginToken *limiter
	// delayedMgmt bounds the management of delayed events per user, or
	// per address without an access token (delayed_events.go).
	delayedMgmt *limiter
	// threePID bounds validation emails per client and per address, and
	// failed token submissions (rc_3pid_validation; email_validation.go).
	threePID *limiter
	// rendezvous bounds MSC4108 rendezvous sessions created per address
	// (client_rendezvous.go).
	rendezvous *limiter
}

func newLimiters(c *config.Config, now func() time.Time) *limiters {
	return &limiters{
		loginAddress: newLimiter(c.RCLogin.Address, now),
		loginAccount: newLimiter(c.RCLogin.Account, now),
		loginFailed:  newLimiter(c.RCLogin.FailedAttempts, now),
		registration: newLimiter(c.RCRegistration, now),
		remoteMedia: newLimiter(config.RateLimit{PerSecond: float64(c.RemoteMediaDownloadPerSecond),
			BurstCount: float64(c.RemoteMediaDownloadBurstCount)}, now),
		// One a minute, as Synapse: each token is a new session, and the
		// spec asks for stricter limits than usual here.
		loginToken:  newLimiter(config.RateLimit{PerSecond: 1.0 / 60, BurstCount: 1}, now),
		delayedMgmt: newLimiter(c.RCDelayedEventMgmt, now),
		threePID:    newLimiter(c.RC3PIDValidation, now),
		// A QR-code login makes one or two; more is someone filling memory.
		rendezvous: newLimiter(config.RateLimit{PerSecond: 0.2, BurstCount: 10}, now),
	}
}
