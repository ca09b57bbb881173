package report

import (
	"path/filepath"
	"testing"
)

// TestOpenQueueLeavesALockedFileAlone: OpenQueue moves aside any
// file it fails to open, not only a corrupt one. A file another process
// holds (bbolt's flock, past the 5 s timeout) is renamed away and a new,
// empty queue with a new id started: the reports queued in it are never
// delivered and never counted as dropped. cache.Open, for the same
// situation, returns an error and leaves the file alone ("Other errors
// (permissions, disk, another process holding the file past a few
// seconds) return a nil cache and leave the file alone").
func TestOpenQueueLeavesALockedFileAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 100)
	appendStatuses(t, q, 3)
	// A second opener while the first still holds the file.
	q2, err := OpenQueue(path, 100)
	if err == nil {
		q2.Close()
		aside, _ := filepath.Glob(path + ".corrupt-*")
		t.Fatalf("OpenQueue of a file held by another opener succeeded with a new queue %s (old %s) and moved the file to %v; "+
			"want an error and the file left alone", q2.ID(), q.ID(), aside)
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("a locked queue file was moved aside: %v", aside)
	}
}
