// Package etcdpeer is the etcd side of the peer benchmark: an embedded etcd
// server (run inside a serverproc child) and clients that each hold their
// own connection and one watch on a key prefix, the way each Cairn agent
// holds its own mTLS stream.
//
// It measures etcd as shipped: fsync on, default limits, default client
// reconnect backoff. It must not tune etcd for this benchmark beyond
// quieting its logs.
package etcdpeer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cairnhq/cairn/bench/internal/pki"
	"github.com/cairnhq/cairn/bench/internal/serverproc"
	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Version returns the etcd release linked into the benchmark.
func Version() string { return version.Version }

// Prefix is the key prefix every watcher watches; Key is the one key the
// writer changes.
const (
	Prefix = "/cairn/bench/"
	Key    = Prefix + "config"
)

const (
	startTimeout = 90 * time.Second
	dialTimeout  = 30 * time.Second
)

// Start runs an embedded etcd server with its data in cfg.Dir. It has the
// serverproc.StartFunc signature.
func Start(ctx context.Context, cfg serverproc.ServeConfig) (io.Closer, error) {
	ec := embed.NewConfig()
	ec.Name = "peerbench"
	ec.Dir = cfg.Dir
	ec.Logger = "zap"
	ec.LogLevel = "error"
	ec.LogOutputs = []string{"stderr"}

	scheme := "http"
	if cfg.TLSDir != "" {
		scheme = "https"
		ec.ClientTLSInfo.CertFile = filepath.Join(cfg.TLSDir, pki.CertFile)
		ec.ClientTLSInfo.KeyFile = filepath.Join(cfg.TLSDir, pki.KeyFile)
		ec.ClientTLSInfo.TrustedCAFile = filepath.Join(cfg.TLSDir, pki.CAFile)
		ec.ClientTLSInfo.ClientCertAuth = true
	}
	client := url.URL{Scheme: scheme, Host: hostPort(cfg.Port)}
	peer := url.URL{Scheme: "http", Host: hostPort(cfg.PeerPort)}
	ec.ListenClientUrls = []url.URL{client}
	ec.AdvertiseClientUrls = []url.URL{client}
	ec.ListenPeerUrls = []url.URL{peer}
	ec.AdvertisePeerUrls = []url.URL{peer}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return closer(e.Close), nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd failed while starting: %w", err)
	case <-time.After(startTimeout):
		e.Close()
		return nil, fmt.Errorf("etcd not ready after %v", startTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
}

type closer func()

func (c closer) Close() error { c(); return nil }

// ClientConfig says how to reach the server.
type ClientConfig struct {
	// Endpoint is host:port; required.
	Endpoint string
	// CA, when set, means mutual TLS: each connection gets its own client
	// certificate from CA. Nil means plain TCP.
	CA *pki.CA
}

// Client is the benchmark's writer plus a factory for watchers.
type Client struct {
	cfg    ClientConfig
	writer *clientv3.Client
	log    *zap.Logger
}

// Dial connects the writer.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("etcdpeer: no endpoint")
	}
	c := &Client{cfg: cfg, log: zap.NewNop()}
	w, err := c.newClient("writer")
	if err != nil {
		return nil, err
	}
	c.writer = w
	return c, nil
}

func (c *Client) newClient(name string) (*clientv3.Client, error) {
	scheme := "http://"
	var tlsCfg *tls.Config
	if c.cfg.CA != nil {
		var err error
		if tlsCfg, err = c.cfg.CA.ClientConfig(name); err != nil {
			return nil, err
		}
		scheme = "https://"
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{scheme + c.cfg.Endpoint},
		DialTimeout: dialTimeout,
		TLS:         tlsCfg,
		Logger:      c.log,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client %s: %w", name, err)
	}
	return cli, nil
}

// Put writes value to Key and returns once etcd has committed it.
func (c *Client) Put(ctx context.Context, value string) error {
	_, err := c.writer.Put(ctx, Key, value)
	return err
}

// Watch opens a new connection and a watch on Prefix starting at the
// current revision, and returns once etcd has confirmed the watch. deliver
// is called from the watcher's goroutine with each new value, including
// after the client has reconnected on its own.
func (c *Client) Watch(ctx context.Context, id int, deliver func(id int, value []byte)) (io.Closer, error) {
	cli, err := c.newClient("watcher-" + strconv.Itoa(id))
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	ch := cli.Watch(wctx, Prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	w := &watcher{cli: cli, cancel: cancel}

	select {
	case resp, ok := <-ch:
		if !ok || !resp.Created {
			w.Close()
			if err := resp.Err(); err != nil {
				return nil, fmt.Errorf("watch %d: %w", id, err)
			}
			return nil, fmt.Errorf("watch %d: channel closed before the watch was created", id)
		}
	case <-ctx.Done():
		w.Close()
		return nil, ctx.Err()
	}

	go func() {
		for resp := range ch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut {
					deliver(id, ev.Kv.Value)
				}
			}
		}
	}()
	return w, nil
}

type watcher struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
}

func (w *watcher) Close() error {
	w.cancel()
	return w.cli.Close()
}

// Close closes the writer.
func (c *Client) Close() error { return c.writer.Close() }

func hostPort(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
