package report

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// pollStep is one poll of TestStatusPacer: the clock is moved, the status
// set, and the poll made.
type pollStep struct {
	// after moves the clock on by this much; with toDeadline, to the
	// pending progress's deadline (the first one the test saw) plus after,
	// so after -1 is the nanosecond before it.
	after      time.Duration
	toDeadline bool
	rev        int64  // the status's applied revision (and state hash "h<rev>")
	lastError  string // the status's last error: a change that is not progress
	want       int64  // the revision of the status this poll queues; -1 for none
}

func TestStatusPacer(t *testing.T) {
	const delay = 10 * time.Second
	for _, tc := range []struct {
		name          string
		progressDelay time.Duration // 0: delay
		statusEvery   time.Duration // 0: an hour
		steps         []pollStep
	}{
		{"the first status at once", 0, 0, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 1, want: -1},
		}},
		{"progress waits for its delay", 0, 0, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 2, want: -1},
			{toDeadline: true, after: -1, rev: 2, want: -1},
			{toDeadline: true, rev: 2, want: 2},
			{after: time.Second, rev: 2, want: -1},
		}},
		{"progress in the window coalesces into one report of the newest", 0, 0, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 2, want: -1},
			{after: time.Second, rev: 3, want: -1},
			{toDeadline: true, after: -1, rev: 4, want: -1},
			{toDeadline: true, rev: 4, want: 4},
			{toDeadline: true, after: time.Second, rev: 4, want: -1},
		}},
		{"a health change goes at once with the newest revision and takes the progress along", 0, 0, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 2, want: -1},
			{after: time.Nanosecond, rev: 3, lastError: "render: permission denied", want: 3},
			{toDeadline: true, rev: 3, lastError: "render: permission denied", want: -1},
			{toDeadline: true, after: delay, rev: 3, lastError: "render: permission denied", want: -1},
		}},
		{"a health change alone goes at once", 0, 0, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 1, lastError: "x", want: 1},
			{after: time.Second, rev: 1, want: 1},
		}},
		{"negative ProgressDelay: progress at once", -1, 0, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 2, want: 2},
			{after: time.Second, rev: 3, want: 3},
			{after: time.Second, rev: 3, want: -1},
		}},
		{"the StatusEvery resend carries pending progress", time.Hour, time.Minute, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 2, want: -1},
			{after: 72 * time.Second, rev: 2, want: 2}, // StatusEvery + 20%
			{after: time.Second, rev: 2, want: -1},
		}},
		{"progress undone before its deadline is not sent", 0, 0, []pollStep{
			{rev: 1, want: 1},
			{after: time.Second, rev: 2, want: -1},
			{after: time.Second, rev: 1, want: -1},
			{toDeadline: true, rev: 1, want: -1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
			start := now
			cur := &agentv1.AgentStatus{AgentVersion: "v1", Checks: []*agentv1.Check{{Name: "config_stream", Healthy: true}}}
			every := tc.statusEvery
			if every == 0 {
				every = time.Hour
			}
			pd := tc.progressDelay
			if pd == 0 {
				pd = delay
			}
			r := newReporter(t, Config{
				Status:        func() *agentv1.AgentStatus { return proto.CloneOf(cur) },
				Now:           func() time.Time { return now },
				StatusEvery:   every,
				ProgressDelay: pd,
			})
			// The latest deadline the draw allows, which the steps'
			// one-second moves are written for; TestStatusPacerDraw
			// covers the real draw.
			p := &statusPacer{every: r.cfg.StatusEvery, delay: r.cfg.ProgressDelay,
				draw: func(n int64) int64 { return n - 1 }}
			var deadline time.Time // of the first pending progress seen
			queued := 0
			for i, s := range tc.steps {
				if s.toDeadline {
					if deadline.IsZero() {
						t.Fatalf("step %d: no progress was pending", i)
					}
					now = deadline.Add(s.after)
				} else {
					now = now.Add(s.after)
				}
				cur.AppliedRevision, cur.StateHash, cur.LastError = s.rev, fmt.Sprintf("h%d", s.rev), s.lastError
				if err := r.pollStatus(p); err != nil {
					t.Fatal(err)
				}
				if deadline.IsZero() && !p.progress.IsZero() {
					deadline = p.progress
					if want := now.Add(pd); !deadline.Equal(want) {
						t.Fatalf("step %d: progress seen at %v is due at %v; want %v", i, now.Sub(start), deadline.Sub(start), want.Sub(start))
					}
				}
				got := queuedStatuses(t, r)
				switch {
				case s.want < 0 && len(got) != queued:
					t.Fatalf("step %d at %v: queued %v; want nothing new after %d", i, now.Sub(start), got[queued:], queued)
				case s.want >= 0 && (len(got) != queued+1 || got[queued].AppliedRevision != s.want || got[queued].StateHash != fmt.Sprintf("h%d", s.want)):
					t.Fatalf("step %d at %v: queued %v; want one status at revision %d", i, now.Sub(start), got[queued:], s.want)
				}
				queued = len(got)
			}
		})
	}
}

