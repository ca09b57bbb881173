// Package h2frames records the HTTP/2 frames gRPC connections read, for
// tests of what a peer sends: the agent API keeps grpc-go's flow-control
// PINGs off its connections, and tests on both sides check it with
// Creds. It is test support; no binary links it.
package h2frames

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"
)

// Recorder keeps every byte its connections read after the TLS handshake.
// Safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	conns []*bytes.Buffer
}

// Creds wraps inner so that the connections it hands gRPC are recorded
// by r: what a server reads is what its clients sent, and what a client
// reads is what its server sent.
func (r *Recorder) Creds(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return creds{TransportCredentials: inner, r: r}
}

// Pings counts the PING frames (not acknowledgements) the recorded
// connections read: on a server, the ones its clients sent.
func (r *Recorder) Pings() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.conns {
		data := b.Bytes()
		data = bytes.TrimPrefix(data, []byte(http2.ClientPreface))
		fr := http2.NewFramer(io.Discard, bytes.NewReader(data))
		for {
			f, err := fr.ReadFrame()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break // the end of what was read, perhaps within a frame
			}
			if err != nil {
				return n, err
			}
			if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
				n++
			}
		}
	}
	return n, nil
}

func (r *Recorder) wrap(c net.Conn) net.Conn {
	b := new(bytes.Buffer)
	r.mu.Lock()
	r.conns = append(r.conns, b)
	r.mu.Unlock()
	return &conn{Conn: c, r: r, b: b}
}

type conn struct {
	net.Conn
	r *Recorder
	b *bytes.Buffer
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.r.mu.Lock()
		c.b.Write(p[:n])
		c.r.mu.Unlock()
	}
	return n, err
}

type creds struct {
	credentials.TransportCredentials
	r *Recorder
}

func (c creds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return c.r.wrap(conn), ai, nil
}

func (c creds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return c.r.wrap(conn), ai, nil
}

func (c creds) Clone() credentials.TransportCredentials {
	return creds{TransportCredentials: c.TransportCredentials.Clone(), r: c.r}
}
