package window

import (
	"fmt"
	"github.com/cairnhq/cairn/controlplane/internal/fielderr"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // zones load on machines without a zoneinfo database
)

// Property is the cluster property that holds a cluster's maintenance
// window.
const Property = "maintenance_window"

// MinDuration and MaxDuration bound a window's duration, inclusive.
const (
	MinDuration = time.Minute
	MaxDuration = 24 * time.Hour
)

const (
	// fieldPrefix is the API path of the property; every FieldError's
	// Field starts with it.
	fieldPrefix = "properties." + Property

	// dayNames are the three-letter day names in time.Weekday order, from
	// Sunday.
	dayNames = "sunmontuewedthufrisat"
	// dayList is the day names for people, in the order String writes them.
	dayList = "mon, tue, wed, thu, fri, sat or sun"
	// everyDay is Window.days with every weekday set.
	everyDay = 1<<7 - 1

	// lookBack is how many local dates before t's own may hold a window
	// that contains t. A window lasts at most 24 hours, so one that starts
	// on the date before t's usually suffices, but when that date is short
	// (a spring-forward day of 23 hours, or a day a zone skipped entirely) a
	// window that starts late on the date before it can still reach t's.
	lookBack = 2
	// lookAhead is how many local dates after t's Next searches for the
	// next window: a week and one day, so that a window every week is
	// found even when t is past that week's window on the same weekday,
	// and a start moved to the next date by a skipped day is too.
	lookAhead = 8
)

// FieldError is one problem with one field of a window; Field is the path
// in the API ("properties.maintenance_window.days[1]").
type FieldError = fielderr.FieldError

// FieldErrors is every problem Parse found with a window, in field order
// (time_zone, days, start, duration, then unknown fields by name). errors.As
// finds the list, or its first *FieldError.
type FieldErrors = fielderr.FieldErrors

// add records a problem with a field of the window property.
func add(errs *FieldErrors, field, reason string) {
	errs.Add(fieldPrefix+field, reason)
}

// Window is a cluster's maintenance window: the times, repeating every week,
// at which the cluster may be upgraded. Get one from Parse or
// FromProperties; the zero Window contains no time at all.
type Window struct {
	loc *time.Location
	// days has bit d set when a window starts on time.Weekday(d).
	days uint8
	// start is the local start time, in minutes after midnight.
	start int
	// duration is how long each window lasts, in real time.
	duration time.Duration
}

// FromProperties returns the window in a cluster's properties, or nil when
// the properties have no Property (or it is null). Errors are Parse's.
func FromProperties(props map[string]any) (*Window, error) {
	v := props[Property]
	if v == nil {
		return nil, nil
	}
	w, err := Parse(v)
	if err != nil {
		return nil, err
	}
	return &w, nil
}

// Parse reads a window from the value of the cluster property Property, as
// decoded from JSON into an any: a map[string]any whose values are strings,
// and a []any (or []string) of strings for days. A field that is null counts
// as absent. Unknown fields and values of the wrong type are errors.
//
// Errors are FieldErrors.
func Parse(v any) (Window, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Window{}, FieldErrors{{Field: fieldPrefix, Reason: `must be an object such as {"time_zone": "Europe/Berlin", "days": ["sat", "sun"], "start": "02:00", "duration": "4h"}`}}
	}
	var (
		w    Window
		errs FieldErrors
	)
	w.loc = parseZone(obj["time_zone"], &errs)
	w.days = parseDays(obj["days"], &errs)
	w.start = parseStart(obj["start"], &errs)
	w.duration = parseDuration(obj["duration"], &errs)
	var unknown []string
	for k := range obj {
		switch k {
		case "time_zone", "days", "start", "duration":
		default:
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		add(&errs, "."+k, "unknown field: want time_zone, days, start and duration")
	}
	if len(errs) > 0 {
		return Window{}, errs
	}
	return w, nil
}