// TestStatusPacerDraw checks the pacer's own random draw: pending
// progress is due within (0, delay] of when it was first seen, and not
// always at the same moment (agents that applied a change together must
// spread their reports).
func TestStatusPacerDraw(t *testing.T) {
	const delay = 10 * time.Second
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	last := &agentv1.AgentStatus{AppliedRevision: 1, StateHash: "h1"}
	next := &agentv1.AgentStatus{AppliedRevision: 2, StateHash: "h2"}
	seen := map[time.Time]bool{}
	for range 1000 {
		p := &statusPacer{every: time.Hour, delay: delay}
		p.queued(last, now)
		if p.due(next, now) {
			t.Fatal("progress due at once")
		}
		if !p.progress.After(now) || p.progress.After(now.Add(delay)) {
			t.Fatalf("progress due %v after it was seen; want within (0, %v]", p.progress.Sub(now), delay)
		}
		seen[p.progress] = true
	}
	if len(seen) < 2 {
		t.Fatalf("1,000 draws gave %d deadline(s); want them spread", len(seen))
	}
}

// queuedStatuses is the statuses in r's queue, oldest first.
func queuedStatuses(t *testing.T, r *Reporter) []*agentv1.AgentStatus {
	t.Helper()
	batch, err := r.cfg.Queue.Peek(1000, 1<<30, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var out []*agentv1.AgentStatus
	for _, rep := range batch {
		if st := rep.GetStatus(); st != nil {
			out = append(out, st)
		}
	}
	return out
}

func TestCompareStatus(t *testing.T) {
	base := func() *agentv1.AgentStatus {
		return &agentv1.AgentStatus{AppliedRevision: 5, StateHash: "h5", AgentVersion: "v1", HostVersion: "linux", DroppedReports: 2,
			Checks:   []*agentv1.Check{{Name: "config_stream", Healthy: true, Detail: "connected"}},
			Clusters: []*agentv1.ClusterVersion{{ClusterId: "c1", Version: "1.2.0", Healthy: true, DesiredVersion: "1.2.0"}}}
	}
	for _, tc := range []struct {
		name   string
		change func(*agentv1.AgentStatus)
		want   statusChange
	}{
		{"nothing", func(*agentv1.AgentStatus) {}, statusSame},
		{"dropped reports only", func(s *agentv1.AgentStatus) { s.DroppedReports = 9 }, statusSame},
		{"applied revision", func(s *agentv1.AgentStatus) { s.AppliedRevision = 6 }, statusProgress},
		{"state hash", func(s *agentv1.AgentStatus) { s.StateHash = "h6" }, statusProgress},
		{"revision, hash and dropped reports", func(s *agentv1.AgentStatus) { s.AppliedRevision, s.StateHash, s.DroppedReports = 6, "h6", 3 }, statusProgress},
		{"a check", func(s *agentv1.AgentStatus) { s.Checks[0].Healthy = false }, statusChanged},
		{"a check more", func(s *agentv1.AgentStatus) { s.Checks = append(s.Checks, &agentv1.Check{Name: "svid"}) }, statusChanged},
		{"revision and a check", func(s *agentv1.AgentStatus) { s.AppliedRevision, s.Checks[0].Detail = 6, "disconnected" }, statusChanged},
		{"last error", func(s *agentv1.AgentStatus) { s.LastError = "refused revision 6" }, statusChanged},
		{"stale", func(s *agentv1.AgentStatus) { s.Stale = true }, statusChanged},
		{"a cluster's version", func(s *agentv1.AgentStatus) { s.Clusters[0].Version = "1.3.0" }, statusChanged},
		{"no clusters", func(s *agentv1.AgentStatus) { s.Clusters = nil }, statusChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, last := base(), base()
			tc.change(st)
			before := proto.CloneOf(st)
			if got := compareStatus(st, last); got != tc.want {
				t.Errorf("got %v; want %v", got, tc.want)
			}
			if !proto.Equal(st, before) || !proto.Equal(last, base()) {
				t.Errorf("compareStatus changed its arguments")
			}
		})
	}
}

