// Package metricpoint holds the rules a reported metric point must meet,
// shared by the agent (which checks points data-plane services push to
// it, so that one bad point cannot block its report queue) and the
// control plane (which refuses batches breaking them). It must stay free
// of either side's code.
package metricpoint

import (
	"fmt"
	"math"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// Limits of one point.
const (
	MaxNameLen    = 128
	MaxLabels     = 16
	MaxLabelValue = 256
	MaxSourceLen  = 64
)

var name = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// CheckName reports whether n is a Prometheus-style metric or label name
// of at most MaxNameLen characters.
func CheckName(n string) error {
	if len(n) > MaxNameLen || !name.MatchString(n) {
		return fmt.Errorf("%q must match [a-zA-Z_:][a-zA-Z0-9_:]* and be at most %d characters", n, MaxNameLen)
	}
	return nil
}

// CheckLabels checks the number of labels, their names and value sizes.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("at most %d labels", MaxLabels)
	}
	for k, v := range labels {
		if err := CheckName(k); err != nil {
			return fmt.Errorf("label name %w", err)
		}
		if len(v) > MaxLabelValue {
			return fmt.Errorf("label %s: value longer than %d bytes", k, MaxLabelValue)
		}
		if err := CheckText(v); err != nil {
			return fmt.Errorf("label %s: %w", k, err)
		}
	}
	return nil
}

// CheckSource checks the name of who pushed a point.
func CheckSource(s string) error {
	if s == "" || len(s) > MaxSourceLen {
		return fmt.Errorf("source must be 1 to %d characters", MaxSourceLen)
	}
	return CheckText(s)
}

// CheckValue refuses NaN and infinities, which not every store can hold.
func CheckValue(v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("value %v is not a finite number", v)
	}
	return nil
}

// CheckText refuses text a store cannot hold: invalid UTF-8 and control
// characters (PostgreSQL TEXT refuses NUL outright).
func CheckText(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return fmt.Errorf("%q holds a control character", s)
		}
	}
	return nil
}
