package window

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that no property value makes Parse panic, that its
// errors are FieldErrors on the property's fields, and that a window it
// accepts has a Next that agrees with Contains.
func FuzzParse(f *testing.F) {
	at := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC).Unix()
	f.Add(`{"time_zone": "Europe/Berlin", "days": ["sat", "sun"], "start": "02:00", "duration": "4h"}`, at)
	f.Add(`{"time_zone": "America/New_York", "start": "02:30", "duration": "24h"}`, at)
	f.Add(`{"time_zone": "Pacific/Apia", "days": ["fri"], "start": "02:00", "duration": "1m"}`, int64(1325239200))
	f.Add(`{"time_zone": "Australia/Lord_Howe", "days": [], "start": "23:59", "duration": "23h59m59.999999999s"}`, int64(-1))
	f.Add(`{"time_zone": "UTC", "days": ["sun", "sun"], "start": "24:00", "duration": "25h", "x": 1}`, at)
	f.Add(`{"time_zone": 1, "days": "sat", "start": null, "duration": 3600}`, at)
	f.Add(`{"time_zone": "../zoneinfo", "days": [1, null, {}], "start": "7:5", "duration": "-1h"}`, at)
	f.Add(`["sat"]`, at)
	f.Add(`null`, at)
	f.Fuzz(func(t *testing.T, data string, sec int64) {
		var v any
		if json.Unmarshal([]byte(data), &v) != nil {
			return
		}
		w, err := Parse(v)
		if err != nil {
			var errs FieldErrors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("got %v; want FieldErrors", err)
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Field, fieldPrefix) || e.Reason == "" {
					t.Fatalf("got %q; want a reason for a field under %s", e, fieldPrefix)
				}
			}
			return
		}
		if w.String() == "" {
			t.Fatalf("got an empty String")
		}
		// Years 1900 to 2200: the rules of the zones are known, or extended
		// from the last.
		const span = 300 * 365 * 24 * 60 * 60
		at := time.Unix(-2208988800+(sec%span+span)%span, sec&(1<<30-1)).UTC()
		checkNext(t, w, at)
	})
}
