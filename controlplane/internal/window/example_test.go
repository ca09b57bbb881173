package window_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/window"
)

func ExampleFromProperties() {
	var props map[string]any
	err := json.Unmarshal([]byte(`{
		"region": "eu-central",
		"maintenance_window": {"time_zone": "Europe/Berlin", "days": ["sat", "sun"], "start": "02:00", "duration": "4h"}
	}`), &props)
	if err != nil {
		fmt.Println(err)
		return
	}
	w, err := window.FromProperties(props)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(w)

	now := time.Date(2026, 6, 5, 12, 0, 0, 0, time.UTC) // a Friday
	start, end := w.Next(now)
	fmt.Println(w.Contains(now), start, end)
	fmt.Println(w.Contains(start.Add(time.Hour)))

	_, err = window.Parse(map[string]any{"time_zone": "Europe/Berlin", "days": []any{"sat", "Sun"}, "start": "2:00", "duration": "4h"})
	fmt.Println(err)
	// Output:
	// sat,sun 02:00 for 4h0m0s Europe/Berlin
	// false 2026-06-06 02:00:00 +0200 CEST 2026-06-06 06:00:00 +0200 CEST
	// true
	// properties.maintenance_window.days[1]: unknown day "Sun": want mon, tue, wed, thu, fri, sat or sun; properties.maintenance_window.start: got "2:00": want a 24-hour local time "HH:MM" from "00:00" to "23:59"
}