// TestCompareStatusSeesEveryField changes each field of a status, and of
// its checks and clusters, in turn: compareStatus must call every change
// but those of the applied revision and state hash (progress) and of the
// dropped-reports count (nothing) a change. A field added to the messages
// fails here until compareStatus compares it.
func TestCompareStatusSeesEveryField(t *testing.T) {
	progress := map[protoreflect.Name]bool{"applied_revision": true, "state_hash": true}
	ignored := map[protoreflect.Name]bool{"dropped_reports": true}
	full := &agentv1.AgentStatus{Checks: []*agentv1.Check{{}}, Clusters: []*agentv1.ClusterVersion{{}}}
	var mutate func(t *testing.T, m protoreflect.Message, fd protoreflect.FieldDescriptor)
	// mutate changes field fd of m to another value.
	mutate = func(t *testing.T, m protoreflect.Message, fd protoreflect.FieldDescriptor) {
		t.Helper()
		if fd.IsList() || fd.IsMap() || fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
			t.Fatalf("field %s: kind %v unknown to this test; teach it and compareStatus", fd.FullName(), fd.Kind())
		}
		v := m.Get(fd)
		switch fd.Kind() {
		case protoreflect.BoolKind:
			v = protoreflect.ValueOfBool(!v.Bool())
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			v = protoreflect.ValueOfInt32(int32(v.Int()) + 1)
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			v = protoreflect.ValueOfInt64(v.Int() + 1)
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			v = protoreflect.ValueOfUint32(uint32(v.Uint()) + 1)
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			v = protoreflect.ValueOfUint64(v.Uint() + 1)
		case protoreflect.FloatKind:
			v = protoreflect.ValueOfFloat32(float32(v.Float()) + 1)
		case protoreflect.DoubleKind:
			v = protoreflect.ValueOfFloat64(v.Float() + 1)
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString(v.String() + "x")
		case protoreflect.BytesKind:
			v = protoreflect.ValueOfBytes(append(v.Bytes(), 'x'))
		case protoreflect.EnumKind:
			v = protoreflect.ValueOfEnum(v.Enum() + 1)
		default:
			t.Fatalf("field %s: kind %v unknown to this test; teach it and compareStatus", fd.FullName(), fd.Kind())
		}
		m.Set(fd, v)
	}
	fields := full.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		t.Run(string(fd.Name()), func(t *testing.T) {
			if fd.IsList() && fd.Kind() == protoreflect.MessageKind {
				// Each field of the list's element, and the list's length.
				elems := fd.Message().Fields()
				for j := range elems.Len() {
					st := proto.CloneOf(full)
					mutate(t, st.ProtoReflect().Get(fd).List().Get(0).Message(), elems.Get(j))
					if got := compareStatus(st, full); got != statusChanged {
						t.Errorf("%s changed: got %v; want statusChanged", elems.Get(j).FullName(), got)
					}
				}
				st := proto.CloneOf(full)
				l := st.ProtoReflect().Mutable(fd).List()
				l.Append(l.NewElement())
				if got := compareStatus(st, full); got != statusChanged {
					t.Errorf("%s grew: got %v; want statusChanged", fd.Name(), got)
				}
				return
			}
			st := proto.CloneOf(full)
			mutate(t, st.ProtoReflect(), fd)
			want := statusChanged
			switch {
			case progress[fd.Name()]:
				want = statusProgress
			case ignored[fd.Name()]:
				want = statusSame
			}
			if got := compareStatus(st, full); got != want {
				t.Errorf("got %v; want %v", got, want)
			}
		})
	}
}

