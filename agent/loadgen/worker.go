package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"sync"
	"time"
)

// The worker protocol: the driver writes one JSON request per line to the
// worker, which answers each with one JSON response line, in order. A
// worker holds at most one Fleet.

type request struct {
	Op string `json:"op"`
	// start
	Fleet *FleetConfig `json:"fleet,omitempty"`
	// arm, wait, stats
	Group    string `json:"group,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	Timeout  int64  `json:"timeout_ns,omitempty"`
	// churn
	On bool `json:"on,omitempty"`
	// profile
	Path string `json:"path,omitempty"`
}

type response struct {
	Error   string  `json:"error,omitempty"`
	Times   []int64 `json:"times,omitempty"`
	Missing int     `json:"missing,omitempty"`
	Stats   *Stats  `json:"stats,omitempty"`
	PID     int     `json:"pid,omitempty"`
}

// Worker operations.
const (
	opStart        = "start"
	opArm          = "arm"
	opWait         = "wait"
	opStats        = "stats"
	opChurn        = "churn"
	opProfileStart = "profile-start"
	opProfileStop  = "profile-stop"
	opStop         = "stop"
)

// ServeWorker answers a driver's requests read from in, writing responses
// to out, until a stop request, the end of in, or ctx ends; it stops its
// fleet before returning. log receives the agents' logs.
func ServeWorker(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	var fleet *Fleet
	var profile *os.File
	defer func() {
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
		}
		if fleet != nil {
			fleet.Close()
		}
	}()
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("loadgen worker: read request: %w", err)
		}
		var resp response
		fail := func(err error) { resp.Error = err.Error() }
		needFleet := func() bool {
			if fleet == nil {
				fail(errors.New("no fleet started"))
			}
			return fleet != nil
		}
		switch req.Op {
		case opStart:
			switch {
			case fleet != nil:
				fail(errors.New("fleet already started"))
			case req.Fleet == nil:
				fail(errors.New("start without a fleet"))
			default:
				cfg := *req.Fleet
				cfg.Logger = log
				f, err := StartFleet(ctx, cfg)
				if err != nil {
					fail(err)
				}
				fleet = f
				resp.PID = os.Getpid()
			}
		case opArm:
			if needFleet() {
				if err := fleet.Arm(req.Group, req.Revision); err != nil {
					fail(err)
				}
			}
		case opWait:
			if needFleet() {
				times, missing, err := fleet.Wait(ctx, req.Group, time.Duration(req.Timeout))
				if err != nil {
					fail(err)
				}
				resp.Times, resp.Missing = times, missing
			}
		case opStats:
			if needFleet() {
				st := fleet.Stats(req.Group)
				resp.Stats = &st
			}
		case opChurn:
			if needFleet() {
				fleet.SetChurn(req.On)
			}
		case opProfileStart:
			if profile != nil {
				fail(errors.New("a profile is already running"))
				break
			}
			f, err := os.Create(req.Path)
			if err == nil {
				if err = pprof.StartCPUProfile(f); err != nil {
					f.Close()
				}
			}
			if err != nil {
				fail(err)
			} else {
				profile = f
			}
		case opProfileStop:
			if profile != nil {
				pprof.StopCPUProfile()
				if err := profile.Close(); err != nil {
					fail(err)
				}
				profile = nil
			}
		case opStop:
			if fleet != nil {
				if err := fleet.Close(); err != nil {
					fail(err)
				}
				fleet = nil
			}
		default:
			fail(fmt.Errorf("unknown op %q", req.Op))
		}
		if err := enc.Encode(&resp); err != nil {
			return fmt.Errorf("loadgen worker: write response: %w", err)
		}
		if req.Op == opStop {
			return nil
		}
	}
}

// Worker is the driver's side of a worker: a Fleet in another process, or
// in this one. Calls are serialized.
type Worker struct {
	mu    sync.Mutex
	enc   *json.Encoder
	dec   *json.Decoder
	close func() error
	pid   int
}

// NewWorker talks to a worker that reads requests from w and writes
// responses to r (its stdin and stdout). closeFn, called by Close after
// the stop request, waits for the worker to end.
func NewWorker(r io.Reader, w io.Writer, closeFn func() error) *Worker {
	return &Worker{enc: json.NewEncoder(w), dec: json.NewDecoder(r), close: closeFn}
}

// InProcess runs a worker in this process, over pipes, with the same
// protocol as a child process.
func InProcess(ctx context.Context, log *slog.Logger) *Worker {
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := ServeWorker(ctx, reqR, respW, log)
		respW.CloseWithError(err)
		reqR.Close()
		done <- err
	}()
	return NewWorker(respR, reqW, func() error {
		reqW.Close()
		return <-done
	})
}

func (w *Worker) call(req request) (response, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.enc.Encode(&req); err != nil {
		return response{}, fmt.Errorf("loadgen worker %s: %w", req.Op, err)
	}
	var resp response
	if err := w.dec.Decode(&resp); err != nil {
		return response{}, fmt.Errorf("loadgen worker %s: %w", req.Op, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("loadgen worker %s: %s", req.Op, resp.Error)
	}
	return resp, nil
}

// Start enrolls and starts the worker's fleet (StartFleet); cfg.Logger is
// ignored, the worker has its own.
func (w *Worker) Start(cfg FleetConfig) error {
	resp, err := w.call(request{Op: opStart, Fleet: &cfg})
	w.pid = resp.PID
	return err
}

// PID is the worker's process id, known after Start.
func (w *Worker) PID() int { return w.pid }

// Arm is Fleet.Arm.
func (w *Worker) Arm(group string, rev int64) error {
	_, err := w.call(request{Op: opArm, Group: group, Revision: rev})
	return err
}

// Wait is Fleet.Wait.
func (w *Worker) Wait(group string, timeout time.Duration) (times []int64, missing int, err error) {
	resp, err := w.call(request{Op: opWait, Group: group, Timeout: int64(timeout)})
	return resp.Times, resp.Missing, err
}

// Stats is Fleet.Stats.
func (w *Worker) Stats(group string) (Stats, error) {
	resp, err := w.call(request{Op: opStats, Group: group})
	if resp.Stats == nil {
		return Stats{}, err
	}
	return *resp.Stats, err
}

// SetChurn is Fleet.SetChurn.
func (w *Worker) SetChurn(on bool) error {
	_, err := w.call(request{Op: opChurn, On: on})
	return err
}

// StartProfile starts a CPU profile of the worker's process into path.
func (w *Worker) StartProfile(path string) error {
	_, err := w.call(request{Op: opProfileStart, Path: path})
	return err
}

// StopProfile ends the CPU profile.
func (w *Worker) StopProfile() error {
	_, err := w.call(request{Op: opProfileStop})
	return err
}

// Close stops the fleet and the worker.
func (w *Worker) Close() error {
	_, err := w.call(request{Op: opStop})
	return errors.Join(err, w.close())
}
