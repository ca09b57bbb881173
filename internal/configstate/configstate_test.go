package configstate

import "testing"

func TestHash(t *testing.T) {
	a := Entry{Key: Key("data_plane", "dp", "cairn.dev/x", "a"), Version: 1, MediaType: "application/json", Content: []byte(`{}`)}
	b := Entry{Key: Key("cluster", "c", "k", "b"), Version: 3, MediaType: "text/plain", Content: []byte("x")}
	base := Hash([]Entry{a, b})
	if got := Hash([]Entry{b, a}); got != base {
		t.Fatalf("order changes the hash: got %s; want %s", got, base)
	}
	for name, e := range map[string]Entry{
		"version":    {Key: a.Key, Version: 2, MediaType: a.MediaType, Content: a.Content},
		"media type": {Key: a.Key, Version: 1, MediaType: "text/plain", Content: a.Content},
		"content":    {Key: a.Key, Version: 1, MediaType: a.MediaType, Content: []byte(`{"x":1}`)},
		"key":        {Key: a.Key + "2", Version: 1, MediaType: a.MediaType, Content: a.Content},
	} {
		if Hash([]Entry{e, b}) == base {
			t.Errorf("changing the %s does not change the hash", name)
		}
	}
	if Hash([]Entry{a}) == base || EmptyHash == Hash([]Entry{a}) || len(EmptyHash) != 64 {
		t.Fatal("hash does not depend on the set of entries")
	}
}
