package benchrun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// controlPlane is cairn-controlplane as a child process: started, killed
// and restarted on the same data directory, database and ports, so that
// its memory is its own and a restart drops every agent's stream at once.
type controlPlane struct {
	argv      []string // program and the arguments before the control plane's
	args      []string // the control plane's flags, without admission
	env       []string
	adminAddr string
	// profileAddr, when set, serves the profiling endpoints of
	// ServeControlPlane.
	profileAddr string
	logPath     string

	cmd     *exec.Cmd
	done    chan error
	started time.Time
}

// start starts the control plane with extra flags (the admission limits)
// and waits until /readyz answers.
func (cp *controlPlane) start(ctx context.Context, extra []string, timeout time.Duration) error {
	logf, err := os.OpenFile(cp.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	argv := append(append(append([]string(nil), cp.argv...), cp.args...), extra...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), cp.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start control plane: %w", err)
	}
	logf.Close()
	cp.cmd, cp.done, cp.started = cmd, make(chan error, 1), time.Now()
	go func() { cp.done <- cmd.Wait() }()

	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if resp, err := client.Get("http://" + cp.adminAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-cp.done:
			cp.done <- err
			return fmt.Errorf("control plane exited before it was ready (%v); see %s", err, cp.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("control plane not ready within %v; see %s", timeout, cp.logPath)
		}
	}
}

func (cp *controlPlane) pid() int { return cp.cmd.Process.Pid }

// kill ends the control plane at once (SIGKILL) and waits for it.
func (cp *controlPlane) kill() {
	if cp.cmd == nil {
		return
	}
	_ = cp.cmd.Process.Kill()
	<-cp.done
	cp.cmd = nil
}

// stop asks the control plane to stop (SIGINT) and kills it after grace.
func (cp *controlPlane) stop(grace time.Duration) error {
	if cp.cmd == nil {
		return nil
	}
	_ = cp.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-cp.done:
		cp.cmd = nil
		return err
	case <-time.After(grace):
		cp.kill()
		return fmt.Errorf("control plane did not stop within %v of SIGINT; killed", grace)
	}
}

// metrics reads the admin port's /metrics and sums each metric's samples
// over their labels.
func (cp *controlPlane) metrics(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cp.adminAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read control plane metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read control plane metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format, summing samples by name.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if j := strings.LastIndex(rest, "}"); j >= 0 {
			rest = rest[j+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// profile asks a profiled control plane (ServeControlPlane) to start or
// stop its CPU profile ("cpu-start", "cpu-stop"), or to write a named
// profile ("lookup?name=heap"), into path.
func (cp *controlPlane) profile(ctx context.Context, what, path string) error {
	if cp.profileAddr == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+cp.profileAddr+"/bench/"+what+sep(what)+"path="+url.QueryEscape(path), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("control plane profile %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("control plane profile %s: %s: %s", what, resp.Status, b)
	}
	return nil
}

func sep(what string) string {
	if strings.Contains(what, "?") {
		return "&"
	}
	return "?"
}

// procMemory reads a process's resident set and its high-water mark.
func procMemory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var kb int64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc/<pid>/stat.
const clockTicks = 100

// procCPU reads a process's user plus system CPU time.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(u+st) * time.Second / clockTicks, nil
}

// machineBusy is the CPU time all of the machine's CPUs spent not idle
// (nor waiting for I/O) since boot, from /proc/stat; 0 if unknown.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, f := range fields[1:] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already in user time.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += v
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// logTally counts the control plane's warnings and errors by message, for
// the notes: a figure means little if the control plane was failing. Each
// entry names the first line's error, so a note says what failed.
func logTally(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	type tally struct {
		key   string
		n     int
		first string
	}
	var tallies []*tally
	byKey := map[string]*tally{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || (line.Level != "WARN" && line.Level != "ERROR") ||
			strings.Contains(line.Msg, "plaintext (--insecure)") {
			continue
		}
		key := line.Level + " " + line.Msg
		t := byKey[key]
		if t == nil {
			t = &tally{key: key, first: line.Error}
			byKey[key] = t
			tallies = append(tallies, t)
		}
		t.n++
	}
	sort.SliceStable(tallies, func(i, j int) bool { return tallies[i].n > tallies[j].n })
	var out []string
	for _, t := range tallies {
		s := fmt.Sprintf("%dx %s", t.n, t.key)
		if t.first != "" {
			s += " (first: " + t.first + ")"
		}
		out = append(out, s)
	}
	return out
}
