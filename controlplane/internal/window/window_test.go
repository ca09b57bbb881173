package window

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// spec returns a property value as JSON decoding gives it; days may be nil
// for none.
func spec(zone string, days []string, start, duration string) map[string]any {
	v := map[string]any{"time_zone": zone, "start": start, "duration": duration}
	if days != nil {
		list := make([]any, len(days))
		for i, d := range days {
			list[i] = d
		}
		v["days"] = list
	}
	return v
}

func mustParse(tb testing.TB, v any) Window {
	tb.Helper()
	w, err := Parse(v)
	if err != nil {
		tb.Fatalf("Parse(%v): %v", v, err)
	}
	return w
}

func mustTime(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"example", spec("Europe/Berlin", []string{"sat", "sun"}, "02:00", "4h"), "sat,sun 02:00 for 4h0m0s Europe/Berlin"},
		{"days absent", spec("UTC", nil, "00:00", "1m"), "daily 00:00 for 1m0s UTC"},
		{"days empty", spec("UTC", []string{}, "23:59", "24h"), "daily 23:59 for 24h0m0s UTC"},
		{"days null", map[string]any{"time_zone": "UTC", "days": nil, "start": "12:30", "duration": "90m"}, "daily 12:30 for 1h30m0s UTC"},
		{"days out of order", spec("America/New_York", []string{"sun", "fri", "mon"}, "01:05", "1h1m1s"), "mon,fri,sun 01:05 for 1h1m1s America/New_York"},
		{"every day listed", spec("Asia/Kolkata", []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, "09:00", "8h"), "daily 09:00 for 8h0m0s Asia/Kolkata"},
		{"days as []string", map[string]any{"time_zone": "Etc/UTC", "days": []string{"wed"}, "start": "07:45", "duration": "1440m"}, "wed 07:45 for 24h0m0s Etc/UTC"},
		{"fractional duration", spec("Pacific/Chatham", []string{"thu"}, "10:00", "1.5h"), "thu 10:00 for 1h30m0s Pacific/Chatham"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Parse(tt.v)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := w.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	// valid is a valid window with one field replaced (or, with a nil
	// value, removed).
	valid := func(key string, value any) map[string]any {
		v := spec("Europe/Berlin", []string{"sat", "sun"}, "02:00", "4h")
		if value == nil {
			delete(v, key)
		} else {
			v[key] = value
		}
		return v
	}
	const p = fieldPrefix
	tests := []struct {
		name string
		v    any
		// want is the fields of the errors in order, each with a part of
		// its reason.
		want [][2]string
	}{
		{"nil", nil, [][2]string{{p, "must be an object"}}},
		{"string", "sat 02:00", [][2]string{{p, "must be an object"}}},
		{"list", []any{"sat"}, [][2]string{{p, "must be an object"}}},
		{"map of strings", map[string]string{"time_zone": "UTC"}, [][2]string{{p, "must be an object"}}},
		{"empty", map[string]any{}, [][2]string{
			{p + ".time_zone", "required"},
			{p + ".start", "required"},
			{p + ".duration", "required"},
		}},
		{"all null", map[string]any{"time_zone": nil, "days": nil, "start": nil, "duration": nil}, [][2]string{
			{p + ".time_zone", "required"},
			{p + ".start", "required"},
			{p + ".duration", "required"},
		}},

		{"time_zone missing", valid("time_zone", nil), [][2]string{{p + ".time_zone", "required"}}},
		{"time_zone empty", valid("time_zone", ""), [][2]string{{p + ".time_zone", "required"}}},
		{"time_zone number", valid("time_zone", 1.0), [][2]string{{p + ".time_zone", "must be a string"}}},
		{"time_zone list", valid("time_zone", []any{"UTC"}), [][2]string{{p + ".time_zone", "must be a string"}}},
		{"time_zone unknown", valid("time_zone", "Mars/Olympus_Mons"), [][2]string{{p + ".time_zone", `unknown time zone "Mars/Olympus_Mons"`}}},
		{"time_zone offset", valid("time_zone", "+02:00"), [][2]string{{p + ".time_zone", "unknown time zone"}}},
		{"time_zone path", valid("time_zone", "../../etc/passwd"), [][2]string{{p + ".time_zone", "unknown time zone"}}},
		{"time_zone absolute path", valid("time_zone", "/usr/share/zoneinfo/UTC"), [][2]string{{p + ".time_zone", "unknown time zone"}}},
		{"time_zone Local", valid("time_zone", "Local"), [][2]string{{p + ".time_zone", `not "Local"`}}},

		{"days string", valid("days", "sat"), [][2]string{{p + ".days", "must be a list"}}},
		{"days object", valid("days", map[string]any{"sat": true}), [][2]string{{p + ".days", "must be a list"}}},
		{"days number", valid("days", 6.0), [][2]string{{p + ".days", "must be a list"}}},
		{"day number", valid("days", []any{"sat", 0.0}), [][2]string{{p + ".days[1]", "must be a day name"}}},
		{"day null", valid("days", []any{nil}), [][2]string{{p + ".days[0]", "must be a day name"}}},
		{"day capitalised", valid("days", []any{"Sat"}), [][2]string{{p + ".days[0]", `unknown day "Sat"`}}},
		{"day long", valid("days", []any{"saturday"}), [][2]string{{p + ".days[0]", `unknown day "saturday"`}}},
		{"day misaligned", valid("days", []any{"uns"}), [][2]string{{p + ".days[0]", `unknown day "uns"`}}},
		{"day empty", valid("days", []any{""}), [][2]string{{p + ".days[0]", `unknown day ""`}}},
		{"day duplicate", valid("days", []any{"sat", "sun", "sat"}), [][2]string{{p + ".days[2]", `"sat" repeats days[0]`}}},
		{"day duplicates", valid("days", []string{"mon", "mon", "xyz", "mon"}), [][2]string{
			{p + ".days[1]", `"mon" repeats days[0]`},
			{p + ".days[2]", `unknown day "xyz"`},
			{p + ".days[3]", `"mon" repeats days[0]`},
		}},

		{"start missing", valid("start", nil), [][2]string{{p + ".start", "required"}}},
		{"start number", valid("start", 2.0), [][2]string{{p + ".start", "must be a string"}}},
		{"start 24:00", valid("start", "24:00"), [][2]string{{p + ".start", `got "24:00"`}}},
		{"start 7:5", valid("start", "7:5"), [][2]string{{p + ".start", `got "7:5"`}}},
		{"start ab:cd", valid("start", "ab:cd"), [][2]string{{p + ".start", `got "ab:cd"`}}},
		{"start 12:60", valid("start", "12:60"), [][2]string{{p + ".start", `got "12:60"`}}},
		{"start 7:05", valid("start", "7:05"), [][2]string{{p + ".start", `got "7:05"`}}},
		{"start seconds", valid("start", "02:00:00"), [][2]string{{p + ".start", `got "02:00:00"`}}},
		{"start dot", valid("start", "02.00"), [][2]string{{p + ".start", `got "02.00"`}}},
		{"start signed", valid("start", "+2:00"), [][2]string{{p + ".start", `got "+2:00"`}}},
		{"start empty", valid("start", ""), [][2]string{{p + ".start", `got ""`}}},
		{"start 12h", valid("start", "2am"), [][2]string{{p + ".start", `got "2am"`}}},

		{"duration missing", valid("duration", nil), [][2]string{{p + ".duration", "required"}}},
		{"duration number", valid("duration", 3600.0), [][2]string{{p + ".duration", "must be a string"}}},
		{"duration 0", valid("duration", "0"), [][2]string{{p + ".duration", "got 0s: must be between 1m0s and 24h0m0s"}}},
		{"duration 30s", valid("duration", "30s"), [][2]string{{p + ".duration", "got 30s: must be between"}}},
		{"duration 59.999s", valid("duration", "59.999s"), [][2]string{{p + ".duration", "must be between"}}},
		{"duration 25h", valid("duration", "25h"), [][2]string{{p + ".duration", "got 25h0m0s: must be between"}}},
		{"duration 24h1ns", valid("duration", "24h1ns"), [][2]string{{p + ".duration", "must be between"}}},
		{"duration negative", valid("duration", "-4h"), [][2]string{{p + ".duration", "must be between"}}},
		{"duration words", valid("duration", "4 hours"), [][2]string{{p + ".duration", `got "4 hours": want a duration`}}},
		{"duration no unit", valid("duration", "4"), [][2]string{{p + ".duration", `got "4"`}}},
		{"duration overflow", valid("duration", "9999999999h"), [][2]string{{p + ".duration", `got "9999999999h"`}}},

		{"unknown key", valid("timezone", "UTC"), [][2]string{{p + ".timezone", "unknown field"}}},
		{"everything wrong", map[string]any{
			"zone": "UTC", "time_zone": "Nowhere", "days": []any{"sun", "sun"},
			"start": "25:00", "duration": "0s", "end": "06:00",
		}, [][2]string{
			{p + ".time_zone", "unknown time zone"},
			{p + ".days[1]", "repeats"},
			{p + ".start", `got "25:00"`},
			{p + ".duration", "must be between"},
			{p + ".end", "unknown field"},
			{p + ".zone", "unknown field"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Parse(tt.v)
			if err == nil {
				t.Fatalf("got %v; want an error", w)
			}
			if w != (Window{}) {
				t.Errorf("got %v with the error; want the zero Window", w)
			}
			var errs FieldErrors
			if !errors.As(err, &errs) {
				t.Fatalf("got %T %v; want FieldErrors", err, err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe != errs[0] {
				t.Errorf("errors.As did not find the first *FieldError")
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors (%v); want %d", len(errs), err, len(tt.want))
			}
			for i, e := range errs {
				if e.Field != tt.want[i][0] || !strings.Contains(e.Reason, tt.want[i][1]) {
					t.Errorf("error %d: got %q; want field %q with reason containing %q", i, e, tt.want[i][0], tt.want[i][1])
				}
			}
		})
	}
}

func TestFieldErrorsError(t *testing.T) {
	_, err := Parse(map[string]any{"time_zone": "UTC", "start": "02:00"})
	want := "properties.maintenance_window.duration: required: a duration such as \"4h\" or \"90m\""
	if err == nil || err.Error() != want {
		t.Fatalf("got %v; want %s", err, want)
	}
	_, err = Parse(map[string]any{"time_zone": "UTC"})
	if err == nil || !strings.Contains(err.Error(), `"HH:MM" such as "02:00"; properties.maintenance_window.duration: `) {
		t.Fatalf("got %v; want the two errors joined by \"; \"", err)
	}
}

func TestFromProperties(t *testing.T) {
	tests := []struct {
		name    string
		props   map[string]any
		want    string // the window's String, "" for none
		wantErr string // the first error's field
	}{
		{"nil properties", nil, "", ""},
		{"no window", map[string]any{"region": "eu-central"}, "", ""},
		{"null window", map[string]any{Property: nil}, "", ""},
		{"window", map[string]any{"region": "eu-central", Property: spec("Europe/Berlin", []string{"sat", "sun"}, "02:00", "4h")}, "sat,sun 02:00 for 4h0m0s Europe/Berlin", ""},
		{"bad window", map[string]any{Property: spec("Europe/Berlin", []string{"sat"}, "2:00", "4h")}, "", "properties.maintenance_window.start"},
		{"not an object", map[string]any{Property: "sat 02:00"}, "", "properties.maintenance_window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := FromProperties(tt.props)
			if tt.wantErr != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantErr {
					t.Fatalf("got %v, %v; want an error on %s", w, err, tt.wantErr)
				}
				if w != nil {
					t.Errorf("got %v with the error; want nil", w)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromProperties: %v", err)
			}
			got := ""
			if w != nil {
				got = w.String()
			}
			if got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		w    Window
		want string
	}{
		{Window{}, "no window"},
		{mustParse(t, spec("Europe/Berlin", []string{"sun", "sat"}, "02:00", "4h")), "sat,sun 02:00 for 4h0m0s Europe/Berlin"},
		{mustParse(t, spec("UTC", []string{"sun"}, "23:05", "3h")), "sun 23:05 for 3h0m0s UTC"},
		{mustParse(t, spec("America/New_York", []string{"fri", "thu", "wed", "tue", "mon"}, "00:00", "45m")), "mon,tue,wed,thu,fri 00:00 for 45m0s America/New_York"},
		{mustParse(t, spec("Asia/Tokyo", nil, "09:30", "90s0m1m")), "daily 09:30 for 2m30s Asia/Tokyo"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.w.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestZeroWindow(t *testing.T) {
	var w Window
	now := time.Date(2026, 6, 6, 2, 0, 0, 0, time.UTC)
	if w.Contains(now) {
		t.Errorf("Contains: got true; want false")
	}
	if s, e := w.Next(now); !s.IsZero() || !e.IsZero() {
		t.Errorf("Next: got %v, %v; want zero times", s, e)
	}
}

func TestContainsNext(t *testing.T) {
	berlinWeekend := spec("Europe/Berlin", []string{"sat", "sun"}, "02:00", "4h")
	sundayNight := spec("Europe/Berlin", []string{"sun"}, "23:00", "3h")
	tests := []struct {
		name   string
		window map[string]any
		t      string
		// in is whether t is in a window; start and end are Next's.
		in         bool
		start, end string
	}{
		// 2026-06-06 is a Saturday; Berlin is at +02:00 in June.
		{"weekday before", berlinWeekend, "2026-06-03T12:00:00+02:00", false, "2026-06-06T02:00:00+02:00", "2026-06-06T06:00:00+02:00"},
		{"just before start", berlinWeekend, "2026-06-06T01:59:59.999999999+02:00", false, "2026-06-06T02:00:00+02:00", "2026-06-06T06:00:00+02:00"},
		{"at start", berlinWeekend, "2026-06-06T02:00:00+02:00", true, "2026-06-06T02:00:00+02:00", "2026-06-06T06:00:00+02:00"},
		{"inside", berlinWeekend, "2026-06-06T04:00:00+02:00", true, "2026-06-06T02:00:00+02:00", "2026-06-06T06:00:00+02:00"},
		{"inside, t in UTC", berlinWeekend, "2026-06-06T00:30:00Z", true, "2026-06-06T02:00:00+02:00", "2026-06-06T06:00:00+02:00"},
		{"after, t in another zone", berlinWeekend, "2026-06-07T23:30:00-02:00", false, "2026-06-13T02:00:00+02:00", "2026-06-13T06:00:00+02:00"},
		{"just before end", berlinWeekend, "2026-06-06T05:59:59.999999999+02:00", true, "2026-06-06T02:00:00+02:00", "2026-06-06T06:00:00+02:00"},
		{"at end", berlinWeekend, "2026-06-06T06:00:00+02:00", false, "2026-06-07T02:00:00+02:00", "2026-06-07T06:00:00+02:00"},
		{"second day", berlinWeekend, "2026-06-07T05:00:00+02:00", true, "2026-06-07T02:00:00+02:00", "2026-06-07T06:00:00+02:00"},
		{"after the last day", berlinWeekend, "2026-06-07T06:00:00+02:00", false, "2026-06-13T02:00:00+02:00", "2026-06-13T06:00:00+02:00"},
		{"in winter", berlinWeekend, "2026-01-03T01:00:00Z", true, "2026-01-03T02:00:00+01:00", "2026-01-03T06:00:00+01:00"},

		{"before crossing midnight", sundayNight, "2026-06-07T22:59:00+02:00", false, "2026-06-07T23:00:00+02:00", "2026-06-08T02:00:00+02:00"},
		{"crossing midnight, sunday", sundayNight, "2026-06-07T23:30:00+02:00", true, "2026-06-07T23:00:00+02:00", "2026-06-08T02:00:00+02:00"},
		{"crossing midnight and the week", sundayNight, "2026-06-08T01:00:00+02:00", true, "2026-06-07T23:00:00+02:00", "2026-06-08T02:00:00+02:00"},
		{"crossing the week, at end", sundayNight, "2026-06-08T02:00:00+02:00", false, "2026-06-14T23:00:00+02:00", "2026-06-15T02:00:00+02:00"},
		{"monday at 01:00 is not saturday's", sundayNight, "2026-06-09T01:00:00+02:00", false, "2026-06-14T23:00:00+02:00", "2026-06-15T02:00:00+02:00"},
		{"a week ahead", spec("UTC", []string{"wed"}, "12:00", "1h"), "2026-06-10T13:00:00Z", false, "2026-06-17T12:00:00Z", "2026-06-17T13:00:00Z"},

		{"every day, inside across midnight", spec("UTC", nil, "22:00", "4h"), "2026-06-10T01:00:00Z", true, "2026-06-09T22:00:00Z", "2026-06-10T02:00:00Z"},
		{"every day, at end", spec("UTC", nil, "22:00", "4h"), "2026-06-10T02:00:00Z", false, "2026-06-10T22:00:00Z", "2026-06-11T02:00:00Z"},
		{"every day, between", spec("UTC", []string{}, "22:00", "4h"), "2026-06-10T12:00:00Z", false, "2026-06-10T22:00:00Z", "2026-06-11T02:00:00Z"},
		{"every day, minute window", spec("Asia/Kolkata", nil, "00:00", "1m"), "2026-06-10T00:00:59+05:30", true, "2026-06-10T00:00:00+05:30", "2026-06-10T00:01:00+05:30"},
		{"every day, after minute window", spec("Asia/Kolkata", nil, "00:00", "1m"), "2026-06-10T00:01:00+05:30", false, "2026-06-11T00:00:00+05:30", "2026-06-11T00:01:00+05:30"},

		{"24h every day, at start", spec("UTC", nil, "00:00", "24h"), "2026-06-10T00:00:00Z", true, "2026-06-10T00:00:00Z", "2026-06-11T00:00:00Z"},
		{"24h every day, late", spec("UTC", nil, "00:00", "24h"), "2026-06-10T23:59:59Z", true, "2026-06-10T00:00:00Z", "2026-06-11T00:00:00Z"},
		{"24h monday, tuesday", spec("UTC", []string{"mon"}, "12:00", "24h"), "2026-06-09T11:59:00Z", true, "2026-06-08T12:00:00Z", "2026-06-09T12:00:00Z"},
		{"24h monday, at end", spec("UTC", []string{"mon"}, "12:00", "24h"), "2026-06-09T12:00:00Z", false, "2026-06-15T12:00:00Z", "2026-06-16T12:00:00Z"},
		{"24h sunday, monday", spec("Europe/Berlin", []string{"sun"}, "23:59", "24h"), "2026-06-08T23:58:00+02:00", true, "2026-06-07T23:59:00+02:00", "2026-06-08T23:59:00+02:00"},

		// Berlin springs forward on 2026-03-29 from 02:00 +01:00 to 03:00
		// +02:00 (01:00Z).
		{"berlin spring, start in gap, before", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-03-29T01:59:59+01:00", false, "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"},
		{"berlin spring, start in gap, at gap end", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-03-29T01:00:00Z", true, "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"},
		{"berlin spring, start in gap, inside", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-03-29T03:45:00+02:00", true, "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"},
		{"berlin spring, start in gap, at end", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-03-29T04:00:00+02:00", false, "2026-04-05T02:30:00+02:00", "2026-04-05T03:30:00+02:00"},
		{"berlin spring, start at gap start", spec("Europe/Berlin", []string{"sun"}, "02:00", "1h"), "2026-03-29T03:30:00+02:00", true, "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"},
		{"berlin spring, start at gap end", spec("Europe/Berlin", []string{"sun"}, "03:00", "1h"), "2026-03-29T03:30:00+02:00", true, "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"},
		{"berlin spring, across the gap", spec("Europe/Berlin", []string{"sat"}, "23:00", "4h"), "2026-03-29T03:59:00+02:00", true, "2026-03-28T23:00:00+01:00", "2026-03-29T04:00:00+02:00"},
		{"berlin spring, across the gap, at end", spec("Europe/Berlin", []string{"sat"}, "23:00", "4h"), "2026-03-29T04:00:00+02:00", false, "2026-04-04T23:00:00+02:00", "2026-04-05T03:00:00+02:00"},
		{"berlin spring, 24h, at gap end", spec("Europe/Berlin", nil, "02:00", "24h"), "2026-03-29T01:00:00Z", true, "2026-03-29T03:00:00+02:00", "2026-03-30T03:00:00+02:00"},
		{"berlin spring, 24h, two windows", spec("Europe/Berlin", nil, "02:00", "24h"), "2026-03-30T00:30:00Z", true, "2026-03-30T02:00:00+02:00", "2026-03-31T02:00:00+02:00"},
		{"berlin spring, 23h30m late", spec("Europe/Berlin", nil, "23:30", "24h"), "2026-03-30T00:15:00+02:00", true, "2026-03-29T23:30:00+02:00", "2026-03-30T23:30:00+02:00"},

		// Berlin falls back on 2026-10-25 from 03:00 +02:00 to 02:00 +01:00
		// (01:00Z).
		{"berlin fall, before first", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-10-25T00:29:59Z", false, "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"},
		{"berlin fall, at first", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-10-25T02:30:00+02:00", true, "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"},
		{"berlin fall, in the repeat", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-10-25T02:15:00+01:00", true, "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"},
		{"berlin fall, at second", spec("Europe/Berlin", []string{"sun"}, "02:30", "1h"), "2026-10-25T02:30:00+01:00", false, "2026-11-01T02:30:00+01:00", "2026-11-01T03:30:00+01:00"},
		{"berlin fall, across", spec("Europe/Berlin", []string{"sat"}, "22:00", "6h"), "2026-10-25T02:59:00+01:00", true, "2026-10-24T22:00:00+02:00", "2026-10-25T03:00:00+01:00"},
		{"berlin fall, across, at end", spec("Europe/Berlin", []string{"sat"}, "22:00", "6h"), "2026-10-25T03:00:00+01:00", false, "2026-10-31T22:00:00+01:00", "2026-11-01T04:00:00+01:00"},
		{"berlin fall, 24h, first", spec("Europe/Berlin", nil, "02:00", "24h"), "2026-10-25T00:00:00Z", true, "2026-10-25T02:00:00+02:00", "2026-10-26T01:00:00+01:00"},
		{"berlin fall, 24h, hour between", spec("Europe/Berlin", nil, "02:00", "24h"), "2026-10-26T01:30:00+01:00", false, "2026-10-26T02:00:00+01:00", "2026-10-27T02:00:00+01:00"},

		// New York springs forward on 2026-03-08 from 02:00 -05:00 to 03:00
		// -04:00 (07:00Z), and falls back on 2026-11-01 from 02:00 -04:00
		// to 01:00 -05:00 (06:00Z).
		{"new york spring, start in gap, before", spec("America/New_York", []string{"sun"}, "02:00", "30m"), "2026-03-08T01:59:00-05:00", false, "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"},
		{"new york spring, start in gap, inside", spec("America/New_York", []string{"sun"}, "02:00", "30m"), "2026-03-08T03:15:00-04:00", true, "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"},
		{"new york spring, start late in gap", spec("America/New_York", []string{"sun"}, "02:59", "30m"), "2026-03-08T03:29:59-04:00", true, "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"},
		{"new york spring, across", spec("America/New_York", []string{"sat"}, "23:00", "4h"), "2026-03-08T03:59:00-04:00", true, "2026-03-07T23:00:00-05:00", "2026-03-08T04:00:00-04:00"},
		{"new york spring, across, at end", spec("America/New_York", []string{"sat"}, "23:00", "4h"), "2026-03-08T04:00:00-04:00", false, "2026-03-14T23:00:00-04:00", "2026-03-15T03:00:00-04:00"},
		{"new york fall, at first", spec("America/New_York", []string{"sun"}, "01:30", "1h"), "2026-11-01T05:30:00Z", true, "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"},
		{"new york fall, in the repeat", spec("America/New_York", []string{"sun"}, "01:30", "1h"), "2026-11-01T01:15:00-05:00", true, "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"},
		{"new york fall, at second", spec("America/New_York", []string{"sun"}, "01:30", "1h"), "2026-11-01T01:30:00-05:00", false, "2026-11-08T01:30:00-05:00", "2026-11-08T02:30:00-05:00"},
		{"new york fall, repeat start", spec("America/New_York", []string{"sun"}, "01:00", "2h"), "2026-11-01T01:59:00-05:00", true, "2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00"},
		{"new york fall, 24h", spec("America/New_York", nil, "01:30", "24h"), "2026-11-02T00:15:00-05:00", true, "2026-11-01T01:30:00-04:00", "2026-11-02T00:30:00-05:00"},

		// Lord Howe springs forward half an hour on 2026-10-04, from 02:00
		// +10:30 to 02:30 +11:00.
		{"lord howe, start in gap", spec("Australia/Lord_Howe", []string{"sun"}, "02:10", "1h"), "2026-10-04T02:30:00+11:00", true, "2026-10-04T02:30:00+11:00", "2026-10-04T03:30:00+11:00"},
		// Samoa skipped Friday 2011-12-30 entirely, from 23:59:59 -10:00 on
		// the 29th to 00:00 +14:00 on the 31st.
		{"samoa, skipped day", spec("Pacific/Apia", []string{"fri"}, "02:00", "1h"), "2011-12-29T12:00:00-10:00", false, "2011-12-31T00:00:00+14:00", "2011-12-31T01:00:00+14:00"},
		{"samoa, window before the skipped day", spec("Pacific/Apia", []string{"thu"}, "23:30", "2h"), "2011-12-31T01:00:00+14:00", true, "2011-12-29T23:30:00-10:00", "2011-12-31T01:30:00+14:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := mustParse(t, tt.window)
			at := mustTime(t, tt.t)
			if got := w.Contains(at); got != tt.in {
				t.Errorf("%v: Contains(%v): got %v; want %v", w, at, got, tt.in)
			}
			start, end := w.Next(at)
			wantStart, wantEnd := mustTime(t, tt.start), mustTime(t, tt.end)
			if !start.Equal(wantStart) || !end.Equal(wantEnd) {
				t.Errorf("%v: Next(%v): got %v, %v; want %v, %v", w, at, start, end, wantStart, wantEnd)
			}
			if start.Location() != w.loc || end.Location() != w.loc {
				t.Errorf("Next: got times in %v, %v; want %v", start.Location(), end.Location(), w.loc)
			}
		})
	}
}

// randomWindow returns a random valid window in one of zones.
func randomWindow(tb testing.TB, r *rand.Rand, zones []string) Window {
	tb.Helper()
	var days []string
	if r.IntN(4) > 0 {
		days = []string{}
		for _, d := range r.Perm(7)[:r.IntN(7)] {
			days = append(days, dayName(time.Weekday(d)))
		}
	}
	var d time.Duration
	switch r.IntN(4) {
	case 0:
		d = []time.Duration{MinDuration, time.Hour, 23 * time.Hour, 23*time.Hour + 30*time.Minute, MaxDuration - time.Nanosecond, MaxDuration}[r.IntN(6)]
	case 1:
		d = MinDuration + time.Duration(r.Int64N(int64(MaxDuration-MinDuration+1)))
	default:
		d = time.Duration(1+r.IntN(24*60)) * time.Minute
	}
	minute := r.IntN(24 * 60)
	start := fmt.Sprintf("%02d:%02d", minute/60, minute%60)
	return mustParse(tb, spec(zones[r.IntN(len(zones))], days, start, d.String()))
}

// propertyZones returns zones with daylight saving changes of an hour, of
// half an hour, at midnight, in the southern hemisphere and more than once a
// year, a zone that skipped a day, and zones without changes.
func propertyZones() []string {
	return []string{
		"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham",
		"America/Santiago", "America/Havana", "Asia/Kolkata", "Africa/Casablanca", "Europe/Dublin",
		"Asia/Tehran", "America/St_Johns", "Pacific/Apia",
	}
}

// TestNextProperties checks Next and Contains against each other at random
// times: Next returns a window of the window's duration that contains t if
// and only if Contains(t), and nothing between t and the next window is in
// a window.
func TestNextProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	from := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	to := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	zones := propertyZones()
	for range 1000 {
		w := randomWindow(t, r, zones)
		for i := range 20 {
			at := from.Add(time.Duration(r.Int64N(int64(to.Sub(from)))))
			if i%3 == 0 {
				at = at.Truncate(time.Minute) // on a window's boundary more often
			}
			if !checkNext(t, w, at) {
				return
			}
		}
	}
}

// checkNext checks Next(at) against Contains, and reports whether all is
// well.
func checkNext(t testing.TB, w Window, at time.Time) bool {
	t.Helper()
	start, end := w.Next(at)
	in := w.Contains(at)
	switch {
	case !start.Before(end):
		t.Errorf("%v: Next(%v): got start %v not before end %v", w, at, start, end)
	case end.Sub(start) != w.duration:
		t.Errorf("%v: Next(%v): got %v, %v, %v apart; want %v", w, at, start, end, end.Sub(start), w.duration)
	case in != (!at.Before(start) && at.Before(end)):
		t.Errorf("%v: Next(%v): got %v, %v; Contains is %v", w, at, start, end, in)
	case start.Sub(at) > 8*24*time.Hour:
		t.Errorf("%v: Next(%v): got %v, more than 8 days ahead", w, at, start)
	case !w.Contains(start) || !w.Contains(end.Add(-time.Nanosecond)):
		t.Errorf("%v: Next(%v): got %v, %v; Contains is false at its start or last instant", w, at, start, end)
	default:
		if in {
			return true
		}
		gap := start.Sub(at)
		for _, p := range []time.Time{
			at.Add(gap / 7), at.Add(gap / 3), at.Add(gap / 2), at.Add(gap * 6 / 7),
			at.Add(time.Minute), start.Add(-time.Minute), start.Add(-time.Nanosecond),
		} {
			if p.After(at) && p.Before(start) && w.Contains(p) {
				t.Errorf("%v: Next(%v): got %v, %v; but Contains(%v)", w, at, start, end, p)
				return false
			}
		}
		return true
	}
	return false
}

// referenceStarts returns the starts of w's windows from from to to, found
// without time.Date: it walks the minutes, and a window starts at the first
// minute whose local wall-clock time is at or past the window's local start
// on one of its days. That is the first occurrence after a fall-back
// change, and the end of the gap when a spring-forward change skips the
// start.
func referenceStarts(w Window, from, to time.Time) []time.Time {
	var starts []time.Time
	seen := map[int64]bool{}
	from = from.Truncate(time.Minute)
	prev := wall(from.In(w.loc)) - 60
	for m := from; m.Before(to); m = m.Add(time.Minute) {
		cur := wall(m.In(w.loc))
		for day := floorDiv(prev, 86400); day <= floorDiv(cur, 86400); day++ {
			target := day*86400 + 60*int64(w.start)
			weekday := time.Unix(day*86400, 0).UTC().Weekday()
			if target > prev && target <= cur && w.days&(1<<weekday) != 0 && !seen[target] {
				seen[target] = true
				starts = append(starts, m.In(w.loc))
			}
		}
		prev = cur
	}
	return starts
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// TestReference checks Contains and Next against referenceStarts around
// every time zone change in a year of propertyZones, for random windows
// that start near the change.
func TestReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	years := map[string]int{"Pacific/Apia": 2011}
	for _, zone := range propertyZones() {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		year := 2026
		if y, ok := years[zone]; ok {
			year = y
		}
		// Zone changes in the year; for zones without, a day in it.
		changes := []time.Time{time.Date(year, 6, 15, 12, 0, 0, 0, loc)}
		for at := time.Date(year, 1, 1, 0, 0, 0, 0, loc); ; {
			_, next := at.ZoneBounds()
			if next.IsZero() || next.Year() > year {
				break
			}
			changes = append(changes, next)
			at = next
		}
		for _, change := range changes {
			local := change.Add(-time.Nanosecond).In(loc)
			for range 4 {
				// A window that starts near the change, on its day, the day
				// before or another.
				wd := local.Weekday()
				days := []string{dayName(wd), dayName((wd + 6) % 7)}
				if r.IntN(3) == 0 {
					days = append(days[:0], dayName(time.Weekday(r.IntN(7))))
				}
				minute := (local.Hour()*60 + local.Minute() + r.IntN(181) - 90 + 24*60) % (24 * 60)
				d := []time.Duration{MinDuration, 30 * time.Minute, 90 * time.Minute, 23 * time.Hour, 23*time.Hour + 30*time.Minute, MaxDuration}[r.IntN(6)]
				v := spec(zone, days, fmt.Sprintf("%02d:%02d", minute/60, minute%60), d.String())
				if r.IntN(4) == 0 {
					delete(v, "days")
				}
				w := mustParse(t, v)
				checkReference(t, w, change, r)
			}
		}
	}
}

func checkReference(t *testing.T, w Window, around time.Time, r *rand.Rand) {
	t.Helper()
	const day = 24 * time.Hour
	starts := referenceStarts(w, around.Add(-6*day), around.Add(12*day))
	points := []time.Time{}
	for _, s := range starts {
		e := s.Add(w.duration)
		points = append(points, s.Add(-time.Nanosecond), s, e.Add(-time.Nanosecond), e)
	}
	for at := around.Add(-3 * day); at.Before(around.Add(3 * day)); at = at.Add(time.Duration(r.IntN(20*60)) * time.Second) {
		points = append(points, at)
	}
	for _, at := range points {
		if at.Before(around.Add(-3*day)) || !at.Before(around.Add(3*day)) {
			continue
		}
		var in, next time.Time
		for _, s := range starts {
			switch {
			case !at.Before(s.Add(w.duration)):
			case !s.After(at):
				in = s // the last to start, as starts are in order
			case next.IsZero():
				next = s
			}
		}
		want := in
		if want.IsZero() {
			want = next
		}
		if got := w.Contains(at); got != !in.IsZero() {
			t.Fatalf("%v: Contains(%v): got %v; want %v (starts %v)", w, at, got, !got, starts)
		}
		if got, _ := w.Next(at); !got.Equal(want) {
			t.Fatalf("%v: Next(%v): got %v; want %v (starts %v)", w, at, got, want, starts)
		}
		if !checkNext(t, w, at) {
			return
		}
	}
}

func TestWeekdayNames(t *testing.T) {
	var got []string
	for d := time.Sunday; d <= time.Saturday; d++ {
		name := dayName(d)
		back, ok := weekday(name)
		if !ok || back != d {
			t.Errorf("weekday(%q): got %v, %v; want %v", name, back, ok, d)
		}
		got = append(got, name)
	}
	if want := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	for _, name := range []string{"", "su", "sunday", "unm", "nmo", "Mon", "MON", "sat "} {
		if d, ok := weekday(name); ok {
			t.Errorf("weekday(%q): got %v; want none", name, d)
		}
	}
}
