// Package window reads and evaluates per-cluster maintenance windows: the
// times at which the rollout engine may upgrade a cluster. A wave waits for
// each of its clusters' windows; a cluster without a window may be upgraded
// at any time.
//
// A window is the cluster property Property, a JSON object such as
//
//	{"time_zone": "Europe/Berlin", "days": ["sat", "sun"], "start": "02:00", "duration": "4h"}
//
// which reads: every Saturday and Sunday at 02:00 Berlin time, for four
// hours. Parse and FromProperties check it; Contains and Next answer
// whether a time is in a window and when the next one is. Like waves, the
// package does not read a clock: callers pass the time.
//
// # Model
//
//   - Time zone. time_zone is an IANA name ("Europe/Berlin", "UTC"), loaded
//     from the system's zoneinfo or, failing that, the copy embedded with
//     time/tzdata. Days and start are in that zone's local time.
//   - Days. days are the weekdays on which a window starts, "mon" to "sun";
//     empty or absent means every day. A window that starts on a listed day
//     may end on the next one: "sun", "23:00", "3h" contains Monday 01:00.
//   - Start. start is a local wall-clock time "HH:MM", "00:00" to "23:59".
//   - Duration. duration is a Go duration ("4h", "90m") between MinDuration
//     and MaxDuration, of real, elapsed time: a window across a daylight
//     saving change lasts as long as any other, so its local end moves by
//     the change.
//
// # Daylight saving
//
// A start time that a spring-forward change skips (02:30 on the day Berlin
// goes from 02:00 to 03:00) does not happen that day: the window starts at
// the first instant after the gap (03:00) instead, and lasts its duration
// from there. A start time that a fall-back change repeats (02:30 on the day
// Berlin goes from 03:00 back to 02:00) starts the window at its first
// occurrence (02:30 summer time); there is one window that day, not two.
//
// Windows are separate occurrences, one per listed day, and are never
// merged. They do not overlap, except that a window of nearly 24 hours can
// reach into the next day's when a spring-forward change (or a day the zone
// skipped) shortens the time between their starts; Next then returns the
// one that started last, which leaves the most time.
//
// # Errors
//
// Parse reports every problem it finds as FieldErrors, each a *FieldError
// naming the field by its API path ("properties.maintenance_window.days[1]"),
// so the API can return them as InvalidArgument field violations.
package window
