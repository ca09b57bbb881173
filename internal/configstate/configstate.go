// Package configstate defines the state hash that the control plane signs
// and agents recompute: a digest of every config document a data plane's
// agents hold, so an agent can prove after each delta that its state is
// exactly the one the control plane meant. Both sides import it; it has no
// I/O.
package configstate

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
)

// Entry is one document as the state hash sees it.
type Entry struct {
	// Key is the document's natural key, see Key.
	Key     string
	Version int64
	// MediaType and Content are the document's content.
	MediaType string
	Content   []byte
}

// Key is the natural key of a document: scope type, scope id, kind and
// name, joined by "/". Kinds may contain "/", so the kind is last but
// one and the name (a DNS label, no "/") last.
func Key(scopeType, scopeID, kind, name string) string {
	return scopeType + "/" + scopeID + "/" + kind + "/" + name
}

// EmptyHash is the hash of a state without documents.
var EmptyHash = Hash(nil)

// Hash returns the hex SHA-256 state hash of entries in any order: the
// digest of "key\nversion\nmedia type\nsha256(content)\n" per entry,
// sorted by key.
func Hash(entries []Entry) string {
	lines := make([]string, len(entries))
	for i, e := range entries {
		sum := sha256.Sum256(e.Content)
		lines[i] = e.Key + "\n" + strconv.FormatInt(e.Version, 10) + "\n" + e.MediaType + "\n" + hex.EncodeToString(sum[:]) + "\n"
	}
	slices.Sort(lines)
	h := sha256.Sum256([]byte(strings.Join(lines, "")))
	return hex.EncodeToString(h[:])
}
