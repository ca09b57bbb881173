// Package natspeer is the NATS side of the peer benchmark: an embedded
// nats-server with JetStream (run inside a serverproc child) and clients
// that each hold their own connection and one KV watch on the bucket.
//
// A KV watch is an ordered push consumer on the bucket's stream: one
// JetStream consumer per watcher on the server, with idle heartbeats, and
// the client recreates it from the last sequence it saw when it detects a
// gap or lost heartbeats. The package measures NATS as shipped (default
// file-store sync interval, default reconnect wait) except for one limit:
// the server's default cap of 1,000 consumers per stream, which would stop
// the benchmark at 1,000 watchers. It must not tune NATS beyond that.
package natspeer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/bench/internal/pki"
	"github.com/cairnhq/cairn/bench/internal/serverproc"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Version is the nats-server release linked into the benchmark.
const Version = server.VERSION

// Key is the one key the writer changes.
const Key = "config"

const startTimeout = 90 * time.Second

// Start runs an embedded nats-server with JetStream storing in cfg.Dir. It
// has the serverproc.StartFunc signature.
func Start(ctx context.Context, cfg serverproc.ServeConfig) (io.Closer, error) {
	opts := &server.Options{
		ServerName: "peerbench",
		Host:       "127.0.0.1",
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		NoSigs:     true,
		NoLog:      true,
		// Every KV watcher is a consumer on the bucket's stream, and the
		// server allows 1,000 consumers per stream unless told otherwise
		// (default_max_consumers); -1 lifts the cap, as a fleet would have to.
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
	}
	if cfg.TLSDir != "" {
		tlsCfg, err := pki.ServerConfig(cfg.TLSDir)
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tlsCfg
		opts.TLS = true
		opts.TLSVerify = true
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(startTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server not ready after %v", startTimeout)
	}
	if err := ctx.Err(); err != nil {
		s.Shutdown()
		return nil, err
	}
	return shutdown{s}, nil
}

type shutdown struct{ s *server.Server }

func (s shutdown) Close() error {
	s.s.Shutdown()
	s.s.WaitForShutdown()
	return nil
}

// ClientConfig says how to reach the server.
type ClientConfig struct {
	// URL is the server, e.g. nats://127.0.0.1:4222; required.
	URL string
	// CA, when set, means mutual TLS: each connection gets its own client
	// certificate from CA. Nil means plain TCP.
	CA *pki.CA
	// Bucket is the KV bucket; required. Dial creates it when missing, in
	// file storage with one replica and history 1.
	Bucket string
}

// Client is the benchmark's writer plus a factory for watchers.
type Client struct {
	cfg ClientConfig
	nc  *nats.Conn
	kv  jetstream.KeyValue
	// errs counts asynchronous errors on any connection this client made
	// (nats.go would print each to stderr); firstErr keeps the first.
	errs     *atomic.Int64
	firstErr *atomic.Value
}

// Dial connects the writer and makes sure the bucket exists.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if cfg.URL == "" || cfg.Bucket == "" {
		return nil, errors.New("natspeer: URL and Bucket are required")
	}
	c := &Client{cfg: cfg, errs: new(atomic.Int64), firstErr: new(atomic.Value)}
	nc, err := c.connect("writer")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  cfg.Bucket,
		History: 1,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
	}
	c.nc, c.kv = nc, kv
	return c, nil
}

func (c *Client) connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("peerbench-" + name),
		// Watchers must outlive a restart however long it takes; the
		// default gives up after 60 attempts.
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.firstErr.CompareAndSwap(nil, err.Error())
			c.errs.Add(1)
		}),
	}
	if c.cfg.CA != nil {
		tlsCfg, err := c.cfg.CA.ClientConfig(name)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tlsCfg))
	}
	nc, err := nats.Connect(c.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", name, err)
	}
	return nc, nil
}

// Put writes value to Key and returns once JetStream has stored it.
func (c *Client) Put(ctx context.Context, value string) error {
	_, err := c.kv.PutString(ctx, Key, value)
	return err
}

// Watch opens a new connection and a watch on every key of the bucket, and
// returns once the watcher has received the bucket's current values (the
// nil marker). deliver is called from the watcher's goroutine with each
// value after that, including after the client has reconnected on its own.
func (c *Client) Watch(ctx context.Context, id int, deliver func(id int, value []byte)) (io.Closer, error) {
	name := "watcher-" + strconv.Itoa(id)
	nc, err := c.connect(name)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream %s: %w", name, err)
	}
	kv, err := js.KeyValue(ctx, c.cfg.Bucket)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bind bucket %s: %w", name, err)
	}
	// The watch's context lives as long as the watcher, not the setup call.
	kw, err := kv.WatchAll(context.Background())
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("watch %s: %w", name, err)
	}
	w := &watcher{nc: nc, kw: kw}
	updates := kw.Updates()
	for initial := true; initial; {
		select {
		case e := <-updates:
			initial = e != nil
		case <-ctx.Done():
			w.Close()
			return nil, ctx.Err()
		}
	}
	go func() {
		for e := range updates {
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				deliver(id, e.Value())
			}
		}
	}()
	return w, nil
}

type watcher struct {
	nc *nats.Conn
	kw jetstream.KeyWatcher
}

func (w *watcher) Close() error {
	err := w.kw.Stop()
	w.nc.Close()
	return err
}

// ServerVersion returns the version the server announced to the writer.
func (c *Client) ServerVersion() string { return c.nc.ConnectedServerVersion() }

// AsyncErrors returns how many asynchronous errors the client's
// connections reported (for example a reconnect attempt that timed out),
// and the first one.
func (c *Client) AsyncErrors() (int64, string) {
	first, _ := c.firstErr.Load().(string)
	return c.errs.Load(), first
}

// DeleteBucket removes the bucket; for runs against a shared server.
func (c *Client) DeleteBucket(ctx context.Context) error {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return err
	}
	return js.DeleteKeyValue(ctx, c.cfg.Bucket)
}

// Close closes the writer's connection.
func (c *Client) Close() error {
	c.nc.Close()
	return nil
}
