package report

import (
	"fmt"
	"sync"
	"time"
)

// LastError keeps the newest error worth an operator's attention, for the
// status's last_error: a loop records its errors under its own name and
// clears them once it makes progress again, which leaves another loop's
// newer error alone. The zero value is ready; it is safe for concurrent
// use.
type LastError struct {
	mu  sync.Mutex
	by  string
	msg string
	n   int // errors recorded, ever
}

// Set records err as the newest error, from loop by.
func (l *LastError) Set(by string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.by, l.msg = by, fmt.Sprintf("%s at %s: %v", by, time.Now().UTC().Format(time.RFC3339), err)
	l.n++
}

// Clear forgets the newest error if loop by recorded it.
func (l *LastError) Clear(by string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == by {
		l.by, l.msg = "", ""
	}
}

// Get returns the newest error's text, "" when none.
func (l *LastError) Get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msg
}

// Recorded is how many errors were ever recorded.
func (l *LastError) Recorded() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}
