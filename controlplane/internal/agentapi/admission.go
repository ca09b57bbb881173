package agentapi

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults for the config stream limits of Config left zero.
const (
	// DefaultStreamAdmitRate is how many new config streams a replica
	// admits per second: after a control plane restart, thousands of
	// agents reconnect at once, and each new stream costs store reads to
	// catch up.
	DefaultStreamAdmitRate = 50.0
	// DefaultStreamAdmitBurst is how many new config streams may be
	// admitted at once beyond the rate.
	DefaultStreamAdmitBurst = 100
	// DefaultStreamSendTimeout is how long a send to one agent may block
	// before its stream is ended as fallen behind.
	DefaultStreamSendTimeout = 30 * time.Second
	// maxRetryDelay bounds the retry hint given to a refused stream.
	maxRetryDelay = 5 * time.Minute
)

// streamLimits fills the config stream limits left zero and refuses
// negative ones.
func (cfg *Config) streamLimits() error {
	if cfg.StreamAdmitRate < 0 || cfg.StreamAdmitBurst < 0 || cfg.StreamSendTimeout < 0 {
		return errors.New("agentapi: stream limits must not be negative")
	}
	if cfg.StreamAdmitRate == 0 {
		cfg.StreamAdmitRate = DefaultStreamAdmitRate
	}
	if cfg.StreamAdmitBurst == 0 {
		cfg.StreamAdmitBurst = DefaultStreamAdmitBurst
	}
	if cfg.StreamSendTimeout == 0 {
		cfg.StreamSendTimeout = DefaultStreamSendTimeout
	}
	return nil
}

// admission admits new config streams at a bounded rate: a token bucket
// holding up to burst tokens, refilled at rate tokens per second, one
// token per stream. A refused stream is told when to come back: each
// refusal books the next free slot at the admission rate, so a storm of n
// refused agents is spread over about n/rate seconds rather than all
// retrying at once, and jitter spreads those told the same slot. It is
// safe for concurrent use and never blocks beyond its own short critical
// section.
type admission struct {
	rate  float64 // tokens per second, > 0
	burst float64 // >= 1
	now   func() time.Time
	randN func(n int64) int64 // in [0, n), like rand.Int64N

	mu       sync.Mutex
	tokens   float64
	last     time.Time // when tokens was last brought up to date
	nextSlot time.Time // the earliest time not yet promised to a refused stream
}

func newAdmission(rate float64, burst int, now func() time.Time) *admission {
	return &admission{rate: rate, burst: float64(max(burst, 1)), now: now, randN: rand.Int64N, tokens: float64(max(burst, 1)), last: now()}
}

// admit takes a token and returns true, or returns false and how long the
// refused stream should wait before trying again: until its slot, plus
// jitter of up to half that wait or one slot, whichever is longer; at most
// maxRetryDelay and a half.
func (a *admission) admit() (ok bool, retry time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if now.After(a.last) {
		a.tokens = min(a.burst, a.tokens+now.Sub(a.last).Seconds()*a.rate)
		a.last = now
	}
	if a.tokens >= 1 {
		a.tokens--
		return true, 0
	}
	interval := time.Duration(float64(time.Second) / a.rate)
	slot := now.Add(time.Duration((1 - a.tokens) / a.rate * float64(time.Second))) // the next token
	if a.nextSlot.After(slot) {
		slot = a.nextSlot
	}
	if limit := now.Add(maxRetryDelay); slot.After(limit) {
		slot = limit
	}
	a.nextSlot = slot.Add(interval)
	wait := slot.Sub(now)
	spread := min(max(wait/2, interval, time.Millisecond), maxRetryDelay/2)
	return false, wait + time.Duration(a.randN(int64(spread)))
}