func parseZone(v any, errs *FieldErrors) *time.Location {
	const field = ".time_zone"
	s, ok := v.(string)
	switch {
	case v == nil || ok && s == "":
		add(errs, field, `required: an IANA time zone name such as "Europe/Berlin"`)
		return nil
	case !ok:
		add(errs, field, `must be a string: an IANA time zone name such as "Europe/Berlin"`)
		return nil
	case s == "Local":
		// LoadLocation's name for the machine's own zone, which differs
		// from one control plane replica to the next.
		add(errs, field, `must be an IANA time zone name such as "Europe/Berlin", not "Local"`)
		return nil
	}
	loc, err := time.LoadLocation(s)
	if err != nil {
		add(errs, field, fmt.Sprintf(`unknown time zone %q: want an IANA name such as "Europe/Berlin"`, s))
		return nil
	}
	return loc
}

func parseDays(v any, errs *FieldErrors) uint8 {
	const field = ".days"
	var items []any
	switch list := v.(type) {
	case nil:
	case []any:
		items = list
	case []string:
		for _, s := range list {
			items = append(items, s)
		}
	default:
		add(errs, field, `must be a list of day names such as ["sat", "sun"]`)
		return 0
	}
	if len(items) == 0 {
		return everyDay
	}
	var days uint8
	seen := make(map[time.Weekday]int, len(items))
	for i, item := range items {
		s, _ := item.(string)
		d, ok := weekday(s)
		switch {
		case !ok:
			reason := "must be a day name: " + dayList
			if _, isString := item.(string); isString {
				reason = fmt.Sprintf("unknown day %q: want %s", s, dayList)
			}
			add(errs, fmt.Sprintf("%s[%d]", field, i), reason)
		case days&(1<<d) != 0:
			add(errs, fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%q repeats days[%d]", s, seen[d]))
		default:
			days |= 1 << d
			seen[d] = i
		}
	}
	return days
}

// weekday returns the weekday of a three-letter lower-case day name.
func weekday(name string) (time.Weekday, bool) {
	for d := time.Sunday; d <= time.Saturday; d++ {
		if dayName(d) == name {
			return d, true
		}
	}
	return 0, false
}

func dayName(d time.Weekday) string { return dayNames[3*d : 3*d+3] }

func parseStart(v any, errs *FieldErrors) int {
	const field = ".start"
	s, ok := v.(string)
	switch {
	case v == nil:
		add(errs, field, `required: a local time "HH:MM" such as "02:00"`)
		return 0
	case !ok:
		add(errs, field, `must be a string: a local time "HH:MM" such as "02:00"`)
		return 0
	}
	h, okH := twoDigits(s, 0)
	m, okM := twoDigits(s, 3)
	if len(s) != 5 || s[2] != ':' || !okH || !okM || h > 23 || m > 59 {
		add(errs, field, fmt.Sprintf(`got %q: want a 24-hour local time "HH:MM" from "00:00" to "23:59"`, s))
		return 0
	}
	return 60*h + m
}

// twoDigits returns the number written by the two decimal digits at s[i:].
func twoDigits(s string, i int) (int, bool) {
	if len(s) < i+2 || s[i] < '0' || s[i] > '9' || s[i+1] < '0' || s[i+1] > '9' {
		return 0, false
	}
	return int(s[i]-'0')*10 + int(s[i+1]-'0'), true
}

func parseDuration(v any, errs *FieldErrors) time.Duration {
	const field = ".duration"
	s, ok := v.(string)
	switch {
	case v == nil:
		add(errs, field, `required: a duration such as "4h" or "90m"`)
		return 0
	case !ok:
		add(errs, field, `must be a string: a duration such as "4h" or "90m"`)
		return 0
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		add(errs, field, fmt.Sprintf(`got %q: want a duration such as "4h" or "90m"`, s))
		return 0
	case d < MinDuration || d > MaxDuration:
		add(errs, field, fmt.Sprintf("got %v: must be between %v and %v", d, MinDuration, MaxDuration))
		return 0
	}
	return d
}

// Contains reports whether t is in one of the windows: at or after its
// start and before its end.
func (w Window) Contains(t time.Time) bool {
	if w.duration <= 0 {
		return false
	}
	y, m, d := t.In(w.loc).Date()
	for i := -lookBack; i <= 0; i++ {
		if s, ok := w.startOn(y, m, d+i); ok && !t.Before(s) && t.Before(s.Add(w.duration)) {
			return true
		}
	}
	return false
}

// Next returns the start and end of the window that contains t or, when
// none does, of the first window to start after t, in the window's time
// zone. The end is the start plus the duration, and is not in the window.
// When two windows contain t (see the package doc), Next returns the one
// that started last. The zero Window has no windows: Next returns zero
// times.
func (w Window) Next(t time.Time) (start, end time.Time) {
	if w.duration <= 0 {
		return time.Time{}, time.Time{}
	}
	y, m, d := t.In(w.loc).Date()
	var in, next time.Time
	for i := -lookBack; i <= lookAhead; i++ {
		s, ok := w.startOn(y, m, d+i)
		if !ok || !t.Before(s.Add(w.duration)) {
			continue
		}
		if !s.After(t) {
			if in.IsZero() || s.After(in) {
				in = s
			}
		} else if next.IsZero() || s.Before(next) {
			next = s
		}
	}
	if in.IsZero() {
		in = next
	}
	return in, in.Add(w.duration)
}

// startOn returns when the window of local date y-m-d starts (the date is
// normalised as by time.Date), or false when there is no window that day.
func (w Window) startOn(y int, m time.Month, d int) (time.Time, bool) {
	date := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	if w.days&(1<<date.Weekday()) == 0 {
		return time.Time{}, false
	}
	y, m, d = date.Date()
	want := date.Unix() + 60*int64(w.start)
	t := time.Date(y, m, d, w.start/60, w.start%60, 0, 0, w.loc)
	got := wall(t)
	switch {
	case got < want:
		// In a gap, and time.Date resolved the wall time before it: the
		// window starts where the gap ends.
		if _, end := t.ZoneBounds(); !end.IsZero() {
			return end, true
		}
	case got > want:
		// In a gap, and time.Date resolved the wall time after it: the
		// window starts where the gap ends, which is where t's zone
		// period began.
		if begin, _ := t.ZoneBounds(); !begin.IsZero() {
			return begin, true
		}
	default:
		// The wall time may also occur earlier, before a fall-back change
		// that began t's zone period: the window starts at the first.
		begin, _ := t.ZoneBounds()
		if begin.IsZero() {
			break
		}
		_, before := begin.Add(-time.Nanosecond).Zone()
		_, offset := t.Zone()
		if before > offset {
			if first := t.Add(-time.Duration(before-offset) * time.Second); wall(first) == want {
				return first, true
			}
		}
	}
	return t, true
}

// wall returns t's local wall-clock time as seconds since 1970-01-01 00:00
// local time, so that wall times compare across dates.
func wall(t time.Time) int64 {
	_, offset := t.Zone()
	return t.Unix() + int64(offset)
}

// String returns the window as e.g. "sat,sun 02:00 for 4h0m0s
// Europe/Berlin", or "daily 02:00 for 4h0m0s Europe/Berlin" when it starts
// every day. Days are in order from Monday, whatever their order in the
// property. The zero Window is "no window".
func (w Window) String() string {
	if w.duration <= 0 {
		return "no window"
	}
	days := "daily"
	if w.days != everyDay {
		var names []string
		for i := range 7 {
			if d := time.Weekday((i + 1) % 7); w.days&(1<<d) != 0 {
				names = append(names, dayName(d))
			}
		}
		days = strings.Join(names, ",")
	}
	return fmt.Sprintf("%s %02d:%02d for %v %v", days, w.start/60, w.start%60, w.duration, w.loc)
}
