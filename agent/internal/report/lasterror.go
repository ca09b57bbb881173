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
	// Changed, when set (before first use), is notified whenever the
	// error changes: it is the status's Config.Changed.
	Changed Signal

	mu  sync.Mutex
	by  string
	msg string
	n   int // errors recorded, ever
}

// Set records err as the newest error, from loop by.
func (l *LastError) Set(by string, err error) {
	msg := fmt.Sprintf("%s at %s: %v", by, time.Now().UTC().Format(time.RFC3339), err)
	l.mu.Lock()
	l.by, l.msg = by, msg
	l.n++
	l.mu.Unlock()
	l.Changed.Notify()
}

// Clear forgets the newest error if loop by recorded it.
func (l *LastError) Clear(by string) {
	l.mu.Lock()
	cleared := l.by == by && l.msg != ""
	if cleared {
		l.by, l.msg = "", ""
	}
	l.mu.Unlock()
	if cleared {
		l.Changed.Notify()
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