func (c statusChange) String() string {
	return [...]string{"statusSame", "statusProgress", "statusChanged"}[c]
}

func TestCleanText(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
		asIs     bool // returned as it is: the same string, no allocation
	}{
		{"empty", "", 10, "", true},
		{"ascii", "refused revision 7: bad signature", 1024, "refused revision 7: bad signature", true},
		{"newline and tab kept", "a\n\tb", 10, "a\n\tb", true},
		{"multibyte", "café ✓", 1024, "café ✓", true},
		{"a replacement character in the text", "bad \uFFFD byte", 1024, "bad \uFFFD byte", true},
		{"exactly max", "abcd", 4, "abcd", true},
		{"invalid utf-8", "caf\xe9.conf", 1024, "caf\uFFFD.conf", false},
		{"nul and escape dropped", "a\x00b\x1bc\x7fd", 1024, "abcd", false},
		{"C1 control dropped", "a\u0085b", 1024, "ab", false},
		{"cut to max", "abcdef", 4, "abcd", false},
		{"cut at a character boundary", "ab✓", 4, "ab", false},
		{"cleaned then cut", "\x00\x00abc✓", 5, "abc", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cleanText(tc.in, tc.max)
			if got != tc.want {
				t.Fatalf("cleanText(%q, %d) = %q; want %q", tc.in, tc.max, got, tc.want)
			}
			if !tc.asIs {
				return
			}
			if len(tc.in) > 0 && unsafe.StringData(got) != unsafe.StringData(tc.in) {
				t.Errorf("cleanText(%q) returned a copy; want the input itself", tc.in)
			}
			if n := testing.AllocsPerRun(100, func() { cleanText(tc.in, tc.max) }); n != 0 {
				t.Errorf("cleanText(%q) allocated %v times; want 0", tc.in, n)
			}
		})
	}
	long := strings.Repeat("x", maxStatusText+10)
	if got := cleanText(long, maxStatusText); len(got) != maxStatusText {
		t.Errorf("a long text cut to %d bytes; want %d", len(got), maxStatusText)
	}
}

// benchStatus is a status as the daemon makes it for a connected, fresh
// agent that renders files: a new message on every call.
func benchStatus() *agentv1.AgentStatus {
	return &agentv1.AgentStatus{
		AppliedRevision: 4711, StateHash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		AgentVersion: "v1.4.2", HostVersion: "linux/amd64 6.1.0-18-amd64",
		Checks: []*agentv1.Check{
			{Name: "config_stream", Healthy: true, Detail: "connected"},
			{Name: "config_fresh", Healthy: true},
			{Name: "svid", Healthy: true, Detail: "expires 2026-11-22T10:00:00Z"},
			{Name: "render", Healthy: true},
		},
	}
}

// BenchmarkStatusPoll is one poll of an unchanged status: Config.Status
// (benchStatus: its allocations are the caller's), made fit to send and
// compared with the last status queued.
func BenchmarkStatusPoll(b *testing.B) {
	q, err := OpenQueue(filepath.Join(b.TempDir(), "reports.db"), 1000)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close() })
	r, err := New(Config{Queue: q, Status: benchStatus})
	if err != nil {
		b.Fatal(err)
	}
	last := r.status()
	b.ReportAllocs()
	for b.Loop() {
		if compareStatus(r.status(), last) != statusSame {
			b.Fatal("status changed")
		}
	}
}
