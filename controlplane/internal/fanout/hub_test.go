package fanout_test

import (
	"context"
	"testing"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/storetest"
)

// TestHubAcrossReplicas: a change committed through one store handle (one
// replica) wakes subscribers of a hub polling through another.
func TestHubAcrossReplicas(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			url := b.URL(t)
			f := setup(t, url, 0)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			other, err := store.Open(ctx, store.Config{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			hub, err := fanout.NewHub(other, 20*time.Millisecond, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- hub.Run(ctx) }()
			woken, quietWoken := make(chan struct{}, 1), make(chan struct{}, 1)
			wake := func(c chan struct{}) func() {
				return func() {
					select {
					case c <- struct{}{}:
					default:
					}
				}
			}
			sub := hub.Subscribe(f.dp.ID, wake(woken))
			defer sub.Close()
			quiet := hub.Subscribe("00000000-0000-0000-0000-000000000000", wake(quietWoken))
			defer quiet.Close()
			f.put(t, "a", "1")
			select {
			case <-woken:
			case <-time.After(30 * time.Second):
				t.Fatal("no notification 30s after a commit on another replica")
			}
			select {
			case <-quietWoken:
				t.Fatal("a subscriber of another data plane was woken")
			default:
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}
